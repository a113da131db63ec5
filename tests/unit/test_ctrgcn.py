"""CTR-GCN: shapes (2D/3D, 1-2 bodies), per-channel refined topologies, the paper's size, a short run on real MSR
clips that beats chance, the folder round trip; and the ensemble evaluation (scores = sum of the members'
probabilities, mismatched members refused; an ensemble folder from `actionllm ensemble`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actionllm.components.clips import ClipCollate, object_column, prepare_clip
from actionllm.evaluation import evaluate
from actionllm.inference import cut, sequence_scores, softmax
from actionllm.methods import get_recipe, load_recognizer
from actionllm.methods.ctrgcn.model import CTRGCNRecognizer
from actionllm.methods.stgcn.model import STGCNRecognizer
from actionllm.skeleton.formats import get_reader
from actionllm.skeleton.layouts import get_layout
from actionllm.skeleton.shards import read_shards, write_shards
from training.config import TrainConfig

ACTIONLLM = str(Path(sys.executable).with_name("actionllm"))


@pytest.mark.parametrize("layout,dims,bodies", [("kinect20", 3, 1), ("coco17", 2, 2), ("ntu25", 3, 2)])
def test_shapes_2d_3d_and_several_bodies(layout, dims, bodies):
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, ["a", "b", "c"], layout, dims)
    v = get_layout(layout).num_joints
    out = rec(torch.randn(2, bodies, 16, v, dims), torch.ones(2, bodies), labels=torch.tensor([0, 2]))
    assert out["logits"].shape == (2, 3)
    assert out["features"].shape == (2, bodies, 128, 4, v)  # small preset: two temporal stride-2 blocks
    out["loss"].backward()
    gcn = rec.net.blocks[1].gcn
    assert gcn.alpha.grad is not None and gcn.A.grad is not None  # refinement scale and shared topology learn


def test_zero_padded_bodies_do_not_change_the_prediction():
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, ["a", "b"], "coco17", 2).eval()
    one = torch.randn(2, 1, 16, 17, 2)
    a = rec(one, torch.ones(2, 1))["logits"]
    b = rec(torch.cat([one, torch.zeros_like(one)], 1), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))["logits"]
    torch.testing.assert_close(a, b)


def test_refined_topology_differs_per_channel_and_per_sample():
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, ["a", "b"], "kinect20", 3).eval()
    gcn = rec.net.blocks[1].gcn
    x = torch.randn(2, 32, 16, 20)
    with torch.no_grad():
        r0 = gcn.topology(x)  # alpha starts at 0: every channel has the shared topology A
        assert r0.shape == (2, 3, 32, 20, 20)
        torch.testing.assert_close(r0, gcn.A[None, :, None].expand_as(r0))
        gcn.alpha.fill_(0.5)
        r = gcn.topology(x)
    assert not torch.allclose(r[:, :, 0], r[:, :, 1])  # channel 0 and channel 1 aggregate differently
    assert not torch.allclose(r[0], r[1])  # and the refinement depends on the sample
    q = gcn.subsets[0].correlation(x)
    torch.testing.assert_close(r[:, 0], gcn.A[0] + 0.5 * q)  # R = A + alpha * Q


def test_the_fused_graph_unit_equals_the_sum_over_subsets():
    """CTRGraphConv.forward computes every subset at once; it must equal the paper's sum of CTR-GC_k."""
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, ["a", "b"], "kinect20", 3).eval()
    for block in (rec.net.blocks[0], rec.net.blocks[2]):  # the input block (C_in 3, 8 correlation channels) and one
        gcn = block.gcn
        x = torch.randn(2, gcn.subsets[0].transform.in_channels, 16, 20)
        with torch.no_grad():
            gcn.alpha.fill_(0.7)
            torch.nn.init.normal_(gcn.bn.weight)
            summed = sum(g(x, a, gcn.alpha) for g, a in zip(gcn.subsets, gcn.A, strict=True))
            expected = torch.relu(gcn.bn(summed) + gcn.down(x))
            torch.testing.assert_close(gcn(x), expected, rtol=1e-4, atol=1e-5)


