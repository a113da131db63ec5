"""The `actionllm` command: thin, split by area; the one place that reaches into training/, services/ and
cluster/ (each imported when its command runs, so `actionllm prepare` and friends never start Ray)."""

from __future__ import annotations

import sys

from . import data, describe, evaluate, jobs, serve, train, video  # noqa: F401  (each module adds its commands to `app`)
from .common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    sys.exit(app())
