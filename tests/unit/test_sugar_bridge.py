"""SUGAR's bridge (issue 16, item 3): Temporal Query Projection's shapes, that its segments chain (the output
depends on earlier segments through the queries, with one shared Q-Former), and Table 4's other bridges."""

import pytest
import torch

from actionllm.methods.sugar.bridge import Bridge, BridgeConfig, segment_bounds


def small(kind: str, **kw) -> Bridge:
    torch.manual_seed(0)
    return Bridge(BridgeConfig(kind=kind, hidden=32, layers=1, heads=2, tokens=5, dropout=0.0, **kw),
                  feature_width=24, llm_width=40).eval()


@pytest.mark.parametrize("kind, tokens", [("tqp", 5), ("qformer", 5), ("xattn", 5), ("linear", 12)])
def test_shapes(kind, tokens):
    b = small(kind, segments=3)
    out = b(torch.randn(2, 12, 24))
    assert out.shape == (2, tokens, 40) and b.num_tokens(12) == tokens


def test_segments_cover_time_in_order():
    assert segment_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert segment_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(ValueError, match="5 segments for 4 time steps"):
        segment_bounds(4, 5)


def test_tqp_chains_segments_through_one_shared_qformer():
    b = small("tqp", segments=3)
    assert sum(isinstance(m, type(b.qformer)) for m in b.modules()) == 1  # one Q-Former, shared by the chain
    s = torch.randn(1, 12, 24)
    with torch.no_grad():
        base = b(s)
        early = s.clone()
        early[:, :4] += torch.randn(1, 4, 24)  # change only the first segment
        changed = b(early)
        calls = []
        hook = b.qformer.register_forward_hook(lambda m, args, kwargs_out: calls.append(1))
        b(s)
        hook.remove()
    assert len(calls) == 3  # one Q-Former pass per segment
    assert not torch.allclose(base, changed, atol=1e-5)  # the first segment reaches the output via the queries
    with torch.no_grad():  # the learnt queries start the chain (noise, not a constant: the Q-Former's LayerNorm)
        b.queries.add_(torch.randn_like(b.queries))
        assert not torch.allclose(b(s), base, atol=1e-5)


def test_padded_frames_are_masked_out():
    b = small("qformer")
    s = torch.randn(1, 10, 24)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[:, 7:] = False
    noisy = s.clone()
    noisy[:, 7:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(b(s, mask), b(noisy, mask), atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_queries_and_the_qformer():
    b = small("tqp", segments=2).train()
    b(torch.randn(2, 8, 24)).pow(2).mean().backward()
    assert b.queries.grad is not None and b.queries.grad.abs().sum() > 0
    assert all(p.grad is not None for p in b.qformer.parameters() if p.requires_grad)


@pytest.mark.parametrize("frames", [16, 31, 32])
def test_frames_out_is_the_length_of_s(frames):
    """The token count of a linear bridge (one token per frame of s) is the encoder's output length, not T."""
    from actionllm.methods.sugar.alignment import SequenceEncoder
    from actionllm.methods.sugar.config import EncoderConfig

    enc = SequenceEncoder("kinect20", 3, EncoderConfig(preset="small"), 384)
    s = enc.sequence(enc.grid(torch.randn(2, 1, frames, 20, 3)), None)
    assert s.shape[1] == enc.frames_out(frames) < frames
    assert Bridge(BridgeConfig(kind="linear"), enc.width, 64).num_tokens(enc.frames_out(frames)) == s.shape[1]