def branchwise_mstcn(cin: int, cout: int, stride: int) -> torch.nn.ModuleList:
    """The multi-scale temporal unit written as the paper's code has it, one module per branch (k 5, d 1, 2)."""
    nn = torch.nn
    w = [cout // 4 + (1 if i < cout % 4 else 0) for i in range(4)]

    def opening(c: int) -> list:
        return [nn.Conv2d(cin, c, 1), nn.BatchNorm2d(c), nn.ReLU()]

    branches = nn.ModuleList([
        nn.Sequential(*opening(w[0]), nn.Conv2d(w[0], w[0], (5, 1), (stride, 1), (2, 0), (1, 1)), nn.BatchNorm2d(w[0])),
        nn.Sequential(*opening(w[1]), nn.Conv2d(w[1], w[1], (5, 1), (stride, 1), (4, 0), (2, 1)), nn.BatchNorm2d(w[1])),
        nn.Sequential(*opening(w[2]), nn.MaxPool2d((3, 1), (stride, 1), (1, 0)), nn.BatchNorm2d(w[2])),
        nn.Sequential(nn.Conv2d(cin, w[3], 1, (stride, 1)), nn.BatchNorm2d(w[3]))])
    for m in branches.modules():  # statistics and affine terms that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                torch.nn.init.normal_(t)
            torch.nn.init.uniform_(m.running_var, 0.5, 2.0)
    return branches


@pytest.mark.parametrize("cin, cout, stride", [(32, 32, 1), (32, 64, 2), (64, 66, 1)])
def test_the_stacked_temporal_unit_equals_its_branches(cin, cout, stride):
    """MultiScaleTemporalConv stacks its branches' convs and BNs; loaded from a branch-per-module state dict (the
    earlier layout), it gives the concatenated branches' output, in eval and in train mode (batch statistics)."""
    from actionllm.methods.ctrgcn.model import MultiScaleTemporalConv

    torch.manual_seed(0)
    branches = branchwise_mstcn(cin, cout, stride)
    unit = MultiScaleTemporalConv(cin, cout, 5, stride)
    unit.load_state_dict({f"branches.{k}": v for k, v in branches.state_dict().items()})
    x = torch.randn(4, cin, 16, 20)
    for train in (False, True):
        branches.train(train), unit.train(train)
        with torch.no_grad():
            torch.testing.assert_close(unit(x), torch.cat([b(x) for b in branches], 1), rtol=1e-4, atol=1e-5)
    running = torch.cat([branches[i][4].running_mean for i in range(3)] + [branches[3][1].running_mean])
    torch.testing.assert_close(unit.bn.running_mean, running)  # train mode updated the same statistics


def test_standard_preset_is_the_papers_ten_blocks_and_size():
    rec = CTRGCNRecognizer({"preset": "standard"}, ["a"] * 60, "ntu25", 3)
    assert len(rec.net.blocks) == 10
    assert [b.gcn.bn.num_features for b in rec.net.blocks] == [64] * 4 + [128] * 3 + [256] * 3
    tcn = rec.net.blocks[0].tcn
    assert len(tcn.widths) == 4 and [c.dilation for c in tcn.dilated] == [(1, 1), (2, 1)]  # dilations 1, 2 + max + 1x1
    n = sum(p.numel() for p in rec.net.parameters())
    assert 1.40e6 < n < 1.50e6  # the paper: 1.46M parameters on NTU
    small = CTRGCNRecognizer({}, ["a"] * 20, "kinect20", 3)
    assert sum(p.numel() for p in small.net.parameters()) < 0.3e6


def test_recipe_registry_and_training_defaults():
    r = get_recipe("ctrgcn")
    assert r.recognizer_cls() is CTRGCNRecognizer
    tc = TrainConfig(recipe="ctrgcn", data="d", output="o")
    assert (tc.optimizer, tc.lr, tc.batch_size) == ("sgd", 0.1, 16)
    with pytest.raises(ValueError, match="odd"):
        r.config({"temporal_kernel": 4})


def msr_split(data_root, classes: tuple[int, ...], frames: int):
    """Clips of some MSR Action3D classes, cross-subject: odd subjects train, even subjects test."""
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    cfg = get_recipe("ctrgcn").config({"clip": {"frames": frames}}).clip
    parts: dict[bool, tuple[list, list]] = {True: ([], []), False: ([], [])}
    for f in reader.files():
        if int(f.name[1:3]) - 1 not in classes:
            continue
        for seq in reader.read_file(f):
            xs, ys = parts[int(seq.subject) % 2 == 1]
            xs.append(prepare_clip(seq.joints, cfg, seq.layout)[0])
            ys.append(classes.index(seq.label))
    return [(ClipCollate()({"x": object_column(xs)})["x"], torch.tensor(ys)) for xs, ys in parts.values()]


def test_a_short_run_on_real_msr_clips_beats_chance(data_root):
    classes = (0, 10, 12, 13)  # high arm wave, two hand wave, bend, forward kick: chance 25%
    (xtr, ytr), (xte, yte) = msr_split(data_root, classes, frames=16)
    assert len(ytr) > 30 and len(yte) > 30
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, [str(c) for c in classes], "kinect20", 3, seed=0)
    opt = torch.optim.SGD(rec.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    rec.train()
    for _ in range(40):
        idx = torch.randperm(len(ytr), generator=g)[:16]
        loss = rec(xtr[idx], labels=ytr[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    rec.eval()
    with torch.no_grad():
        acc = float((rec(xte)["logits"].argmax(1) == yte).float().mean())
    assert acc > 0.5, acc  # held-out subjects, chance 0.25


def test_save_load_predicts_identically_with_explanations(tmp_path):
    rec = CTRGCNRecognizer({"clip": {"frames": 16}}, ["a", "b", "c"], "florence15", 3, seed=1)
    with torch.no_grad():  # move BatchNorm statistics and alpha off their defaults so that loading them matters
        rec.train()
        rec(torch.randn(8, 1, 16, 15, 3) * 3 + 1, torch.ones(8, 1))
        for b in rec.net.blocks:
            b.gcn.alpha.fill_(0.3)
    rng = np.random.default_rng(4)
    wins = [rng.normal(size=(1, n, 15, 3)).astype(np.float32) for n in (12, 40, 25)]
    before = rec.predict_windows(wins)
    folder = rec.save(tmp_path / "rec")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["recipe"] == "ctrgcn" and meta["parameters"] == sum(p.numel() for p in rec.net.parameters())
    again = load_recognizer(folder)
    assert isinstance(again, CTRGCNRecognizer)
    after = again.predict_windows(wins)
    np.testing.assert_allclose(before["probabilities"], after["probabilities"], rtol=1e-5, atol=1e-6)
    for fw, w in zip(after["frame_weights"], wins, strict=True):
        assert fw.shape == (w.shape[1],) and fw.sum() == pytest.approx(1.0, abs=1e-4) and (fw >= 0).all()
    assert after["joint_weights"][0].shape == (15,)


# --- ensembles -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def msr_shards(data_root, tmp_path_factory):
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seqs = [s for f in reader.files()[::40] for s in reader.read_file(f)]  # 15 sequences, several classes
    folder = tmp_path_factory.mktemp("msr-shards")
    write_shards(seqs, folder, split="test")
    return folder, reader.class_names


def randomised(rec, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rec.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return rec


def test_ensemble_scores_are_the_sum_of_the_members_probabilities(msr_shards, tmp_path):
    data, names = msr_shards
    a = randomised(CTRGCNRecognizer({"clip": {"frames": 8}}, names, "kinect20", 3, seed=1), 1).save(tmp_path / "a")
    b = randomised(STGCNRecognizer({"clip": {"frames": 8, "window": 20, "stride": 10}}, names, "kinect20", 3, seed=2),
                   2).save(tmp_path / "b")
    result = evaluate([str(a), str(b)], str(data), report=str(tmp_path / "report"))
    members = [load_recognizer(a), load_recognizer(b)]
    expected, labels = [], []
    for seq, _ in read_shards(data, split="test"):
        per = [sequence_scores(m.predict_windows(cut(seq, m.window, m.stride)[0])["probabilities"]) for m in members]
        expected.append(softmax(per[0]) + softmax(per[1]))
        labels.append(seq.label)
    expected = np.stack(expected)
    assert result["top1"] == pytest.approx(float((expected.argmax(1) == np.array(labels)).mean()))
    conf = np.zeros((len(names), len(names)), int)
    np.add.at(conf, (np.array(labels), expected.argmax(1)), 1)
    assert result["confusion"] == conf.tolist()
    assert result["recipe"] == "ctrgcn+stgcn" and result["checkpoint"] == [str(a), str(b)]
    assert [m["recipe"] for m in result["ensemble"]["members"]] == ["ctrgcn", "stgcn"]
    assert json.loads((tmp_path / "report" / "report.json").read_text())["ensemble"]["rule"].startswith("sum")
    single = evaluate(str(a), str(data))  # one member: its report as before (a path, mean window log-probability)
    assert single["checkpoint"] == str(a) and "ensemble" not in single
    assert single["top1"] == result["ensemble"]["members"][0]["top1"]


def test_ensemble_scores_function():
    from actionllm.evaluation import ensemble_scores

    s1, s2 = np.log([0.7, 0.2, 0.1]), np.log([0.1, 0.3, 0.6])
    np.testing.assert_allclose(ensemble_scores([s1, s2]), [0.8, 0.5, 0.7])
    np.testing.assert_array_equal(ensemble_scores([s1]), s1)


def test_ensemble_refuses_mismatched_members(msr_shards, tmp_path):
    data, names = msr_shards
    a = CTRGCNRecognizer({"clip": {"frames": 8}}, names, "kinect20", 3).save(tmp_path / "a")
    other = CTRGCNRecognizer({"clip": {"frames": 8}}, names[::-1], "kinect20", 3).save(tmp_path / "order")
    with pytest.raises(ValueError, match=r"ensemble: .*order has class names \[0\] = 'pickup and throw' but .*/a has "
                       r"'high arm wave' \(members must recognise the same classes, in the same order"):
        evaluate([str(a), str(other)], str(data))
    fewer = CTRGCNRecognizer({"clip": {"frames": 8}}, names[:5], "kinect20", 3).save(tmp_path / "fewer")
    with pytest.raises(ValueError, match=r"fewer has class names 5 entries but .* has 20"):
        evaluate([str(a), str(fewer)], str(data))
    layout = CTRGCNRecognizer({"clip": {"frames": 8}}, names, "ntu25", 3).save(tmp_path / "layout")
    with pytest.raises(ValueError, match=r"ensemble: .*layout has layout 'ntu25' but .* has 'kinect20'"):
        evaluate([str(a), str(layout)], str(data))


def test_an_ensemble_folder_evaluates_as_the_multi_checkpoint_ensemble(msr_shards, tmp_path):
    """`actionllm ensemble` joins whole-sequence members into one folder; it evaluates to the same top-1 and
    confusion as `evaluate --checkpoint A --checkpoint B` (the mean of the probabilities, i.e. their sum / 2)."""
    data, names = msr_shards
    a = randomised(CTRGCNRecognizer({"clip": {"frames": 8}}, names, "kinect20", 3, seed=1), 1).save(tmp_path / "a")
    b = randomised(STGCNRecognizer({"clip": {"frames": 8, "modality": "bone"}}, names, "kinect20", 3, seed=2),
                   2).save(tmp_path / "b")
    proc = subprocess.run([ACTIONLLM, "ensemble", "--member", str(a), "--member", str(b), "--output",
                           str(tmp_path / "ens")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "ens"
    meta = json.loads((folder / "config.json").read_text())
    assert meta["recipe"] == "ensemble" and meta["member_recipes"] == ["ctrgcn", "stgcn"]
    assert (folder / meta["config"]["members"][1] / "config.json").is_file()  # the members travel with it
    joined, separate = evaluate(str(folder), str(data)), evaluate([str(a), str(b)], str(data))
    assert joined["recipe"] == "ensemble" and joined["confusion"] == separate["confusion"]
    assert joined["top1"] == separate["top1"]
    ens = load_recognizer(folder)
    seq = next(iter(read_shards(data, split="test")))[0]
    wins = cut(seq, ens.window, ens.stride)[0]
    expected = np.mean([m.predict_windows(wins)["probabilities"] for m in ens.members], axis=0)
    np.testing.assert_allclose(ens.predict_windows(wins)["probabilities"], expected, rtol=1e-5)
    again = subprocess.run([ACTIONLLM, "ensemble", "--member", str(a), "--member", str(b), "--output", str(folder)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_an_ensemble_folder_refuses_members_that_cut_differently(msr_shards, tmp_path):
    from actionllm.ensemble import write_ensemble

    _, names = msr_shards
    a = CTRGCNRecognizer({"clip": {"frames": 8}}, names, "kinect20", 3).save(tmp_path / "a")
    b = STGCNRecognizer({"clip": {"frames": 8, "window": 20, "stride": 10}}, names, "kinect20", 3).save(tmp_path / "b")
    with pytest.raises(ValueError, match=r"ensemble: .*/b has window 20 but .*/a has None .*same windows"):
        write_ensemble([a, b], tmp_path / "ens", load_recognizer)
    assert not (tmp_path / "ens").exists()  # nothing written
    with pytest.raises(ValueError, match="at least two members"):
        write_ensemble([a], tmp_path / "one", load_recognizer)
