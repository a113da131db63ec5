import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from check_imports import violations  # noqa: E402


def test_no_forbidden_imports():
    assert violations() == []


def test_import_actionllm_does_not_import_ray():
    code = (
        "import sys, actionllm, actionllm.skeleton.layouts, actionllm.skeleton.transforms, "
        "actionllm.skeleton.shards, actionllm.skeleton.prepare, actionllm.skeleton.synth_gait, actionllm.cli\n"
        "from actionllm.skeleton.formats import _load_all; _load_all()\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
