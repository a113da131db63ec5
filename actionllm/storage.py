"""Local paths and storage URIs (s3://, gs://, file://, any scheme pyarrow knows) behind one small API.

A multi-node job must read the same shards and write its checkpoints where every node (and the user) can
reach them: a bucket, or a shared filesystem. pyarrow's `FileSystem.from_uri` resolves the scheme (S3 with
the usual AWS credential chain and `AWS_ENDPOINT_URL`, GCS with Google's default credentials); plain paths
are the local filesystem, as before. Nothing here imports Ray.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str | os.PathLike) -> bool:
    """True for `scheme://...` (s3://, gs://, file://, ...); a Windows drive or a plain path is not."""
    text = str(path)
    head, sep, _ = text.partition("://")
    return bool(sep) and head.isalnum() and len(head) > 1


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` for a URI or a local path."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def resolve(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it). Unknown schemes and missing optional support raise ValueError naming the URI."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    try:
        return pafs.FileSystem.from_uri(str(path))
    except (ValueError, OSError) as err:  # ArrowInvalid (a ValueError): unknown scheme; OSError: e.g. no credentials
        raise ValueError(f"{path}: cannot open this storage URI ({err})") from None


def exists(path: str | os.PathLike) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_text(path: str | os.PathLike) -> str:
    """A small file's text (manifest.json, config.json) from a local path or a URI."""
    if not is_uri(path):
        return Path(path).read_text()
    fs, p = resolve(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path} does not exist")
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def list_files(folder: str | os.PathLike, pattern: str = "*") -> list[str]:
    """Files directly in `folder` whose name matches `pattern`, sorted; URIs stay URIs (pyarrow and Ray Data
    read them as given), local paths stay local paths."""
    if not is_uri(folder):
        return [str(p) for p in sorted(Path(folder).glob(pattern)) if p.is_file()]
    fs, p = resolve(folder)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern))
    return [join(folder, n) for n in names]


def upload_dir(local: str | os.PathLike, dest: str) -> int:
    """Copy a local folder's files to `dest` (a URI or a local folder), keeping the tree. Returns files copied."""
    fs, root = resolve(dest)
    fs.create_dir(root, recursive=True)
    count = 0
    for path in sorted(Path(local).rglob("*")):
        if path.is_file():
            target = f"{root.rstrip('/')}/{path.relative_to(local).as_posix()}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(path), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            count += 1
    return count


def local_run_dir(output: str | os.PathLike) -> Path:
    """Where a run writes its own files: `output` itself when it is a local path; for a URI a local staging
    folder (one per URI, under the system temp dir) that is uploaded to the URI when the run ends."""
    if not is_uri(output):
        out = Path(output).resolve()
    else:
        digest = hashlib.sha1(str(output).encode()).hexdigest()[:12]
        out = Path(tempfile.gettempdir()) / "actionllm-runs" / digest
    out.mkdir(parents=True, exist_ok=True)
    return out
