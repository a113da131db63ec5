"""Joint2Text (Action-JointsLLM, sec. 4.1): a skeleton window -> named-coordinate text + prompt -> token ids.

Three steps, as the paper: sliding sampling (the caller cuts windows of N frames with
`transforms.sliding_windows`), optimisation (eqs. 1-4: map to COCO-17,
drop the 5 face joints, add the body centre, normalise per frame) and reconstruction (one line of text per
frame, joint names each followed by its coordinates, the task prompt at the end). Pure numpy; the
tokenizer (any HF *fast* tokenizer, for its offset mapping) is passed in, no model is loaded here.

The text of a 2D window (13 joints, 2 decimals) looks like

    Frame 1: left shoulder (0.12, -0.50), right shoulder (-0.31, -0.48), ..., body centre (-0.10, -0.49)
    Frame 2: ...
    Question: Which action is this person performing?

`format="compact"` (beyond the paper, issue 18; compact.py) writes the joint names once and each normalised
coordinate as one digit of a 0-9 grid: ~4x fewer tokens, the same frame/joint token maps.

Missing joints: with joint_set="coco13" every registered layout fills the 12 limb joints by name (the only
stand-in, nose <- head/face, is dropped with the face), so no joint is missing after optimisation. Joints a
pose estimator scored 0 are written as they are (the paper has no missing-joint rule either).
"""

from __future__ import annotations

import functools
import json
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from ...components.backbone import BackboneConfig, load_tokenizer
from ...skeleton.layouts import COCO17, coco17_mapping, get_layout
from ...skeleton.sequence import SkeletonSequence
from ...skeleton.transforms import add_body_centre, drop_face, normalise_frames, to_coco17
from . import compact


class Joint2TextConfig(BaseModel):
    window: int = Field(18, ge=1)  # sec. 5.1 / Table 3: N in {18, 24} (72 = the whole sample, Table 4); best 18
    stride: int | None = Field(9, ge=1)  # sec. 5.1: 'stride = N/2' beats 'no stride' (None = no stride = N)
    precision: int = Field(2, ge=0, le=8)  # not specified in the paper: decimals written; 2 (the ~3.4k-token figure)
    joint_set: Literal["coco13", "layout"] = "coco13"  # sec. 4.1.2: COCO-17 - 5 face joints + body centre = 13
    normalise: bool = True  # sec. 4.1.2, eqs. 2-4: zero mean / unit variance per frame
    eps: float = 1e-6  # eq. 3's small constant; not specified in the paper: its value
    prompt: str = "Question: Which action is this person performing?"  # not specified in the paper (multi-class)
    binary_prompt: str = "Question: Does this person have Parkinson's disease?"  # sec. 4.1.3, verbatim
    max_tokens: int | None = Field(None, ge=1)  # token budget per window; None = the backbone's context
    # not specified in the paper (beyond it, issue 18): "paper" = its text, byte for byte; "compact" = names once
    # in a header + grid cells (compact.py): 3,385 -> 871 SmolLM2 tokens per N=18 COCO-13 2D window
    format: Literal["paper", "compact"] = "paper"
    # not specified in the paper (compact only): levels per axis. 10 = one digit per value = one token: measured,
    # SmolLM2's (and Qwen2.5's) pre-tokenizer splits digits one by one, so a 0-99 grid costs 2 tokens per value
    grid: int = Field(10, ge=2, le=100)
    # not specified in the paper (compact only): the grid covers [-clip, clip] of the eqs. 2-4 coordinates (zero
    # mean, unit variance per frame), values beyond are clipped to the end cells. No coco13 value can pass
    # sqrt(13 - 1) = 3.46; measured beyond 3.0: 0.7% of synthetic-gait x, 0.1% of MSR Action3D z (0 for the rest)
    clip: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _compact_needs_normalised(self):
        if self.format == "compact" and not self.normalise:
            raise ValueError("format='compact' needs normalise=True: its grid covers normalised coordinates "
                             f"[-{self.clip}, {self.clip}], raw ones would all clip")
        return self


def human_name(joint: str) -> str:
    """'left_shoulder' -> 'left shoulder' (names carry the LLM's anatomy knowledge, sec. 4.1.4)."""
    return joint.replace("_", " ")


