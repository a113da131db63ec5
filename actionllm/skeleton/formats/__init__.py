"""One reader per source format, registered by name (the `--format` of `actionllm prepare`)."""

from .base import READERS, FormatError, Reader, Rejection, get_reader, register_reader

__all__ = ["READERS", "FormatError", "Reader", "Rejection", "get_reader", "register_reader", "_load_all"]


def _load_all() -> None:
    """Import the reader modules so that they register. Kept lazy: readers pull in scipy."""
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
