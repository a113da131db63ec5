"""Class knowledge text (SUGAR, paper sec. 3.1; LVLM-VAR's explanation targets): per class, motion descriptions
over six body parts, optional visual descriptions, and one short sentence the LLM writes after the name.

A knowledge file is JSONL, one class a line:

    {"label": "drink", "motion": ["head tilts back slightly; hand grasps a cup; arm lifts the cup to the mouth;
     hip remains stationary; leg remains stationary; foot remains stationary", ...],
     "visual": ["a person at a table raises a glass to the lips"], "description": "The person lifts a cup ..."}

`motion` is a non-empty list; each entry names the six parts in the paper's order (head, hand, arm, hip, leg,
foot), `;`-separated, each part's text starting with its name (the paper's example format). `visual` is optional
(captions a user brings; the project's own files have none). The project's files for the datasets it reads are
in `knowledge/` beside this file, written by hand; `actionllm describe` generates the same format with a local
causal LM or an OpenAI-compatible endpoint. A dataset with no file at all trains on `names`: texts templated around
each class's name (`names_knowledge`), which carry what the name carries and nothing more.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PARTS = ("head", "hand", "arm", "hip", "leg", "foot")
KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
MAX_TEXT = 600  # characters in one motion/visual/description text
NAMES = "names"  # the knowledge source that builds each class's texts from its name alone
# chosen: one six-part motion text (the format the align stage and `describe` share) and four plain sentences as
# the class's visual texts, CLIP-style prompts around the name; the description (the LLM's explanation target)
# says only which action it is. What hand-written text adds over these is measured in methods/sugar/README.md.
NAME_MOTION = ("head follows the body through {name}; hand moves as {name} needs; arm moves as {name} needs; "
               "hip moves as {name} needs; leg moves as {name} needs; foot moves as {name} needs")
NAME_SENTENCES = ("a person doing {name}", "someone performing the action {name}", "the movement of {name}",
                  "a human skeleton during {name}")
NAME_DESCRIPTION = "The person performs the action {name}."


@dataclass(frozen=True)
class ClassKnowledge:
    label: str
    motion: tuple[str, ...]
    visual: tuple[str, ...] = field(default=())
    description: str = ""

    @property
    def texts(self) -> tuple[str, ...]:
        """Every text of the class stage 1 aligns with (motion first, then visual)."""
        return self.motion + self.visual

    def to_json(self) -> dict:
        return {"label": self.label, "motion": list(self.motion), "visual": list(self.visual),
                "description": self.description}


def motion_problem(text: str) -> str | None:
    """Why `text` is not a six-part motion description (None when it is)."""
    parts = [p.strip() for p in text.split(";")]
    parts = [p for p in parts if p]
    if len(parts) != len(PARTS):
        return f"has {len(parts)} ';'-separated parts, needs {len(PARTS)} ({', '.join(PARTS)})"
    for want, got in zip(PARTS, parts, strict=True):
        if not got.lower().startswith(want):
            return f"part {got!r} should start with {want!r} (order: {', '.join(PARTS)})"
    return None


def parse_entry(entry, where: str) -> ClassKnowledge:
    """One JSON object -> ClassKnowledge, or ValueError naming `where` and what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a class entry must be a JSON object, got {type(entry).__name__}")
    unknown = set(entry) - {"label", "motion", "visual", "description"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} (fields: label, motion, visual, description)")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: 'label' must be a non-empty string")
    motion = entry.get("motion")
    if isinstance(motion, str):
        motion = [motion]
    if not isinstance(motion, list) or not motion or not all(isinstance(m, str) for m in motion):
        raise ValueError(f"{where} ({label!r}): 'motion' must be a non-empty list of strings")
    for i, m in enumerate(motion):
        problem = motion_problem(m)
        if problem:
            raise ValueError(f"{where} ({label!r}): motion[{i}] {problem}")
    visual = entry.get("visual") or []
    if isinstance(visual, str):
        visual = [visual]
    if not isinstance(visual, list) or not all(isinstance(v, str) and v.strip() for v in visual):
        raise ValueError(f"{where} ({label!r}): 'visual' must be a list of non-empty strings")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where} ({label!r}): 'description' must be a string")
    for text in [*motion, *visual, description]:
        if len(text) > MAX_TEXT:
            raise ValueError(f"{where} ({label!r}): a text is {len(text)} characters (at most {MAX_TEXT})")
    return ClassKnowledge(label.strip(), tuple(m.strip() for m in motion), tuple(v.strip() for v in visual),
                          description.strip())


def read_knowledge(path: str | Path) -> dict[str, ClassKnowledge]:
    """A knowledge JSONL file -> {label: ClassKnowledge}; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"knowledge file {path} does not exist")
    out: dict[str, ClassKnowledge] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg})") from None
        k = parse_entry(entry, where)
        if k.label in out:
            raise ValueError(f"{where}: class {k.label!r} appears twice")
        out[k.label] = k
    if not out:
        raise ValueError(f"{path}: no classes")
    return out


def write_knowledge(path: str | Path, entries: list[ClassKnowledge]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(k.to_json(), ensure_ascii=False) + "\n" for k in entries), encoding="utf-8")
    return path


def knowledge_for(classes: list[str], knowledge: dict[str, ClassKnowledge], source: str = "the knowledge file"
                  ) -> list[ClassKnowledge]:
    """The entries of `classes`, in their order; refuses, naming them, classes the knowledge lacks."""
    missing = [c for c in classes if c not in knowledge]
    if missing:
        raise ValueError(f"{source} has no entry for class(es) {missing}: add them (actionllm describe "
                         "--classes writes a starting file)")
    return [knowledge[c] for c in classes]


def names_knowledge(classes: list[str]) -> list[ClassKnowledge]:
    """Each class's texts templated around its name (the `names` source: a dataset without a knowledge file)."""
    return [ClassKnowledge(c, (NAME_MOTION.format(name=c),), tuple(t.format(name=c) for t in NAME_SENTENCES),
                           NAME_DESCRIPTION.format(name=c)) for c in classes]


def knowledge_entries(source: str, classes: list[str]) -> list[ClassKnowledge]:
    """The entries of `classes` from `source`: a knowledge file's path, or `names`."""
    if source == NAMES:
        return names_knowledge(classes)
    return knowledge_for(classes, read_knowledge(source), source)


def covering_knowledge(classes: list[str]) -> Path | None:
    """The first of the project's own knowledge files that covers every class in `classes` (None: none does)."""
    for path in bundled_knowledge().values():
        if set(classes) <= set(read_knowledge(path)):
            return path
    return None


@lru_cache(maxsize=64)
def say_names_only(classes: tuple[str, ...]) -> None:
    """The one line a run prints when no knowledge file covers its classes (once per class set and process)."""
    shown = ", ".join(classes[:4]) + (f" and {len(classes) - 4} more" if len(classes) > 4 else "")
    logging.getLogger("actionllm.knowledge").info(
        "no knowledge file covers the classes (%s): class texts from the names alone (knowledge: names); better "
        "text: `actionllm describe` or a hand-written file, set as recipe_config.knowledge", shown)


def bundled_knowledge() -> dict[str, Path]:
    """The project's own knowledge files: {dataset key: path}."""
    return {p.stem: p for p in sorted(KNOWLEDGE_DIR.glob("*.jsonl"))}
