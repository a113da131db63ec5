"""Evaluation: sequence-level metrics and explanations of a recognizer on a shard split (`actionllm evaluate`).

A sequence is cut into the recognizer's windows and its windows' answers aggregated by the one inference path
(inference.py: `cut`, `predict_many`, `sequence_scores`) that prediction and serving use. The windows of a chunk of
sequences (and of their rotated copies) go through one predict_windows call per member, so that the forward
batches are full however few windows a sequence has (llm-ar and the GCNs read a whole sequence as one window).
Writes report.json, confusion.json and PNGs (confusion matrix, attention over frames and over joints: the paper's
Figs. 5 and 6) into the report folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from .body_figure import body_pose, plot_body  # noqa: E402
from .ensemble import check_members  # noqa: E402
from .inference import cut, predict_many, sequence_scores, softmax  # noqa: E402
from .methods import load_recognizer  # noqa: E402  (importing it registers every method)
from .recognizer_folder import check_candidates  # noqa: E402
from .skeleton.shards import Manifest, read_shards  # noqa: E402
from .skeleton.transforms import UP_AXES, rotate_view, window_starts  # noqa: E402


def macro_f1(conf: np.ndarray) -> float:
    tp = np.diag(conf).astype(float)
    prec = np.divide(tp, conf.sum(0), out=np.zeros_like(tp), where=conf.sum(0) > 0)
    rec = np.divide(tp, conf.sum(1), out=np.zeros_like(tp), where=conf.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    present = conf.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic (ties count one half)."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return None
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    k = len(class_names)
    pred = scores.argmax(1)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (labels, pred), 1)
    top5 = np.argsort(-scores, axis=1)[:, : min(5, k)]
    per_class = {class_names[i]: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None) for i in range(k)}
    out = {"sequences": int(len(labels)), "top1": float((pred == labels).mean()),
           "top5": float((top5 == labels[:, None]).any(1).mean()), "macro_f1": macro_f1(conf),
           "per_class_accuracy": per_class, "confusion": conf.tolist(), "chance": 1.0 / k}
    if k == 2:
        tp, fn, fp, tn = conf[1, 1], conf[1, 0], conf[0, 1], conf[0, 0]
        probs = np.exp(scores - scores.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        out.update({"auc": binary_auc(probs[:, 1], labels),
                    "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
                    "specificity": float(tn / (tn + fp)) if tn + fp else None})
    return out


def plot_confusion(conf: np.ndarray, class_names: list[str], path: Path) -> None:
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * k + 2), max(3.5, 0.45 * k + 1.5)))
    norm = conf / np.clip(conf.sum(1, keepdims=True), 1, None)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    for i in range(k):
        for j in range(k):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def modality(data: str) -> str:
    """What a shard folder holds ("skeleton" or "video"); a folder of shards without a manifest: skeleton."""
    try:
        return Manifest.read(data).modality
    except FileNotFoundError:
        return "skeleton"


def write_confusion(folder: Path, names: list[str], conf: np.ndarray) -> Path:
    """The report folder (created) with confusion.json and confusion.png."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "confusion.json").write_text(json.dumps({"class_names": names, "matrix": conf.tolist()}))
    plot_confusion(conf, names, folder / "confusion.png")
    return folder


