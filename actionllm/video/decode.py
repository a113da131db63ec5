"""Open, probe and sample video files through PyAV (FFmpeg ships inside its wheel).

`read_frames` decodes a clip once, keeps only the sampled frames (TSN-style segment sampling, see
`sample_indices`), and returns them as uint8 RGB [frames, size, size, 3]: the short side scaled to `size`
(FFmpeg's swscale, area filter) and the centre cropped to a square. Normalisation is the encoder's business.

Local paths and ``file://`` are opened by FFmpeg directly; other storage URIs (``s3://``, ``gs://``) through a
seekable pyarrow input file (actionllm/storage.py resolves the filesystem).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pyarrow.fs as pafs
from av.video.reformatter import VideoReformatter

from .. import storage

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class VideoError(ValueError):
    """A video that cannot be read; the message names the file and the reason."""

    def __init__(self, uri: str | os.PathLike, reason: str):
        self.uri, self.reason = str(uri), reason
        super().__init__(f"{uri}: {reason}")


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if isinstance(err, av.error.FFmpegError) else f"{type(err).__name__}: {text}"


@contextlib.contextmanager
def open_video(uri: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """An open PyAV input container; every failure to open becomes a VideoError naming the file."""
    text = str(uri)
    handle = None
    try:
        if storage.is_uri(text):
            fs, inner = storage.resolve(text)  # ValueError (unknown scheme, no credentials) names the URI
            if fs.get_file_info(inner).type != pafs.FileType.File:
                raise VideoError(text, "file not found")
            if isinstance(fs, pafs.LocalFileSystem):
                target = inner
            else:
                target = handle = fs.open_input_file(inner)  # seekable: MP4's index may sit at the end
        else:
            if not Path(text).is_file():
                raise VideoError(text, "file not found")
            target = text
        container = av.open(target, mode="r")
    except VideoError:
        if handle is not None:
            handle.close()
        raise
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        if handle is not None:
            handle.close()
        raise VideoError(text, f"cannot open: {_describe(err)}") from None
    try:
        yield container
    finally:
        container.close()
        if handle is not None:
            handle.close()


def _video_stream(container, uri) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(uri, f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads in the decoder
    return stream


def probe(uri: str | os.PathLike, decode_all: bool = False) -> dict:
    """num_frames, fps, width, height, codec, duration_s of the first video stream.

    The first frame is always decoded (a file whose header opens but whose data does not decode is refused).
    The frame count is the container's when it states one; when it does not (stream.frames == 0, e.g. some
    WebM/MKV), or with `decode_all`, every frame is decoded and counted, which also proves that the whole
    file decodes. Raises VideoError for a missing, corrupt, undecodable or empty file, or one without video.
    """
    with open_video(uri) as container:
        stream = _video_stream(container, uri)
        stated = int(stream.frames or 0)
        count = 0
        try:
            for _ in container.decode(stream):
                count += 1
                if stated > 0 and not decode_all:
                    break
        except (av.error.FFmpegError, ValueError, OSError) as err:
            if count == 0 or decode_all:
                raise VideoError(uri, f"cannot decode frame {count}: {_describe(err)}") from None
        if count == 0:
            raise VideoError(uri, "no decodable frames")
        num_frames = count if (decode_all or stated <= 0) else stated
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / fps if fps > 0 else 0.0
        if fps <= 0 and duration > 0:
            fps = num_frames / duration
        ctx = stream.codec_context
        return {"num_frames": int(num_frames), "fps": round(fps, 6), "width": int(ctx.width),
                "height": int(ctx.height), "codec": ctx.name, "duration_s": round(duration, 6)}


def sample_indices(num_frames: int, frames: int, train: bool,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """`frames` indices into [0, num_frames): the range is cut into `frames` equal segments and one index is
    taken per segment (TSN): its middle for evaluation, a uniformly random position inside it for training.
    The result is non-decreasing; a clip shorter than `frames` repeats indices."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    seg = num_frames / frames
    starts = np.arange(frames) * seg
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        pos = starts + rng.random(frames) * seg
    else:
        pos = starts + seg / 2
    return np.clip(np.floor(pos).astype(np.int64), 0, num_frames - 1)


def _to_square(frame: av.VideoFrame, size: int, scaler: VideoReformatter) -> np.ndarray:
    """Short side to `size` (area filter), centre crop to size x size, RGB uint8. One `scaler` per clip: it
    keeps its swscale context, where frame.to_ndarray(width=...) builds a new one per frame (~30x slower)."""
    w, h = frame.width, frame.height
    if w <= h:
        nw, nh = size, max(size, round(h * size / w))
    else:
        nw, nh = max(size, round(w * size / h)), size
    img = scaler.reformat(frame, width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def read_frames(uri: str | os.PathLike, frames: int, size: int, train: bool = False,
                rng: np.random.Generator | None = None, num_frames: int | None = None) -> np.ndarray:
    """Decode a clip once and return `frames` sampled frames as uint8 RGB [frames, size, size, 3].

    `num_frames` (e.g. the shard row's, counted at prepare time) sets the sampling range; without it the
    container's count is used, and a container that states none is decoded whole first. Decoding stops after
    the last sampled index. When the file ends before an index (a count that was too high), that index gets
    the last frame that decoded."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    scaler = VideoReformatter()
    with open_video(uri) as container:
        stream = _video_stream(container, uri)
        n = int(num_frames or stream.frames or 0)
        try:
            if n <= 0:  # no count: decode everything (already reduced to size x size), then sample
                kept = [_to_square(f, size, scaler) for f in container.decode(stream)]
                if not kept:
                    raise VideoError(uri, "no decodable frames")
                idx = sample_indices(len(kept), frames, train, rng)
                return np.stack([kept[i] for i in idx])
            idx = sample_indices(n, frames, train, rng)
            wanted = set(idx.tolist())
            last_needed = int(idx[-1])
            got: dict[int, np.ndarray] = {}
            last_i, last_frame = -1, None
            for i, frame in enumerate(container.decode(stream)):
                last_i, last_frame = i, frame
                if i in wanted:
                    got[i] = _to_square(frame, size, scaler)
                if i >= last_needed:
                    break
        except VideoError:
            raise
        except (av.error.FFmpegError, ValueError, OSError) as err:
            raise VideoError(uri, f"cannot decode: {_describe(err)}") from None
        if last_frame is None:
            raise VideoError(uri, "no decodable frames")
        if last_i < last_needed:  # the file ended early
            got.setdefault(last_i, _to_square(last_frame, size, scaler))
            return np.stack([got[min(int(i), last_i)] for i in idx])
        return np.stack([got[int(i)] for i in idx])
