import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from check_imports import violations  # noqa: E402


def test_no_forbidden_imports_and_no_circles():
    assert violations() == []


def test_import_actionllm_does_not_import_ray():
    code = (
        "import sys, actionllm, actionllm.skeleton.layouts, actionllm.skeleton.transforms, "
        "actionllm.skeleton.shards, actionllm.skeleton.prepare, actionllm.skeleton.synth_gait, actionllm.methods, "
        "actionllm.evaluation, actionllm.inference, actionllm.video.render, actionllm.video.folder, "
        "actionllm.video.decode, actionllm.video.features, actionllm.components.visual_encoder\n"
        "from actionllm.skeleton.formats import load_all; load_all()\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_service_ingress_imports_no_torch():
    """An ingress replica describes recognizers from their folders without torch, transformers or peft, so a
    replacement starts in seconds (docs/reliability.md, failover)."""
    code = ("import sys, services.api, services.metrics\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft'))\n"
            "assert not bad, bad[:5]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in root.rglob("*.py")}:  # every folder a package
        (folder / "__init__.py").touch()


TREE = {
    "actionllm/contract.py": "import torch\n",
    "actionllm/components/lora.py": "from ..contract import X\n",
    "actionllm/methods/a/model.py": "from ...components.lora import Y\nfrom . import config\n",
    "actionllm/methods/a/config.py": "import pydantic\n",
    "actionllm/methods/b/model.py": "from actionllm.components import lora\n",
    "training/loop.py": "from actionllm.contract import X\n",
    "services/api.py": "from actionllm.methods import load_recognizer\n",
}


def test_a_clean_scratch_tree_passes(tmp_path):
    plant(tmp_path, TREE)
    assert violations(tmp_path) == []


@pytest.mark.parametrize("rel, text, needle", [
    ("actionllm/inference.py", "def f():\n    import ray\n", "actionllm/ must not import ray"),
    ("actionllm/evaluation.py", "from training import loop\n", "actionllm/ must not import training"),
    ("actionllm/contract.py", "import services.api\n", "actionllm/ must not import services"),
    ("actionllm/methods/b/model.py", "from ..a import model\n", "method b must not import actionllm.methods.a"),
    ("actionllm/methods/b/model.py", "from actionllm.methods.a.config import C\n", "method b must not import"),
    ("actionllm/components/lora.py", "from ..methods.a import config\n", "components/ must not import methods/"),
    ("training/loop.py", "from services import api\n", "training/ must not import services"),
    ("services/api.py", "def f():\n    from training.loop import g\n", "services/ must not import training"),
    ("actionllm/methods/a/config.py", "from . import model\n", "import circle"),
])
def test_each_rule_catches_a_violating_file(tmp_path, rel, text, needle):
    plant(tmp_path, {**TREE, rel: text})
    found = violations(tmp_path)
    assert any(needle in v for v in found), found
