"""Security checks without a cluster (issue 19, item 6): the API key compared in constant time and never kept,
trust_remote_code off unless asked, no pickle loaded from a recognizer folder, the local head on 127.0.0.1 only,
and the per-client limits' arithmetic. The live checks (logs, /metrics, pickles in requests): tests/ray/test_serve.py."""

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import SERVE_CFG  # noqa: E402


# --- the API key ---------------------------------------------------------------------------------------------------
def test_api_key_is_compared_in_constant_time_on_its_digest(monkeypatch):
    from services import api

    calls = []
    real = api.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    monkeypatch.setattr(api, "_state", {"api_key_sha256": api.key_digest("s3cret")})
    assert api._authorised("Bearer s3cret", "/v1/models")
    assert not api._authorised("Bearer s3cre", "/v1/models")
    assert not api._authorised("Basic s3cret", "/v1/models") and not api._authorised(None, "/v1/recognize")
    assert api._authorised(None, "/healthz")  # the health probe needs no key
    # every comparison went through hmac.compare_digest, on digests (equal length whatever the token's)
    assert len(calls) == 2 and all(len(a) == len(b) == 64 for a, b in calls)
    assert all("s3cret" not in a and "s3cret" not in b for a, b in calls)


def test_the_key_never_reaches_the_deployment_or_the_limit_tables():
    from services.limits import client_id

    key = "k-" + "x" * 30
    who = client_id(key, keyed=True, host="10.0.0.1")
    assert key not in who and who == "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    assert client_id(key, keyed=False, host="10.0.0.1") == "ip:10.0.0.1"  # no key configured: by address


# --- trust_remote_code ---------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for a transformers Auto class: records from_pretrained's keyword arguments, then refuses."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        cls.calls.append(kwargs)
        raise OSError("recorded")


@pytest.mark.parametrize("ask", [None, True])
def test_backbone_trusts_remote_code_only_when_asked(monkeypatch, ask):
    import transformers

    from actionllm.components import backbone

    Recorder.calls = []
    monkeypatch.setattr(transformers, "AutoTokenizer", Recorder)  # backbone imports it where it loads one
    backbone._cached_tokenizer.cache_clear()
    cfg = backbone.BackboneConfig(name_or_path="org/some-model", **({} if ask is None else {"trust_remote_code": ask}))
    with pytest.raises(OSError, match="recorded"):
        backbone.load_backbone(cfg)
    backbone._cached_tokenizer.cache_clear()
    assert backbone.BackboneConfig().trust_remote_code is False
    assert [c["trust_remote_code"] for c in Recorder.calls] == [bool(ask)]


def test_backbone_model_load_passes_the_setting_through(monkeypatch):
    import transformers

    from actionllm.components import backbone

    class Tok:
        is_fast, pad_token, eos_token = True, "<p>", "<e>"

    Recorder.calls = []
    monkeypatch.setattr(backbone, "load_tokenizer", lambda cfg: Tok())
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Recorder)
    for ask in (False, True):
        with pytest.raises(OSError):
            backbone.load_backbone(backbone.BackboneConfig(name_or_path="org/m", trust_remote_code=ask))
    assert [c["trust_remote_code"] for c in Recorder.calls] == [False, True]


@pytest.mark.parametrize("ask", [None, True])
def test_visual_encoder_trusts_remote_code_only_when_asked(monkeypatch, tmp_path, ask):
    import transformers

    from actionllm.components.visual_encoder import VisualEncoderConfig, feature_width

    (tmp_path / "config.json").write_text("{}")
    Recorder.calls = []
    monkeypatch.setattr(transformers, "AutoConfig", Recorder)
    cfg = VisualEncoderConfig(name_or_path=str(tmp_path), **({} if ask is None else {"trust_remote_code": ask}))
    with pytest.raises(OSError, match="recorded"):
        feature_width(cfg)
    assert VisualEncoderConfig().trust_remote_code is False
    assert [c["trust_remote_code"] for c in Recorder.calls] == [bool(ask)]


def test_text_encoder_never_trusts_remote_code(monkeypatch, tmp_path):
    """The text encoder has no such setting (extra fields are refused) and never passes it."""
    import pydantic
    import transformers

    from actionllm.components.text_encoder import TextEncoder, TextEncoderConfig, TextEncoderUnavailable

    with pytest.raises(pydantic.ValidationError):
        TextEncoderConfig(trust_remote_code=True)
    (tmp_path / "config.json").write_text("{}")
    Recorder.calls = []
    monkeypatch.setattr(transformers, "AutoConfig", Recorder)
    with pytest.raises(TextEncoderUnavailable):
        TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path)))
    assert Recorder.calls and all(not c.get("trust_remote_code") for c in Recorder.calls)


