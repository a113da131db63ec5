"""Videos at the ingress (lvlm-var recognizers): a multipart upload streamed to a temporary file, `video_uri`s
confined to the operator's roots, and the checks a file passes before it is decoded into the one clip sent to a
recognizer replica.

Every refusal is an `ApiError` naming the request's field (`video`, `video_uri`, `model`, ...), never a 5xx:

  upload larger than max_video_bytes                     413  video
  video_uri when the service allows no roots, or a path
    / URI outside them (`..` and symlinks are resolved
    first; s3:// gs:// only under an allowed prefix)      403  video_uri
  not a container we read (sniffed from its first bytes:
    MP4/MOV, Matroska/WebM, AVI)                          415  video | video_uri
  opens but does not decode (VideoError's reason)       422  video | video_uri
  more than max_video_frames frames, or a side longer
    than max_video_side pixels                           422  video | video_uri

The container is sniffed before FFmpeg sees the file: FFmpeg probes the format from the content, and a text
playlist (HLS, ffconcat) would make it open other files. A container that states no frame count has its
packets counted (no decoding) up to the cap before anything is decoded.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from actionllm import storage
from actionllm.video.decode import VideoError, open_video, probe, read_frames, sample_indices

from .schemas import ApiError

MAX_FIELD_BYTES = 64 << 10  # a form field other than the video (model, candidates)
MAX_PARTS = 16
FORM_OVERHEAD = 256 << 10  # what a multipart body may hold beside the video (boundaries, headers, fields)
REMOTE_SCHEMES = ("s3", "gs")
CONTAINERS = ("mov", "mp4", "matroska", "webm", "avi")  # PyAV's format names we accept (any of, in its name)


@dataclass(frozen=True)
class VideoPolicy:
    """What the operator allows (`actionllm serve --video-root --max-video-mb --max-video-frames ...`)."""

    roots: tuple[str, ...] = ()  # absolute local directories, and/or s3:// gs:// prefixes ending in "/"
    max_bytes: int = 50 << 20
    max_frames: int = 10_000
    max_side: int = 4096
    tmp_dir: str | None = None  # where uploads are written (default: the system's temp directory)
    _local: tuple[Path, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_local", tuple(Path(r) for r in self.roots if not storage.is_uri(r)))


def normalise_root(root: str) -> str:
    """A `--video-root` value -> an absolute existing directory, or an s3:// / gs:// prefix ending in '/'."""
    text = str(root).strip()
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    if storage.is_uri(text):
        scheme = text.partition("://")[0].lower()
        if scheme not in REMOTE_SCHEMES:
            raise ValueError(f"video root {root!r}: only local directories, s3:// and gs:// prefixes")
        if any(part in ("..", ".") for part in text.partition("://")[2].split("/")):
            raise ValueError(f"video root {root!r}: '.' or '..' in a prefix")
        return text.rstrip("/") + "/"
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"video root {root!r} is not a directory")
    return str(path)


def allowed_source(uri: str, policy: VideoPolicy, fld: str = "video_uri") -> str:
    """The file a request's `video_uri` may read (an absolute local path, or a remote URI under an allowed
    prefix), or a 403 / 422 naming the field. A relative path is looked up under each root in turn."""
    if not policy.roots:
        raise ApiError(403, "video_uri not allowed", fld, "this service reads no files named by requests (its "
                       "operator allows none: `actionllm serve --video-root DIR`); upload the video as multipart "
                       "form field `video` instead")
    if "\x00" in uri or not uri.strip():
        raise ApiError(422, "invalid video_uri", fld, "an empty path, or one with a NUL character")
    text = uri.strip()
    if text.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ApiError(403, "video_uri not allowed", fld, f"{uri!r}: a file:// URI of another host")
        text = urllib.parse.unquote(parsed.path)
    if storage.is_uri(text):
        scheme, _, rest = text.partition("://")
        if scheme.lower() not in REMOTE_SCHEMES:
            raise ApiError(403, "video_uri not allowed", fld, f"{uri!r}: scheme {scheme!r}; this service reads "
                           "local paths, s3:// and gs:// under its allowed roots")
        if any(part in ("..", ".") for part in rest.split("/")) or "//" in rest:
            raise ApiError(403, "video_uri not allowed", fld, f"{uri!r}: '.', '..' or '//' in the path")
        if not any(text.startswith(r) for r in policy.roots if storage.is_uri(r)):
            raise ApiError(403, "video_uri not allowed", fld, f"{uri!r} is not under an allowed prefix")
        return text
    path = Path(text)
    candidates = [path] if path.is_absolute() else [root / path for root in policy._local]
    inside = False
    for cand in candidates:
        try:
            real = cand.resolve()  # `..` and symlinks resolved before the check
        except (OSError, RuntimeError, ValueError):
            continue
        for root in policy._local:
            if real == root or real.is_relative_to(root):
                inside = True
                if real.is_file():
                    return str(real)
    if not inside:
        raise ApiError(403, "video_uri not allowed", fld, f"{uri!r} is not under a directory this service allows")
    raise ApiError(422, "video not found", fld, f"{uri!r}: no such file under the allowed roots")


