"""A recognizer folder read without its model: its `config.json`, its `sample.json`, what a server needs to know of
it before loading it, and the checks of classes named at request time. No torch here: the service's ingress
describes and validates with these alone, so an ingress replica starts in the time it takes to import FastAPI
and Ray Serve (contract.py, which writes the folder, imports torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = "actionllm-recognizer"
SAMPLE = "sample.json"
SAMPLE_MAX_FRAMES = 300

MAX_CANDIDATES = 200  # classes one open-vocabulary request may name
MAX_CANDIDATE_TEXTS = 8  # texts one candidate may bring
MAX_CANDIDATE_CHARS = 600  # characters in a candidate's name or text


def read_config(folder: str | Path) -> dict:
    """The `config.json` of a recognizer folder, checked to be one."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a recognizer folder (config.json missing)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not an ActionLLM recognizer config ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "recipe" not in meta:
        raise ValueError(f"{path}: not an ActionLLM recognizer (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    return meta


def serving_facts(meta: dict) -> dict | None:
    """What serving needs to know of a folder before loading it, from its config.json's `serving` block:
    {"input": "skeleton" | "video", "open_vocabulary": bool, and for video "frames", "image_size"}. None for a
    folder written before the block existed (the caller then asks the recognizer class)."""
    facts = meta.get("serving")
    if not isinstance(facts, dict) or facts.get("input") not in ("skeleton", "video") \
            or not isinstance(facts.get("open_vocabulary"), bool):
        return None
    if facts["input"] == "video" and not all(isinstance(facts.get(k), int) for k in ("frames", "image_size")):
        return None
    return facts


def write_sample(folder: str | Path, seq) -> Path:
    """A real sequence of the recognizer's data (a SkeletonSequence, body 0, at most SAMPLE_MAX_FRAMES frames) as
    `sample.json` in its folder: what the service's web page offers as a one-click example."""
    path = Path(folder) / SAMPLE
    frames = seq.joints[0, :SAMPLE_MAX_FRAMES]
    path.write_text(json.dumps({"sample_id": seq.sample_id, "label": seq.label_name, "layout": seq.layout,
                                "fps": float(seq.fps), "frames": np.round(frames, 4).tolist()}) + "\n")
    return path


def read_sample(folder: str | Path) -> dict | None:
    """The folder's `sample.json` (None when it has none or it is unreadable)."""
    path = Path(folder) / SAMPLE
    try:
        sample = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return sample if isinstance(sample, dict) and isinstance(sample.get("frames"), list) else None


def check_candidates(candidates) -> list[dict]:
    """Classes named at request time (open-vocabulary recognizers) -> [{"name", "texts"}], checked; ValueError
    starting with the entry at fault (`candidates[3].texts: ...`)."""
    if not isinstance(candidates, list) or len(candidates) < 2:
        raise ValueError("candidates: give at least two classes to choose among")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"candidates: {len(candidates)} classes, at most {MAX_CANDIDATES}")
    out, seen = [], set()
    for i, c in enumerate(candidates):
        name = c.get("name") if isinstance(c, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CANDIDATE_CHARS:
            raise ValueError(f"candidates[{i}].name: a non-empty string of at most {MAX_CANDIDATE_CHARS} characters")
        if name.strip() in seen:
            raise ValueError(f"candidates[{i}].name: {name.strip()!r} is named twice")
        seen.add(name.strip())
        texts = c.get("texts") or []
        if not isinstance(texts, list) or len(texts) > MAX_CANDIDATE_TEXTS or not all(
                isinstance(t, str) and t.strip() and len(t) <= MAX_CANDIDATE_CHARS for t in texts):
            raise ValueError(f"candidates[{i}].texts: at most {MAX_CANDIDATE_TEXTS} non-empty strings of at most "
                             f"{MAX_CANDIDATE_CHARS} characters")
        out.append({"name": name.strip(), "texts": [t.strip() for t in texts]})
    return out