class Joint2Text:
    """The Joint2Text bridge for one source layout and dimensionality."""

    def __init__(self, cfg: Joint2TextConfig | None = None, layout: str = "coco17", dims: int = 2):
        self.cfg = cfg or Joint2TextConfig()
        self.source = get_layout(layout)
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.dims = dims
        if self.cfg.joint_set == "coco13":
            mapping = coco17_mapping(self.source)
            lost = [j for j in COCO17.joints if j not in COCO17.face and mapping[j] is None]
            if lost:
                raise ValueError(f"layout {layout!r} cannot fill coco13 joints {lost}")
        probe = self._sequence(np.zeros((1, self.source.num_joints, dims), np.float32))
        self.out_layout = self._optimise_seq(probe).layout
        self.joint_names: tuple[str, ...] = get_layout(self.out_layout).joints
        self.joint_labels: tuple[str, ...] = tuple(human_name(j) for j in self.joint_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def prompt(self, binary: bool = False) -> str:
        return self.cfg.binary_prompt if binary else self.cfg.prompt

    # --- optimisation (sec. 4.1.2) ---------------------------------------------------------------------
    def _sequence(self, joints: np.ndarray) -> SkeletonSequence:
        joints = np.asarray(joints, np.float32)
        if joints.ndim == 4:
            joints = joints[0]  # our choice (not specified in the paper, single-subject gait): body 0 only
        if joints.ndim != 3 or joints.shape[1:] != (self.source.num_joints, self.dims):
            raise ValueError(f"joints must be [T, {self.source.num_joints}, {self.dims}] (or [M, T, V, C]) "
                             f"for layout {self.source.name!r}, got shape {joints.shape}")
        return SkeletonSequence("joint2text", self.source.name, joints)

    def _optimise_seq(self, seq: SkeletonSequence) -> SkeletonSequence:
        if self.cfg.joint_set == "coco13":
            seq = to_coco17(seq)
        return add_body_centre(drop_face(seq))  # eq. 1 on raw coordinates, before normalising

    def optimise(self, joints: np.ndarray) -> np.ndarray:
        """[T, V, C] (or [M, T, V, C]) in the source layout -> [T, V', C]: eqs. 1-4 (centre, then normalise
        every joint of the frame, the centre included)."""
        out = self._optimise_seq(self._sequence(joints)).joints[0]
        return normalise_frames(out, self.cfg.eps) if self.cfg.normalise else out

    # --- reconstruction (sec. 4.1.3) -------------------------------------------------------------------
    def _coord(self, x: float) -> str:
        return f"{round(float(x), self.cfg.precision) + 0.0:.{self.cfg.precision}f}"  # + 0.0: no '-0.00'

    def frame_text(self, frame_idx: int, coords: np.ndarray) -> str:
        """One frame's line: 'Frame {frame_idx + 1}: name (x, y), name (x, y), ...\\n' (compact: 'Frame 1: 35 27 ...')."""
        if self.cfg.format == "compact":
            return compact.frame_line(frame_idx, compact.quantise(coords, self.cfg.grid, self.cfg.clip), self.cfg.grid)
        return self._frame(frame_idx, coords, 0, None)

    def _frame(self, f: int, coords: np.ndarray, offset: int, spans: list | None) -> str:
        parts = [f"Frame {f + 1}: "]
        pos = offset + len(parts[0])
        for j, name in enumerate(self.joint_labels):
            if j:
                parts.append(", ")
                pos += 2
            piece = f"{name} ({', '.join(self._coord(v) for v in coords[j])})"
            if spans is not None:
                spans.append((f, j, pos, pos + len(piece)))
            parts.append(piece)
            pos += len(piece)
        parts.append("\n")
        return "".join(parts)

    def _build(self, coords: np.ndarray, num_frames: int, binary: bool) -> tuple[str, list]:
        """Text of the first `num_frames` optimised frames + prompt, and the (frame, joint, start, end)
        character span of every 'name (x, y)' piece (compact: of every joint's grid digits)."""
        if self.cfg.format == "compact":
            return compact.build(self.joint_labels, coords[:num_frames], self.cfg.grid, self.cfg.clip,
                                 self.prompt(binary))
        spans: list[tuple[int, int, int, int]] = []
        lines, pos = [], 0
        for f in range(num_frames):
            lines.append(self._frame(f, coords[f], pos, spans))
            pos += len(lines[-1])
        return "".join(lines) + self.prompt(binary), spans

    def text(self, joints: np.ndarray, binary: bool = False) -> str:
        """The whole window as text: frames in time order, then the prompt (sec. 4.1.3)."""
        coords = self.optimise(joints)
        return self._build(coords, len(coords), binary)[0]

    # --- tokenization --------------------------------------------------------------------------------------
    def encode(self, joints: np.ndarray, tokenizer, max_length: int | None = None, binary: bool = False) -> dict:
        """Token ids of the window's text with per-token `frame_index`/`joint_index` (-1: no joint).

        When the text does not fit `max_length` tokens, whole frames are dropped from the end and the prompt
        is kept (`truncated`, `num_frames_kept` say so).
        """
        # not specified in the paper: what to cut. At N = 72 the paper's text overflowed and lost its prompt
        # (sec. 5.2, Table 4: a clear drop); we keep the prompt and drop whole frames from the end instead.
        max_length = self._budget(tokenizer, max_length)
        coords = self.optimise(joints)
        kept = len(coords)
        text, spans = self._build(coords, kept, binary)
        enc = _tokenize(tokenizer, text)
        if len(enc["input_ids"]) > max_length:
            # first guess from the full text's offsets: the frames whose last character falls within the
            # budget left by the prompt; then step up/down (token merges at the seams can differ)
            budget = max_length - len(_tokenize(tokenizer, self.prompt(binary))["input_ids"])
            tok_end = [e for s, e in enc["offset_mapping"] if e > s]
            ends = [e for _, j, _, e in spans if j == self.num_joints - 1]
            kept = int(np.sum(np.searchsorted(tok_end, ends, side="right") <= budget))

            def fit(k: int):
                t, sp = self._build(coords, k, binary)
                en = _tokenize(tokenizer, t)
                return (t, sp, en) if len(en["input_ids"]) <= max_length else None

            best = fit(kept)
            while best is None:
                if kept == 0:
                    raise ValueError(f"the prompt alone does not fit max_length={max_length} tokens; "
                                     "raise max_length or shorten the prompt")
                kept -= 1
                best = fit(kept)
            while kept + 1 < len(coords) and (more := fit(kept + 1)) is not None:
                kept, best = kept + 1, more
            text, spans, enc = best
        frame_index, joint_index = _token_joints(text, spans, enc["offset_mapping"])
        return {"input_ids": list(enc["input_ids"]), "attention_mask": [1] * len(enc["input_ids"]),
                "frame_index": frame_index, "joint_index": joint_index,
                "truncated": kept < len(coords), "num_frames_kept": kept}

    def encode_batch(self, windows: list[np.ndarray], tokenizer, max_length: int | None = None,
                     binary: bool = False) -> dict[str, list]:
        """`encode` over windows; a dict of lists (unpadded: the collator pads)."""
        out: dict[str, list] = {}
        for w in windows:
            for k, v in self.encode(w, tokenizer, max_length, binary).items():
                out.setdefault(k, []).append(v)
        return out

    def _budget(self, tokenizer, max_length: int | None) -> int:
        limits = [x for x in (max_length, self.cfg.max_tokens) if x is not None]
        if not limits:
            ctx = getattr(tokenizer, "model_max_length", None)
            if ctx is None or ctx > 10**7:  # HF's 'unknown' sentinel is ~1e30
                raise ValueError("no token budget: pass max_length or set Joint2TextConfig.max_tokens")
            limits = [ctx]
        return int(min(limits))


def _tokenize(tokenizer, text: str) -> dict:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("Joint2Text needs a fast tokenizer (offset mapping); got "
                        f"{type(tokenizer).__name__}")
    return tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)