# --- no pickle from a recognizer folder ----------------------------------------------------------------------------
class Canary:
    """Unpickling this creates `marker` (pickle calls open(marker, "w")): proof that someone unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Canary(marker)))
    return path


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory) -> Path:
    """A joints-llm recognizer on the tiny base (its base weights stored in base/)."""
    from actionllm.methods.joints_llm.model import JointsLLMRecognizer

    return JointsLLMRecognizer(SERVE_CFG, ["a", "b"], "kinect20", 3, seed=1).save(tmp_path_factory.mktemp("rec") / "jl")


@pytest.mark.parametrize("rel, drop", [
    ("base/pytorch_model.bin", "base/model.safetensors"),  # transformers would torch.load it
    ("adapter_model.bin", None),  # PEFT's pickle name
    ("head.pt", None),
])
def test_a_planted_pickle_in_a_recognizer_folder_is_refused_never_loaded(lora_folder, tmp_path, rel, drop):
    from actionllm.checks import check_recognizer
    from actionllm.methods import load_recognizer

    folder = Path(shutil.copytree(lora_folder, tmp_path / "rec"))
    marker = tmp_path / "UNPICKLED"
    if drop:
        (folder / drop).unlink()
    planted = plant(folder / rel, marker)
    problems = check_recognizer(folder)
    assert any(p.startswith(f"{planted}: a pickle file") and "never loaded" in p for p in problems), problems
    with pytest.raises(ValueError, match=r"a pickle file .*remove it"):
        load_recognizer(folder)
    from services.app import ServeConfig

    with pytest.raises(ValueError, match="a pickle file"):  # `actionllm serve` refuses it before Ray starts
        ServeConfig.model_validate({"models": [{"name": "m", "path": str(folder)}]})
    assert not marker.exists()
    planted.unlink()
    if drop is None:
        assert check_recognizer(folder) == []  # the same folder without the pickle is fine


def test_load_base_reads_safetensors_only(lora_folder, tmp_path):
    """Even called directly (no refuse_pickles first), the base loader never falls back to pytorch_model.bin."""
    from actionllm.components.backbone import load_base

    base = Path(shutil.copytree(lora_folder / "base", tmp_path / "base"))
    (base / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    plant(base / "pytorch_model.bin", marker)
    with pytest.raises(OSError, match="safetensors"):
        load_base(base)
    assert not marker.exists()


# --- the local head binds to 127.0.0.1 -----------------------------------------------------------------------------
def test_local_head_binds_dashboard_and_client_server_to_loopback(tmp_path):
    from cluster.local import head_command

    cmd, env = head_command(6390, 8270, tmp_path, 9100, num_cpus=2)
    opt = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert cmd[1:3] == ["start", "--head"]
    assert opt["--dashboard-host"] == "127.0.0.1" and opt["--node-ip-address"] == "127.0.0.1"
    assert "--ray-client-server-port" in opt and env["RAY_AUTH_MODE"] == "token"
    assert "0.0.0.0" not in " ".join(cmd)
    # the Ray client server (and GCS, raylet) listen on the node address: Ray keeps 127.0.0.1 only with this env
    code = ("from ray._private.services import resolve_ip_for_localhost as r; print(r('127.0.0.1'))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "127.0.0.1"


# --- the per-client limits' arithmetic ------------------------------------------------------------------------------
def test_token_bucket_burst_refill_and_off():
    from services.limits import ClientLimits, LimitSettings, retry_after

    now = [0.0]
    lim = ClientLimits(LimitSettings(rate_limit_rps=2, rate_limit_burst=3), clock=lambda: now[0])
    assert [lim.take("a") for _ in range(3)] == [None] * 3
    wait = lim.take("a")
    assert wait == pytest.approx(0.5) and retry_after(wait) == "1"
    assert lim.take("b") is None  # another client has its own bucket
    now[0] += 0.5
    assert lim.take("a") is None and lim.take("a") is not None  # one token back after 1/rate s
    lim.update(LimitSettings(rate_limit_rps=0))
    assert all(lim.take("a") is None for _ in range(1000))  # 0 = off


def test_stream_counts_and_bounded_tables(monkeypatch):
    from services import limits as mod

    lim = mod.ClientLimits(mod.LimitSettings(max_streams_per_client=2))
    assert lim.open_stream("a") and lim.open_stream("a") and not lim.open_stream("a")
    assert lim.open_stream("b")
    lim.close_stream("a")
    assert lim.open_stream("a") and not lim.open_stream("a")
    for c in ("a", "a", "b"):
        lim.close_stream(c)
    assert lim.streams == {}  # nothing left behind by closed streams
    monkeypatch.setattr(mod, "MAX_CLIENTS", 50)
    for i in range(500):
        lim.take(f"ip:{i}")
    assert len(lim.buckets) == 50  # a crowd of addresses does not grow the table
