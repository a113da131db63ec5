"""SUGAR stage 1 (issue 16): MIL-NCE by hand, the positives' random combination, class scores, the alignment
recognizer on real MSR Action3D (beats chance after a short run; a held-out class is recognised by its text
alone, never trained on), the folder round trip, open-vocabulary candidates, and the knowledge files."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actionllm.components import knowledge as kn
from actionllm.components.clips import ClipCollate, object_column, prepare_clip
from actionllm.methods import folder_facts, get_recipe, load_recognizer
from actionllm.methods.sugar.alignment import TextBank, class_scores, contrast_set, mil_nce, sample_positives
from actionllm.methods.sugar.model import SugarAlignRecognizer
from actionllm.recognizer_folder import serving_facts
from actionllm.skeleton.formats import get_reader

MOTION = "head {0}; hand {1}; arm {2}; hip {3}; leg {4}; foot {5}"


def bank_of(owner: list[int], visual: list[bool], emb: torch.Tensor) -> TextBank:
    bank = TextBank(len(owner), emb.shape[1], max(owner) + 1)
    bank.emb.copy_(F.normalize(emb, dim=-1))
    bank.owner.copy_(torch.tensor(owner))
    bank.visual.copy_(torch.tensor(visual))
    return bank


# --- eq. 3 by hand ---------------------------------------------------------------------------------------------
def test_mil_nce_with_one_positive_is_infonce():
    sims = torch.randn(5, 7)
    labels = torch.tensor([0, 3, 6, 2, 2])
    pos = F.one_hot(labels, 7).bool()
    loss = mil_nce(sims, pos, torch.ones_like(pos))
    assert loss == pytest.approx(float(F.cross_entropy(sims, labels)), abs=1e-6)


def test_mil_nce_with_several_positives_by_hand():
    sims = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    pos = torch.tensor([[True, True, False, False]])
    den = torch.tensor([[True, True, True, False]])  # the last text is not contrasted with
    e = np.exp([1.0, 2.0, 0.5])
    assert float(mil_nce(sims, pos, den)) == pytest.approx(-np.log((e[0] + e[1]) / e.sum()), abs=1e-6)
    w = torch.tensor([2.0])
    assert float(mil_nce(sims, pos, den, w)) == pytest.approx(-np.log((e[0] + e[1]) / e.sum()), abs=1e-6)
    with pytest.raises(ValueError, match="contrast set"):
        mil_nce(sims, pos, torch.zeros_like(den))


def test_perfect_alignment_gives_the_smallest_loss():
    torch.manual_seed(0)
    texts = torch.eye(6, 16)  # orthonormal texts: classes 0,1,2 own two texts each
    bank = bank_of([0, 0, 1, 1, 2, 2], [False] * 6, texts)
    labels = torch.tensor([1])
    pos = bank.owner[None] == labels[:, None]
    den = contrast_set(labels, pos, bank, [0, 1, 2])
    tau = 0.1

    def loss_at(z):
        return float(mil_nce(F.normalize(z, dim=-1) @ bank.emb.T / tau, pos, den))

    perfect = loss_at(bank.emb[2:4].sum(0, keepdim=True))  # equally close to both texts of class 1
    others = [loss_at(torch.randn(1, 16)) for _ in range(300)]
    assert perfect < min(others)


def test_positives_are_one_motion_text_and_visual_texts_by_chance():
    bank = bank_of([0, 0, 0, 1, 1, 1, 1], [False, False, True, False, True, True, True], torch.randn(7, 8))
    labels = torch.tensor([0, 1] * 200)
    torch.manual_seed(1)
    none = sample_positives(labels, bank, visual_p=0.0)
    assert (none & ~(bank.owner[None] == labels[:, None])).sum() == 0  # only the sample's own class
    assert ((none & ~bank.visual[None]).sum(1) == 1).all()  # exactly one motion text each
    assert (none & bank.visual[None]).sum() == 0
    every = sample_positives(labels, bank, visual_p=1.0)
    assert (every[labels == 1][:, 4:]).all() and every[labels == 0][:, 2].all()
    half = sample_positives(labels, bank, visual_p=0.5)[labels == 1][:, 4:].float().mean()
    assert 0.4 < float(half) < 0.6
    picked = none[labels == 0][:, :2].float().mean(0)  # both motion variants get drawn
    assert (picked > 0.35).all()


def test_contrast_set_leaves_out_held_out_classes_and_undrawn_own_texts():
    bank = bank_of([0, 0, 1, 1, 2], [False] * 5, torch.randn(5, 4))
    labels = torch.tensor([0])
    pos = torch.tensor([[True, False, False, False, False]])
    den = contrast_set(labels, pos, bank, classes=[0, 1])  # class 2 held out
    assert den.tolist() == [[True, False, True, True, False]]


def test_class_scores_are_log_mean_exp_over_each_class_texts():
    bank = bank_of([0, 0, 1], [False] * 3, torch.randn(3, 4))
    sims = torch.tensor([[1.0, 3.0, 2.0]])
    scores = class_scores(sims, bank)
    assert scores[0, 0] == pytest.approx(np.log((np.exp(1) + np.exp(3)) / 2), abs=1e-5)
    assert scores[0, 1] == pytest.approx(2.0, abs=1e-5)


# --- the knowledge files ----------------------------------------------------------------------------------------
def test_bundled_knowledge_covers_every_dataset_the_project_reads(data_root):
    files = kn.bundled_knowledge()
    readers = {"msr_action3d": ("msr-action3d", "msr_action3d"), "utd_mhad": ("utd-mhad", "utd_mhad_skeleton"),
               "utkinect": ("utkinect", "utkinect_action3d"), "florence3d": ("florence3d", "florence3d"),
               "jhmdb": ("jhmdb", "jhmdb_ddnet")}
    for key, (fmt, folder) in readers.items():
        names = get_reader(fmt)(data_root / folder).class_names
        k = kn.read_knowledge(files[key])
        assert list(k) == list(names), key
        for entry in k.values():
            assert len(entry.motion) >= 2 and entry.description and all(kn.motion_problem(m) is None
                                                                       for m in entry.motion)
        descriptions = [e.description for e in k.values()]
        assert len(set(descriptions)) == len(descriptions), key  # one sentence per class, none shared
    from actionllm.skeleton.formats.ntu import NTU120_NAMES
    assert list(kn.read_knowledge(files["ntu120"])) == list(NTU120_NAMES)


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    (json.dumps({"label": "x", "motion": ["head a; hand b"]}), "has 2 ';'-separated parts"),
    (json.dumps({"label": "x", "motion": [MOTION.replace("hip", "waist").format(*"abcdef")]}), "should start with 'hip'"),
    (json.dumps({"label": "", "motion": [MOTION.format(*"abcdef")]}), "'label' must be"),
    (json.dumps({"label": "x", "motion": [MOTION.format(*"abcdef")], "colour": 1}), "unknown field"),
])
def test_a_bad_knowledge_file_is_refused_naming_the_line(tmp_path, line, message):
    path = tmp_path / "k.jsonl"
    path.write_text(json.dumps({"label": "ok", "motion": [MOTION.format(*"abcdef")]}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        kn.read_knowledge(path)
    assert f"{path}:2" in str(err.value)


# --- the recognizer on real MSR Action3D ------------------------------------------------------------------------
CLASSES = ("high arm wave", "two hand wave", "bend", "forward kick", "side kick")


def msr_clips(data_root, frames: int):
    """Clips of CLASSES, cross-subject: odd subjects train, even test. -> {True: (x, y), False: (x, y)}."""
    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    clip = get_recipe("sugar").config({"clip": {"frames": frames}}).clip
    parts: dict[bool, tuple[list, list]] = {True: ([], []), False: ([], [])}
    for f in reader.files():
        for seq in reader.read_file(f):
            if seq.label_name in CLASSES:
                xs, ys = parts[int(seq.subject) % 2 == 1]
                xs.append(prepare_clip(seq.joints, clip, seq.layout)[0])
                ys.append(CLASSES.index(seq.label_name))
    return {k: (ClipCollate()({"x": object_column(xs)})["x"], torch.tensor(ys)) for k, (xs, ys) in parts.items()}


@pytest.fixture(scope="module")
def msr(data_root):
    return msr_clips(data_root, frames=16)


def short_run(rec, x, y, steps: int = 40):
    opt = torch.optim.SGD(rec.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    rec.train()
    torch.manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=g)[:16]
        loss = rec(x[idx], labels=y[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rec.eval()


@pytest.fixture(scope="module")
def trained(msr):
    """The alignment recognizer after a short run on the training subjects (shared by the tests below)."""
    rec = SugarAlignRecognizer({"clip": {"frames": 16}}, list(CLASSES), "kinect20", 3, seed=0)
    return short_run(rec, *msr[True])


def test_alignment_recognizer_beats_chance_on_real_msr(msr, trained):
    (_, ytr), (xte, yte) = msr[True], msr[False]
    assert len(ytr) > 40 and len(yte) > 40
    with torch.no_grad():
        acc = float((trained(xte)["logits"].argmax(1) == yte).float().mean())
    assert acc > 0.5, acc  # held-out subjects, chance 0.2


def test_folder_round_trip_needs_no_text_encoder_and_predicts_identically(trained, tmp_path):
    rec = trained
    rng = np.random.default_rng(0)
    wins = [rng.normal(size=(1, n, 20, 3)).astype(np.float32) for n in (14, 30)]
    before = rec.predict_windows(wins)
    folder = rec.save(tmp_path / "rec")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["stage"] == "align" and [k["label"] for k in meta["knowledge"]] == list(CLASSES)
    assert meta["config"]["knowledge"].endswith("msr_action3d.jsonl")  # which file, resolved when built
    assert serving_facts(meta) == {"input": "skeleton", "open_vocabulary": True}  # the ingress takes candidates
    assert folder_facts({k: v for k, v in meta.items() if k != "serving"}) == serving_facts(meta)
    again = load_recognizer(folder)
    assert isinstance(again, SugarAlignRecognizer) and again._text_encoder is None
    after = again.predict_windows(wins)
    np.testing.assert_allclose(before["probabilities"], after["probabilities"], rtol=1e-5, atol=1e-6)
    for fw, w in zip(after["frame_weights"], wins, strict=True):
        assert fw.shape == (w.shape[1],) and fw.sum() == pytest.approx(1.0, abs=1e-4)
    assert again._text_encoder is None  # known classes: answered from the saved text bank


def test_open_vocabulary_candidates_change_the_answer(msr, trained):
    rec = trained
    x, y = msr[False]
    kick = [i for i in range(len(y)) if CLASSES[int(y[i])] == "forward kick"][:6]
    wins = [x[i, :1].numpy() for i in kick]  # body 0 of each clip, as windows [M, N, V, C]
    full = rec.predict_windows(wins)["probabilities"]
    two = rec.predict_windows(wins, candidates=[{"name": "forward kick"}, {"name": "bend"}])["probabilities"]
    assert two.shape == (6, 2)
    # known classes keep their knowledge texts: the answer is the full one restricted to them
    sub = full[:, [CLASSES.index("forward kick"), CLASSES.index("bend")]]
    np.testing.assert_allclose(two, sub / sub.sum(1, keepdims=True), atol=1e-5)
    new = rec.predict_windows(wins, candidates=[{"name": "bend"}, {"name": "squat", "texts": ["a person squats"]}])
    assert new["probabilities"].shape == (6, 2) and not np.allclose(two, new["probabilities"])
    assert len(rec._candidate_banks) == 2  # embedded once per candidate set
    long = [{"name": "a", "texts": ["t"] * 9}, {"name": "b"}]
    for bad, message in [([], "at least two"), ([{"name": "a"}], "at least two"), ([{"name": ""}, {"name": "b"}],
                         "non-empty string"), ([{"name": "a"}, {"name": "a"}], "named twice"),
                         ([{"name": f"c{i}"} for i in range(201)], "at most 200"), (long, r"candidates\[0\].texts")]:
        with pytest.raises(ValueError, match=message):
            rec.predict_windows(wins[:1], candidates=bad)


def test_held_out_classes_are_never_trained_on_and_the_only_answers(msr):
    rec = SugarAlignRecognizer({"clip": {"frames": 16}, "held_out": ["side kick", "two hand wave"]},
                               list(CLASSES), "kinect20", 3, seed=0)
    assert rec.candidates == [1, 4] and rec.train_candidates == [0, 2, 3]
    x, y = msr[True]
    with torch.no_grad():
        trained_on = rec(x[:8], labels=torch.tensor([0, 2, 3, 0, 2, 3, 0, 2]))["logits"]
        answered = rec(x)["logits"]
    assert set(trained_on.argmax(1).tolist()) <= {0, 2, 3}  # training/validation: the seen classes only
    assert set(answered.argmax(1).tolist()) <= {1, 4}  # evaluation and serving: the unseen classes only


def test_missing_knowledge_is_refused_naming_the_classes(tmp_path):
    path = kn.write_knowledge(tmp_path / "k.jsonl", [kn.ClassKnowledge("bend", (MOTION.format(*"abcdef"),))])
    with pytest.raises(ValueError, match=r"no entry for class\(es\) \['hop'\]"):
        SugarAlignRecognizer({"knowledge": str(path)}, ["bend", "hop"], "kinect20", 3)


def test_classes_no_file_covers_train_on_texts_from_their_names(msr, tmp_path, caplog):
    """No knowledge file for the classes: `names` (said in one line), texts templated around each name; the align
    stage still learns (held-out subjects), and its folder keeps the templated texts and loads them back."""
    with caplog.at_level("INFO", logger="actionllm.knowledge"):
        cfg = get_recipe("sugar").config({}).for_data(["hop", "skip"])
    assert cfg.knowledge == kn.NAMES and "names alone" in caplog.text and "hop, skip" in caplog.text
    entries = kn.names_knowledge(["hop"])
    assert all("hop" in t for t in entries[0].texts) and "hop" in entries[0].description
    rec = SugarAlignRecognizer({"clip": {"frames": 16}, "knowledge": "names"}, list(CLASSES), "kinect20", 3, seed=0)
    short_run(rec, *msr[True])
    xte, yte = msr[False]
    with torch.no_grad():
        acc = float((rec(xte)["logits"].argmax(1) == yte).float().mean())
    assert acc > 0.4, acc  # held-out subjects, chance 0.2
    again = load_recognizer(rec.save(tmp_path / "names"))
    assert again.knowledge == kn.names_knowledge(list(CLASSES))


def test_evaluate_among_candidates_of_another_dataset_matched_by_name(trained, data_root, tmp_path):
    """The cross-dataset zero-shot path (P2) in miniature: the MSR-trained align recognizer evaluated on UTD-MHAD
    sequences, answering among UTD classes given by their knowledge texts; sequences are matched by class name."""
    from actionllm.evaluation import evaluate
    from actionllm.inference import recognize
    from actionllm.skeleton.prepare import prepare
    from actionllm.skeleton.shards import read_shards
    from cli.evaluate import read_candidates

    reader = get_reader("utd-mhad")(data_root / "utd_mhad_skeleton")
    picked = ("a22_", "a24_", "a27_")  # jogging, sit to stand, squat
    subset = [f for f in reader.files() if f.name.startswith(picked) and "_s1_" not in f.name]
    reader.files = lambda: subset
    shards = tmp_path / "utd"
    prepare(reader, shards, "cross-subject", val_fraction=0.0)
    folder = trained.save(tmp_path / "msr-align")
    utd = read_candidates(kn.bundled_knowledge()["utd_mhad"])
    wanted = {"jogging", "sit to stand", "squat", "walking"}  # walking has no sequence here: a distractor
    candidates = [c for c in utd if c["name"] in wanted]
    names = [c["name"] for c in candidates]  # the knowledge file's order
    result = evaluate(str(folder), str(shards), split="test", candidates=candidates)
    assert set(names) == wanted and result["class_names"] == names and result["candidates"] == names
    assert result["chance"] == 0.25
    expected = [s for s, _ in read_shards(shards, split="test")]
    assert result["sequences"] == len(expected) > 0
    rec = load_recognizer(folder)
    right = [recognize(rec, s, candidates=candidates)["label"] == s.label_name for s in expected]
    assert result["top1"] == pytest.approx(np.mean(right))
    with pytest.raises(ValueError, match="are not among the candidates"):
        evaluate(str(folder), str(shards), candidates=candidates, classes=["bend"])
    stgcn = get_recipe("stgcn").recognizer({}, ["a", "b"], "kinect20", 3).save(tmp_path / "closed")
    with pytest.raises(ValueError, match="answers among its trained classes only"):
        evaluate(str(stgcn), str(shards), candidates=candidates)


def test_tsne_map_of_test_embeddings(trained, data_root, tmp_path):
    """Fig. 5's figure: the test subjects' sequence embeddings and the class texts on a t-SNE map, with the classes'
    silhouette; the trained encoder separates the classes better than the same encoder untrained."""
    from actionllm.methods.sugar.tsne import tsne_map
    from actionllm.skeleton.shards import write_shards

    reader = get_reader("msr-action3d")(data_root / "msr_action3d")
    seqs = [s.with_(label=CLASSES.index(s.label_name)) for f in reader.files() for s in reader.read_file(f)
            if s.label_name in CLASSES and int(s.subject) % 2 == 0]
    write_shards(seqs, tmp_path / "shards", split="test")
    out = tsne_map(trained, str(tmp_path / "shards"), tmp_path / "tsne.png", perplexity=10)
    assert (tmp_path / "tsne.png").stat().st_size > 0 and out["sequences"] == len(seqs) == len(out["points"])
    assert {p["label"] for p in out["points"]} == set(CLASSES)
    assert json.loads((tmp_path / "tsne.json").read_text())["silhouette_cosine"] == out["silhouette_cosine"]
    untrained = SugarAlignRecognizer({"clip": {"frames": 16}}, list(CLASSES), "kinect20", 3, seed=0).eval()
    before = tsne_map(untrained, str(tmp_path / "shards"), tmp_path / "before.png", perplexity=10)
    assert out["silhouette_cosine"] > before["silhouette_cosine"] + 0.05, (out["silhouette_cosine"],
                                                                          before["silhouette_cosine"])
