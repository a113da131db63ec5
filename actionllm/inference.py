"""One sequence -> one answer: cut it into the recognizer's windows, aggregate the windows' predictions.

The same path for `actionllm evaluate`, `actionllm predict` and the Serve endpoint (services/), so that a
served answer equals the evaluated one. A sequence's class is the one with the highest mean window
log-probability (`sequence_scores`); its explanation is the windows' frame weights laid back onto the
sequence's frames (overlaps averaged) and the mean of their joint weights.

Many sequences at once (`predict_many`, what `actionllm evaluate` uses): their windows go through ONE
predict_windows call, batched across sequences, and its output is split back per sequence (`split_output`).
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

    label = int(p.argmax())
    return {
        "label": class_names[label],
        "probabilities": named(p),
        "windows": [{"start": int(s), "end": int(min(s + size, num_frames)), "label": class_names[int(q.argmax())],
                     "probabilities": named(q), **({"generated": out["generated"][i]} if "generated" in out else {})}
                    for i, (s, q) in enumerate(zip(starts, probs, strict=True))],
        "explanation": {"frame_weights": frames.tolist(), "joint_weights": joints.tolist(),
                        "joint_names": list(out["joint_names"]),
                        **({"text": answer_text(out["generated"], probs, label)} if "generated" in out else {})},
    }


def answer_text(generated: list[str], probs: np.ndarray, label: int) -> str:
    """A generative recognizer's words for the whole sequence: the text of the window most sure of the sequence's
    label (display only; the label comes from the class scores)."""
    return generated[int(np.argmax(probs[:, label]))] if len(generated) else ""


SHARED_KEYS = ("joint_names",)  # predict_windows' output entries that describe all windows, not one each


def split_output(out: dict, counts: list[int]) -> list[dict]:
    """predict_windows' output for the windows of several sequences, concatenated in order (`counts[i]` windows
    of sequence i) -> one output per sequence, as if its windows had been predicted alone. Per-window entries
    (probabilities rows, frame/joint weights, generated text, action tokens, ...) are sliced; `joint_names` is
    shared; a number (`tokens`) is apportioned by window count (exact when every window costs the same, as for
    llm-ar and sugar; the shares always add up to the total)."""
    total = sum(counts)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    parts: list[dict] = [{} for _ in counts]
    for key, value in out.items():
        if key in SHARED_KEYS:
            for p in parts:
                p[key] = value
        elif isinstance(value, int | float | np.number) and not isinstance(value, bool):
            whole = isinstance(value, int | np.integer)
            cum = [(round(value * b / total) if whole else value * b / total) if total else 0 for b in bounds]
            for i, p in enumerate(parts):
                p[key] = cum[i + 1] - cum[i] if total else value
        elif hasattr(value, "__len__") and len(value) == total:
            for i, p in enumerate(parts):
                p[key] = value[bounds[i]:bounds[i + 1]]
        else:
            size = len(value) if hasattr(value, "__len__") else type(value).__name__
            raise ValueError(f"predict_windows returned {key!r} with {size} entries for {total} windows: "
                             "a per-window entry needs one per window (shared ones are named in SHARED_KEYS)")
    return parts


def predict_many(rec, window_lists: list[list[np.ndarray]], batch_size: int = 8, **extra) -> list[dict]:
    """The windows of several sequences (one list each) -> one predict_windows output per sequence: a single
    predict_windows call over all the windows (forward batches mix sequences), split back (`split_output`).
    `extra`: what the recognizer's predict_windows takes beside the windows (candidates=...)."""
    flat = [w for wins in window_lists for w in wins]
    out = rec.predict_windows(flat, batch_size=batch_size, **extra)
    return split_output(out, [len(wins) for wins in window_lists])


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


def recognize_clip(rec, clip: np.ndarray) -> dict:
    """A video recognizer (lvlm-var) on one decoded clip (uint8 [T, H, W, 3]): the label, the probabilities, the
    generated explanation, the semantic tokens and the attention over the clip's frames (JSON-ready)."""
    out = rec.predict_windows([clip], batch_size=1)
    p = np.asarray(out["probabilities"][0], np.float64)
    answer = {"label": rec.class_names[int(p.argmax())],
              "probabilities": {c: float(v) for c, v in zip(rec.class_names, p, strict=True)},
              "explanation": {"frame_weights": np.asarray(out["frame_weights"][0]).tolist()},
              "tokens": int(out.get("tokens", 0))}
    if "generated" in out:
        answer["explanation"]["text"] = out["generated"][0]
    if "semantic_tokens" in out:
        answer["semantic_tokens"] = [int(c) for c in out["semantic_tokens"][0]]
    return answer


def predict_videos(rec, paths: list) -> list[dict]:
    """Video files -> one answer or error (the reason a file cannot be read) per file, in order (`actionllm
    predict --format video`). Frames: the recognizer's count, sampled at the segments' middles."""
    from .video.decode import VideoError, read_frames

    if getattr(rec, "features_of", None) is None:
        raise ValueError(f"{rec.recipe} reads skeletons, not videos")
    results = []
    for path in paths:
        try:
            clip = read_frames(path, rec.cfg.video.frames, rec.encoder.image_size)
        except VideoError as err:
            results.append({"source": str(path), "error": err.reason})
            continue
        results.append({"source": str(path), **recognize_clip(rec, clip)})
    return results
