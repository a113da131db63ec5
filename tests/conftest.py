"""Shared fixtures: where the real data lives, and one local Ray for the tests that need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ACTIONLLM_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "msr_action3d").is_dir():
        pytest.fail(f"real datasets not found at {DATA} (set ACTIONLLM_DATA); see ../shared/data/README.md")
    return DATA


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (4 logical CPUs: 2 train workers + the data pipeline), started once for the session, quiet progress bars."""
    ray = pytest.importorskip("ray")
    from training.data import init_ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    init_ray(num_cpus=4, quiet=True)
    yield ray
    ray.shutdown()
