"""One sequence -> one answer: cut it into the recognizer's windows, aggregate the windows' predictions.

The same path for `actionllm evaluate`, `actionllm predict` and the Serve endpoint (services/), so that a
served answer equals the evaluated one. A sequence's class is the one with the highest mean window
log-probability (`sequence_scores`); its explanation is the windows' frame weights laid back onto the
sequence's frames (overlaps averaged) and the mean of their joint weights.
"""

from __future__ import annotations

import numpy as np

from .skeleton.sequence import SkeletonSequence
from .skeleton.transforms import sliding_windows, window_starts


def sequence_scores(window_probs: np.ndarray) -> np.ndarray:
    """Mean of the windows' log-probabilities (the sequence-level aggregation)."""
    return np.log(np.clip(window_probs, 1e-12, 1.0)).mean(axis=0)


def softmax(scores: np.ndarray) -> np.ndarray:
    p = np.exp(scores - scores.max())
    return p / p.sum()


def cut(seq: SkeletonSequence, window: int | None, stride: int | None) -> tuple[list[np.ndarray], list[int]]:
    """The windows (joints [M,N,V,C]) and their start frames."""
    return ([w.joints for w in sliding_windows(seq, window, stride)],
            window_starts(seq.num_frames, window, stride))


def aggregate(out: dict, starts: list[int], num_frames: int, window: int | None,
              class_names: list[str]) -> dict:
    """predict_windows' output for one sequence's windows -> the sequence's answer (JSON-ready)."""
    probs = np.asarray(out["probabilities"], np.float64)
    p = softmax(sequence_scores(probs))
    size = num_frames if window is None else window
    frame_sum, frame_cnt = np.zeros(num_frames), np.zeros(num_frames)
    for s, fw in zip(starts, out["frame_weights"], strict=True):
        n = min(size, num_frames - s, len(fw))
        frame_sum[s:s + n] += np.asarray(fw[:n], np.float64)
        frame_cnt[s:s + n] += 1
    frames = np.divide(frame_sum, frame_cnt, out=np.zeros_like(frame_sum), where=frame_cnt > 0)
    frames = frames / frames.sum() if frames.sum() > 0 else frames
    joints = np.mean([np.asarray(j, np.float64) for j in out["joint_weights"]], axis=0)

    def named(q: np.ndarray) -> dict[str, float]:
        return {c: float(v) for c, v in zip(class_names, q, strict=True)}

    return {
        "label": class_names[int(p.argmax())],
        "probabilities": named(p),
        "windows": [{"start": int(s), "end": int(min(s + size, num_frames)), "label": class_names[int(q.argmax())],
                     "probabilities": named(q), **({"generated": out["generated"][i]} if "generated" in out else {})}
                    for i, (s, q) in enumerate(zip(starts, probs, strict=True))],
        "explanation": {"frame_weights": frames.tolist(), "joint_weights": joints.tolist(),
                        "joint_names": list(out["joint_names"])},
    }


def recognize(rec, seq: SkeletonSequence, batch_size: int = 8, candidates: list[dict] | None = None) -> dict:
    """A loaded recognizer on one sequence, in-process (what a Serve replica computes, without Serve);
    `candidates`: classes named at request time (open-vocabulary recognizers)."""
    wins, starts = cut(seq, rec.window, rec.stride)
    extra = {} if candidates is None else {"candidates": candidates}
    out = rec.predict_windows(wins, batch_size=batch_size, **extra)
    names = rec.class_names if candidates is None else [c["name"] for c in candidates]
    return {**aggregate(out, starts, seq.num_frames, rec.window, names), "tokens": int(out.get("tokens", 0))}


def predict_items(rec, items) -> list[dict]:
    """A reader's items (sequences, or rejections) -> one answer or error per item, in order (`actionllm predict`).
    A sequence in another layout than the recognizer's stops with its name."""
    results = []
    for item in items:
        problem = getattr(item, "reason", None) if not isinstance(item, SkeletonSequence) else item.problem()
        if problem is not None:
            results.append({"sample_id": item.sample_id, "error": problem})
            continue
        if item.layout != rec.layout:
            raise ValueError(f"{item.sample_id}: layout {item.layout!r}, the recognizer reads {rec.layout!r}")
        answer = recognize(rec, item)
        results.append({"sample_id": item.sample_id, "label": answer["label"],
                        "probabilities": answer["probabilities"], "windows": len(answer["windows"])})
    return results
