"""Shared fixtures: where the real data lives, and one local Ray for the tests that need it."""

from __future__ import annotations

import os
import time
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


SERVE_CFG = {"bridge": {"window": 12, "stride": 6, "precision": 1}, "backbone": {"name_or_path": "tiny"},
             "max_length": 4096}


@pytest.fixture(scope="session")
def tiny_recognizers(tmp_path_factory, data_root) -> dict[str, Path]:
    """Three joints-llm recognizer folders for MSR Action3D (kinect20, 3D) on ONE tiny base (same weights),
    each with its own LoRA adapter and head (random, distinct): what a serving replica shares a base between."""
    import copy

    import torch

    from actionllm.components.backbone import load_backbone
    from actionllm.methods import get_recipe
    from actionllm.methods.joints_llm.model import JointsLLMRecognizer
    from actionllm.skeleton.formats import get_reader

    classes = get_reader("msr-action3d")(data_root / "msr_action3d").class_names
    cfg = get_recipe("joints-llm").config_cls.model_validate(SERVE_CFG)
    base, tok = load_backbone(cfg.backbone, seed=0)
    out = {}
    for k, name in enumerate(("alpha", "beta", "gamma")):
        rec = JointsLLMRecognizer(SERVE_CFG, classes, "kinect20", 3, model=copy.deepcopy(base), tokenizer=tok, seed=k + 1)
        g = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for n, p in rec.named_parameters():
                if "lora_B" in n:  # LoRA B starts at 0 (adapter = identity): give each one its own
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        out[name] = rec.save(tmp_path_factory.mktemp("recognizers") / name)
    from actionllm.recognizer_folder import write_sample

    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seq = next(s for s in reader if hasattr(s, "joints") and s.subject in ("2", "4", "6", "8", "10"))
    write_sample(out["alpha"], seq)  # alpha has a sample.json (what training writes); beta and gamma none
    return out


@pytest.fixture(scope="session")
def tiny_llm_ar(tmp_path_factory, data_root) -> Path:
    """An llm-ar recognizer folder for MSR Action3D on the tiny base: a small random VQ-VAE, random LoRA."""
    import torch

    from actionllm.methods import get_recipe
    from actionllm.methods.llm_ar.model import LLMARRecognizer
    from actionllm.methods.llm_ar.vqvae import ActionVQVAE
    from actionllm.skeleton.formats import get_reader

    classes = get_reader("msr-action3d")(data_root / "msr_action3d").class_names
    cfg = {"backbone": {"name_or_path": "tiny"}, "clip": {"frames": 16, "max_bodies": 1}, "max_new_tokens": 3,
           "vqvae": {"codebook_size": 16, "hidden": 16, "mmd": False}, "lora": {"r": 4, "alpha": 8}}
    torch.manual_seed(7)
    vq = ActionVQVAE(60, 64, get_recipe("llm-ar").config(cfg).vqvae)
    rec = LLMARRecognizer(cfg, classes, "kinect20", 3, vqvae=vq, seed=3)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for n, p in rec.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return rec.save(tmp_path_factory.mktemp("recognizers") / "llmar")


@pytest.fixture(scope="session")
def tiny_sugar(tmp_path_factory, data_root) -> Path:
    """A sugar align-stage recognizer folder for MSR Action3D (GCN encoder random, the project's MSR knowledge
    embedded by all-MiniLM-L6-v2): an open-vocabulary recognizer."""
    from actionllm.methods.sugar.model import SugarAlignRecognizer
    from actionllm.skeleton.formats import get_reader

    classes = get_reader("msr-action3d")(data_root / "msr_action3d").class_names
    rec = SugarAlignRecognizer({"clip": {"frames": 16}}, classes, "kinect20", 3, seed=5)
    return rec.save(tmp_path_factory.mktemp("recognizers") / "sugar")


@pytest.fixture(scope="session")
def tiny_ensemble(tmp_path_factory, data_root) -> Path:
    """An ensemble folder (`actionllm ensemble`) of two GCN recognizers for MSR Action3D: a joint-stream ST-GCN and
    a bone-stream CTR-GCN (random weights, whole sequences)."""
    from actionllm.ensemble import write_ensemble
    from actionllm.methods import load_recognizer
    from actionllm.methods.ctrgcn.model import CTRGCNRecognizer
    from actionllm.methods.stgcn.model import STGCNRecognizer
    from actionllm.skeleton.formats import get_reader

    classes = get_reader("msr-action3d")(data_root / "msr_action3d").class_names
    root = tmp_path_factory.mktemp("recognizers")
    joint = STGCNRecognizer({"clip": {"frames": 16}}, classes, "kinect20", 3, seed=6).save(root / "joint")
    bone = CTRGCNRecognizer({"clip": {"frames": 16, "modality": "bone"}}, classes, "kinect20", 3, seed=7)
    return write_ensemble([joint, bone.save(root / "bone")], root / "streams", load_recognizer)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a service under test)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 120) -> None:
    """Poll `url`/healthz until it answers 200 (a service under test starting), at most `seconds`."""
    import httpx

    deadline, last = time.time() + seconds, "no answer"
    while time.time() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    raise AssertionError(f"{url} was not healthy within {seconds:g} s (last: {last})")


def msr_request(data_root: Path, index: int = 0) -> tuple[dict, object]:
    """A real MSR Action3D sequence as a /v1/recognize body, and the sequence."""
    from actionllm.skeleton.formats import get_reader

    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seq = next(iter(reader.read_file(reader.files()[index])))
    return {"layout": seq.layout, "fps": float(seq.fps), "frames": seq.joints[0].tolist()}, seq


def chromium():
    """Headless Chromium driven by selenium (Debian `chromium` + `chromium-driver`: `make browser`)."""
    import shutil

    from selenium import webdriver

    binary, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    assert binary and driver, "headless Chromium is missing: run `make browser` (apt: chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