def plot_explanations(expl: list[dict], class_names: list[str], joint_names: list[str], folder: Path,
                      what: str = "attention") -> list[str]:
    """Fig. 5: frame weights of a few sequences per class; Fig. 6: mean joint weights per class. `what` names
    the recognizer's kind of weight (attention for joints-llm, class activation maps for stgcn)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = plt.cm.tab10(np.arange(10))
    shown: dict[int, int] = {}
    for e in expl:
        c = e["label"]
        if shown.get(c, 0) >= 3:
            continue
        shown[c] = shown.get(c, 0) + 1
        ax.plot(e["frame_weights"], color=colors[c % 10], alpha=0.8,
                label=class_names[c] if shown[c] == 1 else None)
    ax.set_xlabel("frame in window")
    ax.set_ylabel(f"{what} weight")
    ax.set_title(f"{what} over frames (first window of 3 sequences per class)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "attention_frames.png", dpi=120)
    plt.close(fig)
    classes = sorted({e["label"] for e in expl})[:10]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(len(classes), 1)
    for i, c in enumerate(classes):
        w = np.mean([e["joint_weights"] for e in expl if e["label"] == c], axis=0)
        ax.bar(np.arange(len(joint_names)) + i * width, w, width, color=colors[c % 10], label=class_names[c])
    ax.set_xticks(np.arange(len(joint_names)) + 0.4 - width / 2, joint_names, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel(f"{what} weight")
    ax.set_title(f"{what} over joints (mean per class)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "attention_joints.png", dpi=120)
    plt.close(fig)
    return ["attention_frames.png", "attention_joints.png"]


def rotated_metrics(scores: dict[str, list[np.ndarray]], labels: np.ndarray, class_names: list[str]) -> dict:
    """Per view angle: the headline metrics of the sequences rotated by it (`evaluate --rotate`)."""
    keys = ("sequences", "top1", "top5", "macro_f1")
    return {a: {k: v for k, v in metrics(np.stack(s), labels, class_names).items() if k in keys}
            for a, s in scores.items()}


ENSEMBLE_RULE = "sum of the members' sequence probabilities (softmax of each one's mean window log-probability)"


def load_members(checkpoints: list[str], device: str = "cpu", adapter: bool = True,
                 prior_weight: float | None = None) -> list:
    """The recognizers of an ensemble, checked to recognise the same classes from the same layout. `adapter`
    False: LoRA recognizers answer with their adapter switched off (the zero-shot ablation). `prior_weight`: an
    LLM stage's fusion weight in place of its folder's (0: the LLM alone, the paper's recognizer)."""
    members = [load_recognizer(c, device=device) for c in checkpoints]
    check_members(checkpoints, members)
    if prior_weight is not None:
        for c, m in zip(checkpoints, members, strict=True):
            if not getattr(m, "has_prior", False):
                raise ValueError(f"--prior-weight: {c} ({m.recipe} {m.stage}) has no first-stage prior to weigh")
            m.cfg = m.cfg.model_copy(update={"prior_weight": float(prior_weight)})
    if not adapter:
        for c, m in zip(checkpoints, members, strict=True):
            layers = getattr(getattr(getattr(m, "llm", None), "base_model", None), "disable_adapter_layers", None)
            if layers is None:
                raise ValueError(f"--no-adapter: {c} ({m.recipe}) has no LoRA adapter to switch off")
            layers()
    return members


def prior_of(rec) -> dict:
    """An LLM stage with a first-stage prior: the fusion weight it answered with (report.json's `prior_weight`)."""
    return {"prior_weight": rec.prior_weight} if getattr(rec, "has_prior", False) else {}


def ensemble_scores(member_scores: list[np.ndarray]) -> np.ndarray:
    """One sequence's score from its members' sequence scores (`sequence_scores`): one member's as it is; several:
    the sum of their probabilities (PYSKL's multi-stream fusion sums the streams' softmax scores, equal weights)."""
    if len(member_scores) == 1:
        return member_scores[0]
    return np.sum([softmax(s) for s in member_scores], axis=0)


CHUNK = 64  # sequences whose windows one predict_windows call reads (1: one call per sequence)
CHUNK_WINDOWS = 1024  # ... and a chunk closes once its windows (rotated copies included) reach this many


def chunked(seqs, size: int, windows_of, max_windows: int = CHUNK_WINDOWS):
    """Consecutive lists of at most `size` sequences, closed early once `windows_of(seq)` adds up to max_windows
    (what is held in memory at a time stays bounded)."""
    group, held = [], 0
    for seq in seqs:
        group.append(seq)
        held += windows_of(seq)
        if len(group) >= size or held >= max_windows:
            yield group
            group, held = [], 0
    if group:
        yield group


def predict_chunk(members: list, seqs: list, angles: dict[str, float], up: str, batch_size: int,
                  extra: dict) -> tuple[list[list[dict]], dict[str, list[np.ndarray]]]:
    """A chunk of sequences -> per member, each sequence's predict_windows output; and per angle, each rotated
    sequence's fused score (`ensemble_scores`). One predict_windows call per member over the windows of all the
    chunk's sequences and of their rotated copies (`predict_many`)."""
    views = [seqs] + [[s.with_(joints=rotate_view(s.joints, s.layout, a, up)) for s in seqs] for a in angles.values()]
    # no free text: the report keeps scores and weights only, and the scores do not depend on the text
    outs = [predict_many(m, [cut(s, m.window, m.stride)[0] for view in views for s in view], batch_size,
                         **extra, **({"generate": False} if getattr(m, "writes_text", False) else {}))
            for m in members]
    n = len(seqs)
    rotated = {name: [ensemble_scores([sequence_scores(o[(v + 1) * n + i]["probabilities"]) for o in outs])
                      for i in range(n)] for v, name in enumerate(angles)}
    return [o[:n] for o in outs], rotated


def evaluate(checkpoint: str | list[str], data: str, split: str = "test", report: str | None = None,
             device: str = "cpu", limit: int | None = None, batch_size: int = 8,
             classes: list[str] | None = None, rotate: list[float] | None = None, up: str = "spine",
             candidates: list[dict] | None = None, chunk: int = CHUNK, adapter: bool = True,
             prior_weight: float | None = None) -> dict:
    """`checkpoint`: one recognizer folder, or several (an ensemble: `ensemble_scores`; explanations and window
    figures are the first member's). `classes`: evaluate only the sequences of these classes (e.g. the held-out
    ones of an unseen-class run). `rotate`: also evaluate every (3D) sequence rotated by each of these angles
    (degrees) about its vertical (`up`: see skeleton/transforms.py:up_direction) before it is cut into windows
    -> result["rotated"]. `candidates` (open-vocabulary recognizers): answer among these classes, [{"name",
    "texts"?}], instead of the trained ones; the data's sequences are matched to them by class name (another
    dataset's classes: the cross-dataset zero-shot protocol), and `classes` picks among the candidates.
    `chunk`: sequences whose windows (and rotated copies) share one predict_windows call per member, batched
    across sequences; 1 = one call per sequence (the same answers, slower). `adapter` False: LoRA recognizers
    answer with their adapter off; `prior_weight`: an LLM stage's fusion weight in place of its folder's
    (load_members)."""
    if chunk < 1:
        raise ValueError(f"chunk: at least 1 sequence per call, got {chunk}")
    if modality(data) == "video":
        single = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
        if rotate or candidates is not None or len(single) != 1:
            raise ValueError(f"{data} holds videos: --rotate, --candidates and ensembles read skeletons")
        return evaluate_video(str(single[0]), data, split, report, device, limit, batch_size, classes, adapter,
                              prior_weight)
    checkpoints = [str(checkpoint)] if isinstance(checkpoint, str | Path) else [str(c) for c in checkpoint]
    members = load_members(checkpoints, device=device, adapter=adapter, prior_weight=prior_weight)
    rec = members[0]
    window, stride = rec.window, rec.stride
    names, extra = rec.class_names, {}
    if candidates is not None:
        closed = [c for c, m in zip(checkpoints, members, strict=True) if not m.open_vocabulary]
        if closed:
            raise ValueError(f"--candidates: {closed[0]} ({rec.recipe}) answers among its trained classes only; "
                             "candidates need an open-vocabulary recognizer (sugar)")
        candidates = check_candidates(candidates)
        if classes:
            unknown = [c for c in classes if c not in [k["name"] for k in candidates]]
            if unknown:
                raise ValueError(f"--classes: {unknown} are not among the candidates")
            candidates = [k for k in candidates if k["name"] in classes]
        names, extra = [k["name"] for k in candidates], {"candidates": candidates}
    if rotate and rec.dims != 3:
        raise ValueError(f"--rotate turns 3D skeletons about their vertical; this recognizer reads {rec.dims}D "
                         f"joints (layout {rec.layout!r}), which have no view to rotate")
    if rotate and up not in UP_AXES:
        raise ValueError(f"--up {up!r}: choose one of {list(UP_AXES)}")
    angles = {f"{a:g}": float(a) for a in rotate or []}
    rotated: dict[str, list[np.ndarray]] = {a: [] for a in angles}
    keep = None
    if classes and candidates is None:
        unknown = [c for c in classes if c not in rec.class_names]
        if unknown:
            raise ValueError(f"--classes: {unknown} are not classes of this recognizer ({rec.class_names})")
        keep = {rec.class_names.index(c) for c in classes}
    scores, labels, win_correct, win_total, expl, pose = [], [], 0, 0, [], None
    member_scores: list[list[np.ndarray]] = [[] for _ in members]

    def selected():
        seen = 0
        for seq, _ in read_shards(data, split=split):
            if keep is not None and seq.label not in keep:
                continue
            if candidates is not None:  # matched by name: the data may be another dataset's
                if seq.label_name not in names:
                    continue
                seq = seq.with_(label=names.index(seq.label_name))
            if limit is not None and seen >= limit:
                return
            seen += 1
            if seq.layout != rec.layout:
                raise ValueError(f"{seq.sample_id}: layout {seq.layout!r} but the recognizer reads {rec.layout!r}")
            yield seq

    def windows_of(seq) -> int:
        return len(window_starts(seq.num_frames, window, stride)) * (1 + len(angles))

    for group in chunked(selected(), chunk, windows_of):
        outs, turned = predict_chunk(members, group, angles, up, batch_size, extra)
        for name in angles:
            rotated[name] += turned[name]
        for k, seq in enumerate(group):
            for i, o in enumerate(outs):
                member_scores[i].append(sequence_scores(o[k]["probabilities"]))
            scores.append(ensemble_scores([ms[-1] for ms in member_scores]))
            out = outs[0][k]
            pose = body_pose(seq) if pose is None else pose
            labels.append(seq.label)
            win_correct += int((out["probabilities"].argmax(1) == seq.label).sum())
            win_total += len(out["probabilities"])
            expl.append({"sample_id": seq.sample_id, "label": seq.label,
                         "frame_weights": out["frame_weights"][0].tolist(),
                         "joint_weights": out["joint_weights"][0].tolist()})
    if not labels:
        matched = f" of the candidate classes {names}" if candidates is not None else ""
        raise ValueError(f"{data}: no sequences{matched} in split {split!r}")
    scores_a, labels_a = np.stack(scores), np.asarray(labels)
    result = {"checkpoint": checkpoints[0] if len(members) == 1 else checkpoints, "data": str(data), "split": split,
              "recipe": "+".join(m.recipe for m in members),
              "window": window, "stride": stride or window, **metrics(scores_a, labels_a, names),
              "window_top1": win_correct / win_total, "windows": win_total, "class_names": names,
              **({} if adapter else {"adapter": "off"}), **prior_of(rec)}
    if len(members) > 1:
        result["ensemble"] = {"rule": ENSEMBLE_RULE, "explanations, window_top1": "the first member's",
                              "members": [{"checkpoint": c, "recipe": m.recipe, "window": m.window,
                                           "top1": float((np.stack(ms).argmax(1) == labels_a).mean())}
                                          for c, m, ms in zip(checkpoints, members, member_scores, strict=True)]}
    chosen = rec.candidates
    if candidates is not None:  # classes named for this evaluation (open vocabulary)
        result["candidates"] = names
    elif len(chosen) < len(rec.class_names):  # a recognizer choosing among some classes only (held-out)
        result["candidates"] = [rec.class_names[i] for i in chosen]
        result["chance"] = 1.0 / len(chosen)
    if classes:
        result["classes"] = list(classes)
    if angles:
        result["rotated"] = rotated_metrics(rotated, labels_a, names)
        result["rotate_up"] = up
    if report:
        folder = write_confusion(Path(report), names, np.asarray(result["confusion"]))
        what = getattr(rec, "explanation", "attention")
        pngs = ["confusion.png", *plot_explanations(expl, names, out["joint_names"], folder, what)]
        if pose is not None and plot_body(pose, rec.layout, expl, names, out["joint_names"],
                                          folder / "attention_body.png", what.split(" (")[0]):
            pngs.append("attention_body.png")
        (folder / "explanations.json").write_text(json.dumps({"joint_names": out["joint_names"], "sequences": expl}))
        result["files"] = ["report.json", "confusion.json", "explanations.json", *pngs]
        (folder / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_video(checkpoint: str, data: str, split: str = "test", report: str | None = None, device: str = "cpu",
                   limit: int | None = None, batch_size: int = 8, classes: list[str] | None = None,
                   adapter: bool = True, prior_weight: float | None = None) -> dict:
    """A video recognizer (lvlm-var) on a video shard split: each video decoded (the recognizer's frames, its
    encoder's image size, segment middles) and answered once; the same metrics and confusion figure as skeletons,
    the explanations (attention over frames, generated text, semantic tokens) in explanations.json."""
    from .video.decode import read_frames
    from .video.folder import read_video_rows

    rec = load_members([checkpoint], device=device, adapter=adapter, prior_weight=prior_weight)[0]
    if getattr(rec, "features_of", None) is None:
        raise ValueError(f"{checkpoint} ({rec.recipe}) reads skeletons; {data} holds videos")
    names = rec.class_names
    rows = [r for r in read_video_rows(data, split) if classes is None or r["label_name"] in classes]
    unknown = sorted({r["label_name"] for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{data}: classes {unknown} are not classes of this recognizer ({names})")
    rows = rows[:limit] if limit is not None else rows
    if not rows:
        raise ValueError(f"{data}: no videos in split {split!r}")
    frames, size = rec.cfg.video.frames, rec.encoder.image_size
    probs, expl = [], []
    for s in range(0, len(rows), max(batch_size, 1) * 4):
        group = rows[s:s + max(batch_size, 1) * 4]
        clips = [read_frames(r["uri"], frames, size, num_frames=r["num_frames"]) for r in group]
        out = rec.predict_windows(clips, batch_size=batch_size)
        probs.append(np.asarray(out["probabilities"]))
        for i, r in enumerate(group):
            expl.append({"sample_id": r["sample_id"], "label": names.index(r["label_name"]),
                         "frame_weights": np.asarray(out["frame_weights"][i]).tolist(),
                         "semantic_tokens": out.get("semantic_tokens", [[]] * len(group))[i],
                         **({"generated": out["generated"][i]} if "generated" in out else {})})
    scores = np.log(np.clip(np.concatenate(probs), 1e-12, 1.0))
    labels = np.asarray([names.index(r["label_name"]) for r in rows])
    tokens = [len(e["semantic_tokens"]) for e in expl]
    result = {"checkpoint": checkpoint, "data": str(data), "split": split, "recipe": rec.recipe,
              **metrics(scores, labels, names), "class_names": names, "frames": frames,
              "tokens_per_video": float(np.mean(tokens)) if any(tokens) else None,
              "codes_used": len({c for e in expl for c in e["semantic_tokens"]}),
              **({} if adapter else {"adapter": "off"}), **prior_of(rec)}
    if classes:
        result["classes"] = list(classes)
    if report:
        folder = write_confusion(Path(report), names, np.asarray(result["confusion"]))
        (folder / "explanations.json").write_text(json.dumps({"videos": expl}))
        result["files"] = ["report.json", "confusion.json", "confusion.png", "explanations.json"]
        (folder / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