def _head(source: str, n: int = 16) -> tuple[bytes, int]:
    """The first bytes of a file and its size (local or remote)."""
    if storage.is_uri(source):
        import pyarrow.fs as pafs

        fs, inner = storage.resolve(source)
        info = fs.get_file_info(inner)
        if info.type != pafs.FileType.File:
            raise VideoError(source, "file not found")
        with fs.open_input_file(inner) as f:
            return f.read(n), int(info.size or 0)
    with open(source, "rb") as f:
        return f.read(n), os.fstat(f.fileno()).st_size


def container_of(head: bytes) -> str | None:
    """The container family of a file from its first bytes (None: not one we read)."""
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _count_frames(source: str, cap: int) -> int:
    """The container's stated frame count, else its video packets counted (no decoding) up to cap + 1."""
    with open_video(source) as container:
        if not any(name in container.format.name for name in CONTAINERS):
            raise VideoError(source, f"container {container.format.name!r} is not a video file we read")
        if not container.streams.video:
            return 0  # probe() names the streams it has
        stream = container.streams.video[0]
        stated = int(stream.frames or 0)
        if stated > 0:
            return stated
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if count > cap:
                        break
        except (av.error.FFmpegError, OSError, ValueError) as err:  # probe() says what it is
            if count == 0:
                raise VideoError(source, f"cannot read: {type(err).__name__}: {err}") from None
        return count


def decode_clip(source: str, frames: int, size: int, policy: VideoPolicy, fld: str) -> tuple[np.ndarray, dict]:
    """Check a video file against the policy and decode the recognizer's clip from it: uint8 [frames, size,
    size, 3] (what `actionllm predict --format video` reads) and what was learnt of the file (JSON-ready).
    Blocking (FFmpeg): call it in a worker thread."""
    try:
        head, nbytes = _head(source)
    except (OSError, ValueError) as err:
        raise ApiError(422, "unreadable video", fld, str(err)) from None
    if nbytes > policy.max_bytes:
        raise ApiError(413, "video too large", fld, f"{nbytes} bytes; this service takes at most {policy.max_bytes}")
    if nbytes == 0:
        raise ApiError(422, "empty video", fld, "the file has no bytes")
    if container_of(head) is None:
        raise ApiError(415, "unsupported video container", fld, "not an MP4/MOV, Matroska/WebM or AVI file "
                       f"(first bytes {head[:12]!r})")
    try:
        counted = _count_frames(source, policy.max_frames)
        if counted > policy.max_frames:
            raise ApiError(422, "video too long", fld, f"{counted if counted > policy.max_frames + 1 else 'more'} "
                           f"frames; this service takes at most {policy.max_frames}")
        info = probe(source)  # decodes the first frame: a file that opens but does not decode is refused here
        if info["num_frames"] > policy.max_frames:  # (counted == stated unless the container stated none)
            raise ApiError(422, "video too long", fld, f"{info['num_frames']} frames; this service takes at most "
                           f"{policy.max_frames}")
        if max(info["width"], info["height"]) > policy.max_side:
            raise ApiError(422, "video too large", fld, f"{info['width']}x{info['height']} pixels; this service "
                           f"takes at most {policy.max_side} on a side")
        n = counted or info["num_frames"]
        clip = read_frames(source, frames, size, num_frames=n)
    except VideoError as err:
        unsupported = err.reason.startswith(("cannot open", "no video stream", "container"))
        raise ApiError(415 if unsupported else 422, "unsupported video" if unsupported else "undecodable video",
                       fld, err.reason) from None
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as err:  # what decode.py does not name: the file's
        raise ApiError(422, "undecodable video", fld, f"{type(err).__name__}: {err}") from None
    info["sampled_frames"] = [int(i) for i in sample_indices(n, frames, False)]
    info["num_frames"] = int(n)
    return clip, info


# --- multipart/form-data, streamed: python-multipart's MultipartParser (Starlette's) ------------------------
MAX_HEADER_BYTES = 16 << 10  # a part's headers, all together


def _malformed(detail: str) -> ApiError:
    return ApiError(400, "malformed multipart body", "body", detail)


