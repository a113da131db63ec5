import math

import numpy as np
import pytest
import torch
from torch import nn

from actionllm.components.pooling import (
    POOLINGS,
    AttnPooling,
    ClassifierHead,
    LastPooling,
    MeanPooling,
    attn_pool,
    attn_scores,
    attn_weights,
    classification_loss,
    mask_scores,
    token_weights_to_frames_joints,
)

# one batch row, 3 tokens of dim 2; the last token is padding
H = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
VALID = torch.tensor([[True, True, False]])


def linear_scorer() -> nn.Linear:
    mlp = nn.Linear(2, 1)
    with torch.no_grad():
        mlp.weight.copy_(torch.tensor([[1.0, 0.5]]))
        mlp.bias.fill_(0.25)
    return mlp


def test_equations_by_hand():
    scores = attn_scores(H, linear_scorer())  # eq. 5: l = x + 0.5 y + 0.25
    assert torch.allclose(scores, torch.tensor([[1.25, 1.25, 4.75]]))
    masked = mask_scores(scores, VALID)  # eqs. 6-7
    assert masked[0, :2].tolist() == [1.25, 1.25] and masked[0, 2] == float("-inf")
    w = attn_weights(masked)  # eq. 8: two equal scores -> 1/2 each, padding exactly 0
    assert w.tolist() == [[0.5, 0.5, 0.0]]
    assert attn_pool(H, w).tolist() == [[0.5, 1.0]]  # eq. 9: (1,0)/2 + (0,2)/2


def test_softmax_with_unequal_scores():
    s = torch.tensor([[0.0, math.log(3.0), float("-inf")]])
    assert torch.allclose(attn_weights(s), torch.tensor([[0.25, 0.75, 0.0]]))


def test_all_masked_row_is_zeros_not_nan():
    s = mask_scores(torch.randn(2, 4), torch.tensor([[False] * 4, [True, False, True, False]]))
    w = attn_weights(s)
    assert not torch.isnan(w).any()
    assert w[0].tolist() == [0.0] * 4 and torch.isclose(w[1].sum(), torch.tensor(1.0))


def test_attn_pooling_module_padding_weight_exactly_zero_and_grads():
    torch.manual_seed(0)
    pool = AttnPooling(hidden=8, mlp_hidden=4)
    h = torch.randn(3, 5, 8, requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    pooled, w = pool(h, valid)
    assert pooled.shape == (3, 8) and w.shape == (3, 5)
    assert (w[~valid] == 0).all() and torch.allclose(w[:2].sum(-1), torch.ones(2))
    assert (pooled[2] == 0).all()
    pooled.sum().backward()
    assert torch.isfinite(h.grad).all() and all(torch.isfinite(p.grad).all() for p in pool.parameters())


def test_mean_pooling():
    pooled, w = MeanPooling()(H, VALID)
    assert w.tolist() == [[0.5, 0.5, 0.0]] and pooled.tolist() == [[0.5, 1.0]]


@pytest.mark.parametrize("valid, last", [([1, 1, 0, 0], 1), ([0, 0, 1, 1], 3), ([0, 1, 1, 0], 2)])
def test_last_pooling_right_left_padding(valid, last):
    h = torch.arange(8, dtype=torch.float32).reshape(1, 4, 2)
    pooled, w = LastPooling()(h, torch.tensor([valid], dtype=torch.bool))
    assert w[0].tolist() == [1.0 if i == last else 0.0 for i in range(4)]
    assert pooled[0].tolist() == h[0, last].tolist()


def test_last_pooling_all_masked_row():
    pooled, w = LastPooling()(torch.ones(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool))
    assert (w == 0).all() and (pooled == 0).all()


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_classifier_head_shapes_grads_bf16(pooling):
    torch.manual_seed(0)
    head = ClassifierHead(hidden=16, num_classes=3, pooling=pooling, mlp_hidden=8)
    h = torch.randn(2, 6, 16, dtype=torch.bfloat16, requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    logits, w = head(h, valid)
    assert logits.shape == (2, 3) and w.shape == (2, 6) and logits.dtype == torch.float32
    loss = classification_loss(logits, torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss) and h.grad is not None and torch.isfinite(h.grad.float()).all()
    assert all(p.grad is not None for p in head.parameters())


def test_classifier_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'cls'"):
        ClassifierHead(8, 2, pooling="cls")


def test_class_weighted_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    cw = torch.tensor([1.0, 3.0])

    def nll(row, y):
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    expect = (1 * nll(rows[0], 0) + 3 * nll(rows[1], 1) + 1 * nll(rows[2], 0)) / (1 + 3 + 1)
    assert classification_loss(logits, labels, cw).item() == pytest.approx(expect, rel=1e-6)
    plain = (nll(rows[0], 0) + nll(rows[1], 1) + nll(rows[2], 0)) / 3
    assert classification_loss(logits, labels).item() == pytest.approx(plain, rel=1e-6)
    # unlabelled (-1) rows do not count
    with_unlabelled = classification_loss(torch.cat([logits, logits[:1]]), torch.tensor([0, 1, 0, -1]))
    assert with_unlabelled.item() == pytest.approx(plain, rel=1e-6)


def test_token_weights_to_frames_joints_numpy_and_torch():
    w = [0.1, 0.2, 0.3, 0.15, 0.05, 0.2]
    fi = [-1, 0, 0, 1, 1, -1]
    ji = [-1, 0, 1, 0, 1, -1]
    fw, jw = token_weights_to_frames_joints(np.array(w), fi, ji, num_frames=3, num_joints=2)
    assert np.allclose(fw, [0.5, 0.2, 0.0]) and np.allclose(jw, [0.35, 0.35])
    fwt, jwt = token_weights_to_frames_joints(torch.tensor(w), torch.tensor(fi), torch.tensor(ji), 3, 2)
    assert torch.allclose(fwt, torch.tensor([0.5, 0.2, 0.0])) and torch.allclose(jwt, torch.tensor([0.35, 0.35]))