def _token_joints(text: str, spans: list, offsets: list) -> tuple[list[int], list[int]]:
    """Per token, the (frame, joint) whose 'name (x, y)' span holds the token's first non-space character;
    -1 for special tokens ((0, 0) offsets), frame labels, separators and the prompt."""
    char_f = np.full(len(text) + 1, -1, np.int64)
    char_j = np.full(len(text) + 1, -1, np.int64)
    for f, j, s, e in spans:
        char_f[s:e], char_j[s:e] = f, j
    frames, joints = [], []
    for s, e in offsets:
        if e <= s:  # special token
            frames.append(-1)
            joints.append(-1)
            continue
        piece = text[s:e]
        k = s + (len(piece) - len(piece.lstrip())) if piece.strip() else s
        frames.append(int(char_f[k]))
        joints.append(int(char_j[k]))
    return frames, joints


def window_tokens(bridge: Joint2TextConfig, backbone: BackboneConfig, layout: str, dims: int) -> int:
    """Tokens of one full window (bridge.window frames, every joint present) before any max_length cut: the
    token length a search space has to fit into the backbone's context."""
    key = json.dumps([bridge.model_dump(mode="json", exclude={"stride"}),  # the stride does not change a window
                      backbone.model_dump(mode="json"), layout, dims])
    return _window_tokens(key)


@functools.lru_cache(maxsize=256)
def _window_tokens(key: str) -> int:
    bridge, backbone, layout, dims = json.loads(key)
    cfg = Joint2TextConfig.model_validate(bridge)
    rng = np.random.default_rng(0)  # digits like real data (a window of zeros would tokenise shorter)
    joints = rng.uniform(-1.5, 1.5, (1, cfg.window, get_layout(layout).num_joints, dims)).astype(np.float32)
    tokenizer = load_tokenizer(BackboneConfig.model_validate(backbone))
    return len(Joint2Text(cfg, layout, dims).encode(joints, tokenizer, 10**9)["input_ids"])