def boundary_of(content_type: str) -> str:
    boundary = parse_options_header(content_type)[1].get(b"boundary", b"").decode("latin-1")
    if not 1 <= len(boundary) <= 200:
        raise _malformed("the Content-Type has no usable boundary")
    return boundary


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # the video's temporary file (the caller removes it: `remove()`)
    filename: str | None = None
    size: int = 0

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


async def read_upload(chunks: AsyncIterator[bytes], content_type: str, upload: Upload, policy: VideoPolicy,
                      file_field: str = "video") -> Upload:
    """A multipart/form-data body, streamed: the `file_field` part into a temporary file (`upload.path`, which
    the caller removes whatever happens, also when this raises), other parts as text fields. Refuses (ApiError)
    a malformed body, a video over max_bytes (413 naming it), an oversize or repeated field, other file parts.
    The parser's callbacks raise the refusals; each chunk is handed on as it comes (nothing held whole)."""
    boundary = boundary_of(content_type).encode("latin-1")
    headers: list[list[bytearray]] = []  # the current part's [name, value] pairs
    value = bytearray()  # the current text field
    out = None  # the video's temporary file, while its part is read
    st = SimpleNamespace(parts=0, header_bytes=0, name="", file=False, size=0, ended=False)

    def part_begin() -> None:
        st.parts += 1
        if st.parts > MAX_PARTS:
            raise ApiError(422, "too many form fields", "body", f"at most {MAX_PARTS} parts")
        headers.clear()
        st.header_bytes = 0

    def header_data(which: int):  # a header's name (0) or value (1), in one piece or more
        def take(data: bytes, start: int, end: int) -> None:
            st.header_bytes += end - start
            if st.header_bytes > MAX_HEADER_BYTES:
                raise _malformed("a part's headers are too long")
            headers[-1][which] += data[start:end]
        return take

    def headers_finished() -> None:
        nonlocal out
        raw = next((bytes(v) for k, v in headers if k.strip().lower() == b"content-disposition"), b"")
        kind, params = parse_options_header(raw)
        if kind.strip().lower() != b"form-data":
            raise _malformed("a part without Content-Disposition: form-data")
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise _malformed("a part without a field name")
        filename = params[b"filename"].decode("utf-8", "replace") if b"filename" in params else None
        if name in upload.fields or (name == file_field and upload.path is not None):
            raise ApiError(422, "repeated form field", name, "each field may be sent once")
        is_file = name == file_field
        if filename is not None and not is_file:
            raise ApiError(422, "unknown file field", name, f"the video goes in form field {file_field!r}")
        st.name, st.file, st.size = name, is_file, 0
        value.clear()
        if is_file:
            fd, upload.path = tempfile.mkstemp(prefix="actionllm-upload-", suffix=".video", dir=policy.tmp_dir)
            out = os.fdopen(fd, "wb")
            upload.filename = filename

    def part_data(data: bytes, start: int, end: int) -> None:
        st.size += end - start
        limit = policy.max_bytes if st.file else MAX_FIELD_BYTES
        if st.size > limit:
            what = "video too large" if st.file else "form field too large"
            raise ApiError(413, what, st.name, f"more than {limit} bytes; this service takes at most {limit}")
        if out is not None:
            out.write(memoryview(data)[start:end])
        else:
            value.extend(memoryview(data)[start:end])

    def part_end() -> None:
        nonlocal out
        if out is not None:
            out.close()
            out = None
            upload.size = st.size
            return
        try:
            upload.fields[st.name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid form field", st.name, "not UTF-8 text") from None

    parser = MultipartParser(boundary, {
        "on_part_begin": part_begin, "on_header_begin": lambda: headers.append([bytearray(), bytearray()]),
        "on_header_field": header_data(0), "on_header_value": header_data(1),
        "on_headers_finished": headers_finished, "on_part_data": part_data, "on_part_end": part_end,
        "on_end": lambda: setattr(st, "ended", True),
    }, max_header_count=MAX_HEADER_BYTES + 1, max_header_size=4 * MAX_HEADER_BYTES)  # looser than ours, above
    preamble: bytearray | None = bytearray()  # what comes before the first boundary (RFC 2046 allows some)
    try:
        async for chunk in chunks:
            if preamble is not None:  # the parser itself skips only line breaks there
                preamble += chunk
                if (i := preamble.find(b"--" + boundary)) < 0:
                    if len(preamble) > MAX_FIELD_BYTES:
                        raise _malformed("no boundary where the form should start")
                    continue
                chunk, preamble = bytes(preamble[i:]), None
            parser.write(chunk)
            if st.ended:
                return upload  # the closing boundary (an epilogue is not read)
    except MultipartParseError as err:
        raise _malformed(f"not a multipart/form-data body: {err}") from None
    finally:
        if out is not None:
            out.close()
    raise _malformed("the body ended inside the form")
