"""Mixed precision of the training forward (TrainConfig.autocast, training/loop.py:training_autocast)."""

import pytest
import torch
from pydantic import ValidationError

import training.loop
from actionllm.components.backbone import BackboneConfig, load_backbone
from training.config import TrainConfig
from training.loop import cpu_has_native_bf16, slow_autocast_warning, training_autocast

CPU = torch.device("cpu")


def test_autocast_is_a_checked_field_float32_on_cpu_unless_asked():
    assert TrainConfig(data="d", output="o").autocast == "auto"
    assert TrainConfig(data="d", output="o", stages={"llm": {"autocast": "bf16"}}, recipe="sugar") \
        .for_stage("llm", "o").autocast == "bf16"
    with pytest.raises(ValidationError, match="autocast"):
        TrainConfig(data="d", output="o", autocast="fp16")
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    for mode, dtype in (("auto", torch.float32), ("off", torch.float32), ("bf16", torch.bfloat16)):
        with training_autocast(mode, CPU):
            assert lin(x).dtype == dtype, mode
    assert isinstance(cpu_has_native_bf16(), bool)


def test_bf16_training_step_keeps_float32_weights_and_a_close_loss():
    """A tiny Llama's LM loss under bf16 autocast is within 2% of float32's; weights and their gradients stay
    float32 (the optimiser's master copy)."""
    torch.manual_seed(0)
    llm, _ = load_backbone(BackboneConfig(name_or_path="tiny"))
    ids = torch.randint(0, llm.config.vocab_size, (2, 24))
    losses = {}
    for mode in ("off", "bf16"):
        llm.zero_grad(set_to_none=True)
        with training_autocast(mode, CPU):
            loss = llm(input_ids=ids, labels=ids).loss
        loss.backward()
        losses[mode] = loss.item()
        grads = [p.grad for p in llm.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in llm.parameters())
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.02)


def test_the_cpu_autocast_bench_runs_and_reports_both_settings(tmp_path):
    """bench/cpu_autocast.py (tiny backbone, one step a setting): the figures it prints are written and sane."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "figures.json"
    subprocess.run([sys.executable, "bench/cpu_autocast.py", "--backbone", "tiny", "--batch", "2", "--tokens", "16",
                    "--steps", "1", "--rounds", "1", "--json", str(out)], cwd=root, check=True, capture_output=True,
                   timeout=300)
    figures = json.loads(out.read_text())
    assert figures["float32_s_per_step"] > 0 and figures["bf16_s_per_step"] > 0 and figures["speedup"] > 0
    assert figures["loss_bf16"] == pytest.approx(figures["loss_float32"], rel=0.05)


def test_a_warning_only_for_bf16_asked_on_a_cpu_that_emulates_it(monkeypatch):
    monkeypatch.setattr(training.loop, "cpu_has_native_bf16", lambda: False)
    assert "slower" in slow_autocast_warning("bf16", CPU)
    assert slow_autocast_warning("auto", CPU) is None and slow_autocast_warning("off", CPU) is None
    assert slow_autocast_warning("bf16", torch.device("cuda")) is None
    monkeypatch.setattr(training.loop, "cpu_has_native_bf16", lambda: True)
    assert slow_autocast_warning("bf16", CPU) is None
