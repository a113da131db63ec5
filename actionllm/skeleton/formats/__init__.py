"""One reader per source format, registered by name (the `--format` of `actionllm prepare`). This package is
the catalogue: `get_reader` imports the built-in reader modules (lazily: readers pull in scipy) so that they
register themselves in base.py's READERS."""

from .base import READERS, FormatError, Reader, Rejection, register_reader

__all__ = ["READERS", "FormatError", "Reader", "Rejection", "get_reader", "load_all", "register_reader"]


def load_all() -> None:
    """Import the built-in reader modules so that they register."""
    from . import (  # noqa: F401
        coco_keypoints,
        florence3d,
        jhmdb,
        msr_action3d,
        ntu,
        nw_ucla,
        openpose,
        pyskl,
        utd_mhad,
        utkinect,
    )


def get_reader(name: str) -> type[Reader]:
    load_all()
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; known formats: {sorted(READERS)}") from None
