"""Generate SUGAR's motion knowledge (paper sec. 3.1, "Generate Motion Knowledge") with a language model.

For each action class an LLM is asked, with the paper's prompt, how six body parts move (head, hand, arm, hip,
leg, foot), and with a second short prompt for one sentence about the action. The answers are parsed into the
knowledge format of knowledge.py, whatever shape the model wrote them in:

    build_prompt(action)              the paper's prompt (or the description prompt)
    generate_with_model(...)          a local causal LM (transformers), chat template when it has one
    generate_with_endpoint(url, ...)  an OpenAI-compatible server (vLLM, Ray Serve LLM): POST /v1/chat/completions
    parse_motion(text)                free text -> "head ...; hand ...; arm ...; hip ...; leg ...; foot ..."
    describe_classes(classes, gen)    all of the above for a class list -> [ClassKnowledge]

The paper used GPT-3.5 turbo; a small local model writes poorer text, so the parser repairs rather than refuses:
a part the model did not mention becomes "<part> not described", and the repairs are reported (ClassReport).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ...components.knowledge import PARTS, ClassKnowledge, parse_entry

# The paper's prompt (sec. 3.1), word for word; "{drink water}" is its example, "{action}" the class name.
EXAMPLE_MOTION = ("head tilts back slightly; hand grasps cup; arm lifts cup to mouth; hip remains stationary; "
                  "leg remains stationary; foot remains stationary")
MOTION_PROMPT = ("Below are some examples to generate a short description.\n\n"
                 f" Example: A action of {{drink water}}: {EXAMPLE_MOTION}.\n\n"
                 " Describing following body part movements when '{action}': head, hand, arm, hip, leg, foot.")
# not specified in the paper: the sentence written after the label ("{label}. description") has no prompt there
DESCRIPTION_PROMPT = "In one short sentence, describe what a person does when performing '{action}'."

PART_CHARS = 90  # one part's text at most: 6 x 90 + separators stays under knowledge.MAX_TEXT (600)
DESCRIPTION_CHARS = 300
TEMPERATURE, TOP_P = 0.7, 0.9  # not specified in the paper: sampling for variants > 1 (variant 1 is greedy)


def build_prompt(action: str, kind: str = "motion") -> str:
    """The prompt for one class: kind "motion" (the paper's) or "description" (one sentence)."""
    template = {"motion": MOTION_PROMPT, "description": DESCRIPTION_PROMPT}.get(kind)
    if template is None:
        raise ValueError(f"unknown prompt kind {kind!r}: motion or description")
    return template.replace("{action}", action)  # not str.format: the example's "{drink water}" stays as is


# --- parsing ---------------------------------------------------------------------------------------------------
WORDS = {"head": "head", "heads": "head", "hand": "hand", "hands": "hand", "arm": "arm", "arms": "arm",
         "hip": "hip", "hips": "hip", "leg": "leg", "legs": "leg", "foot": "foot", "feet": "foot"}
PART_RE = r"(?:heads?|hands?|arms?|hips?|legs?|foot|feet)"
# a clause that starts with a part: "Head: ...", "The left hand grasps ...", "Feet - stay flat", "Arm(s): ..."
LEADING = re.compile(r"^(?P<article>(?:(?:the|a|an|his|her|their|its|one's)\s+)?)"
                     r"(?P<pre>(?:(?:both|left|right|each|upper|lower)\s+)*)"
                     rf"(?P<word>{PART_RE})\b(?:\(s\))?\s*(?P<sep>[:=\-\u2013\u2014])?\s*(?P<body>.*)$", re.I | re.S)
MENTION = re.compile(rf"\b{PART_RE}\b", re.I)
LABEL = re.compile(rf"^([^:]{{1,80}}):\s*(?=(?:the\s+)?{PART_RE}\b)", re.I)  # a title before a part
PIECES = re.compile(r",|\band\b|\bwhile\b|\bwhen\b|\bwith\b", re.I)  # a sentence listing several parts
BULLET = re.compile(r"^\s*(?:[-*\u2022>#]+|\(?\d+[.)])\s*")
THINK = re.compile(r"<think>.*?(</think>|$)", re.S)  # reasoning models' scratchpad
ECHO = re.compile(r"(?:an?\s+action\s+of\s+)?\{?drink\s+water\}?\s*:?\s*"
                  + r"\s*;\s*".join(re.escape(p) for p in EXAMPLE_MOTION.split("; ")) + r"\.?", re.I)


@dataclass(frozen=True)
class Motion:
    """One parsed motion description: `text` passes knowledge.motion_problem; `found` names the parts the model
    itself described (the others read "<part> not described")."""

    text: str
    found: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in PARTS if p not in self.found)


def _clip(text: str, limit: int) -> str:
    """One line, no ';' (the part separator), no trailing punctuation, at most `limit` characters (whole words)."""
    text = " ".join(text.replace(";", ",").split()).strip(" .,:;!?-\"'")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" .,:;-")
    return text


def _has_content(body: str) -> bool:
    """Whether `body` says something beyond a list of part names ("head, hand, arm, ..." is an echo)."""
    return bool(re.sub(rf"\b(?:{PART_RE}|and|or)\b|[^a-z]", "", body.lower()))


def _clauses(text: str) -> list[str]:
    """Free text -> clauses: lines, split at ';' and at sentence ends, bullets and markdown removed."""
    text = THINK.sub(" ", text).replace("**", "").replace("__", "").replace("`", "")
    out = []
    for line in text.splitlines():
        for clause in re.split(r";|(?<=[.!?])\s+", line):
            clause = BULLET.sub("", clause).strip(" \t*\"'")
            label = LABEL.match(clause)  # "A action of {wave}: head ..." -> "head ..."
            if label and not MENTION.search(label[1]):
                clause = clause[label.end():]
            if clause:
                out.append(clause)
    return out


def _normalise(part: str, m: re.Match, clause: str) -> str:
    """A clause that starts with `part` -> "part ..." (the paper's example style)."""
    word, pre, body = m["word"].lower(), m["article"] + m["pre"], m["body"]
    if m["sep"] and not pre:  # "Head: tilts back" -> "head tilts back"
        text = f"{part} {body}"
    elif not m["pre"] and word == part:  # "(The) head tilts back" -> "head tilts back"
        text = f"{part} {body}"
    else:  # "The left hand grasps ..." / "Feet stay flat" -> "hand: The left hand grasps ..."
        text = f"{part}: {clause}"
    return _clip(text, PART_CHARS)


def _take_leading(clauses: list[str], found: dict[str, str], follow: bool = False) -> None:
    """Give each clause that starts with a part, and says something, to that part (unless it has one already).
    follow: a bare "Head:" gives the next clause to the head."""
    pending = None
    for clause in clauses:
        m = LEADING.match(clause)
        if m is None:
            if pending:
                found[pending], pending = _clip(f"{pending} {clause}", PART_CHARS), None
            continue
        part = WORDS[m["word"].lower()]
        if not _has_content(m["body"]):
            pending = part if follow and m["sep"] and part not in found else None
            continue
        pending = None
        if part not in found:
            found[part] = _normalise(part, m, clause)


def parse_motion(text: str, action: str | None = None) -> Motion:
    """Whatever the model wrote -> the six parts in the paper's order, ';'-separated.

    Accepted: "Head: ...", "head tilts ...", "The head ...", numbered or bulleted lists, one line per part, one
    ';'-separated line, markdown bold. A clause that starts with a part names it (first one wins); then the
    pieces of a sentence between commas/"and"/"while" ("..., the hand grasps a cup, and the arm ..."); a part
    still missing takes the first piece or clause that mentions it (and at most one other part); a part never
    mentioned becomes "<part> not described". A verbatim copy of the prompt's drink-water example is ignored
    unless `action` is itself about drinking (then the copy is a fair answer)."""
    if not (action and "drink" in action.lower()):
        text = ECHO.sub(" ", text)
    clauses = _clauses(text)
    found: dict[str, str] = {}
    _take_leading(clauses, found, follow=True)
    pieces = [p.strip() for c in clauses for p in PIECES.split(c) if p.strip()]
    _take_leading(pieces, found)  # "..., the hand grasps a cup, and the arm ..."
    for part in PARTS:  # last chance: "The person raises the right hand above the head."
        if part in found:
            continue
        for clause in pieces + clauses:
            named = {WORDS[w.lower()] for w in MENTION.findall(clause)}
            if part in named and len(named) <= 2 and _has_content(MENTION.sub("", clause)):
                found[part] = _clip(f"{part}: {clause}", PART_CHARS)
                break
    text = "; ".join(found.get(p) or f"{p} not described" for p in PARTS)
    return Motion(text, tuple(p for p in PARTS if p in found))


def parse_description(text: str) -> str:
    """The first sentence of three words or more in the answer (markdown and quotes removed); "" if none."""
    for clause in _clauses(text.replace(";", ",")):
        sentence = _clip(clause, DESCRIPTION_CHARS)
        if len(re.findall(r"[A-Za-z]+", sentence)) >= 3:  # a sentence, not "Sure!"
            return sentence + "."
    return ""


# --- generation ------------------------------------------------------------------------------------------------
def _chat_text(tokenizer, prompt: str) -> str:
    """The prompt as the model was trained to read it: its chat template when it has one, else the raw text."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


def generate_with_model(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, seed: int | None = None,
                        batch_size: int = 8) -> list[str]:
    """Answers of a local causal LM to `prompts`: greedy when `seed` is None, else sampled (TEMPERATURE, TOP_P)
    from torch's generator seeded with `seed`. Batched with left padding (a decoder continues at the right)."""
    import torch
    from transformers import GenerationConfig

    templated = bool(getattr(tokenizer, "chat_template", None))  # the template already holds the special tokens
    sampling = dict(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P) if seed is not None else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    gen = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id, **sampling)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [_chat_text(tokenizer, p) for p in prompts[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(model.device)
            if seed is not None:
                torch.manual_seed(seed + i)
            with torch.no_grad():
                ids = model.generate(**enc, generation_config=gen)
            answers += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [a.strip() for a in answers]


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint could not be reached or answered badly (the message names URL and status)."""


def _api_url(url: str, route: str) -> str:
    """http://host:8000 or http://host:8000/v1 -> http://host:8000/v1/<route>."""
    base = url.rstrip("/")
    return f"{base.removesuffix('/v1')}/v1/{route}"


RETRY_STATUS = (429, 500, 502, 503, 504)  # an overloaded or restarting server: worth asking again
RETRY_WAIT_S = 1.0  # before the first retry; doubled before each next one (a 429's Retry-After wins when given)


def _request(client, method: str, url: str, retries: int = 0, **kw) -> dict:
    """One request, tried again up to `retries` times on a timeout, a refused or dropped connection, or an HTTP
    429/5xx; the error after the last try is one line naming the URL, what went wrong and how many tries."""
    import httpx

    tries = retries + 1
    for attempt in range(tries):
        wait = RETRY_WAIT_S * 2 ** attempt
        said = f" ({tries} tries)" if tries > 1 else ""
        try:
            r = client.request(method, url, **kw)
        except httpx.TimeoutException:
            error = EndpointError(f"endpoint {url} did not answer within {client.timeout.read} s{said}")
        except httpx.HTTPError as err:
            error = EndpointError(f"endpoint {url} is unreachable: {err}{said}")
        else:
            if r.status_code < 400:
                try:
                    return r.json()
                except ValueError:
                    raise EndpointError(f"endpoint {url} answered HTTP {r.status_code} with a body that is not "
                                        "JSON") from None
            error = EndpointError(f"endpoint {url} answered HTTP {r.status_code}: {r.text.strip()[:300]}{said}")
            if r.status_code not in RETRY_STATUS:
                raise error  # the request itself is wrong (400, 401, 404 ...): asking again changes nothing
            after = r.headers.get("retry-after", "")
            wait = float(after) if after.replace(".", "", 1).isdigit() else wait
        if attempt + 1 < tries:
            time.sleep(min(wait, 30.0))
    raise error


def endpoint_model(url: str, api_key: str | None = None, timeout: float = 30.0, retries: int = 0) -> str:
    """The first model an OpenAI-compatible server lists at GET /v1/models (vLLM serves one)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=timeout, headers=headers) as client:
        listing = _request(client, "GET", _api_url(url, "models"), retries=retries)
    try:
        return listing["data"][0]["id"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"endpoint {_api_url(url, 'models')} lists no model: pass --model") from None


def generate_with_endpoint(url: str, prompts: list[str], model: str | None = None, api_key: str | None = None,
                           max_new_tokens: int = 128, seed: int | None = None, timeout: float = 120.0,
                           concurrency: int = 8, retries: int = 0) -> list[str]:
    """Answers of an OpenAI-compatible chat endpoint (POST {url}/v1/chat/completions), `concurrency` requests
    at a time: temperature 0 when `seed` is None, else TEMPERATURE with the request's `seed`."""
    import httpx

    model = model or endpoint_model(url, api_key, timeout, retries)
    chat = _api_url(url, "chat/completions")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def ask(client, prompt: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_new_tokens,
                "temperature": 0.0 if seed is None else TEMPERATURE}
        if seed is not None:
            body["seed"] = seed
        answer = _request(client, "POST", chat, retries=retries, json=body)
        try:
            return (answer["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"endpoint {chat} answered without choices[0].message.content "
                                "(not an OpenAI-compatible chat endpoint?)") from None

    with httpx.Client(timeout=timeout, headers=headers) as client:
        pool = ThreadPoolExecutor(max(1, min(concurrency, len(prompts))))
        try:
            return list(pool.map(lambda p: ask(client, p), prompts))
        finally:  # the first failure ends the step: requests not yet sent are dropped
            pool.shutdown(cancel_futures=True)


# --- the whole step --------------------------------------------------------------------------------------------
Generate = Callable[[list[str], int | None], list[str]]  # (prompts, sampling seed or None = greedy) -> answers


@dataclass
class ClassReport:
    """What the model wrote for one class and what the parser had to repair."""

    label: str
    found: list[list[str]] = field(default_factory=list)  # per variant: the parts the model described
    description_repaired: bool = False
    raw_motion: list[str] = field(default_factory=list)
    raw_description: str = ""

    @property
    def repaired(self) -> bool:
        return self.description_repaired or any(len(f) < len(PARTS) for f in self.found)

    def to_json(self) -> dict:
        return {"label": self.label, "parts_found": [len(f) for f in self.found],
                "missing": [[p for p in PARTS if p not in f] for f in self.found],
                "description_repaired": self.description_repaired, "repaired": self.repaired,
                "raw_motion": self.raw_motion, "raw_description": self.raw_description}


def read_class_names(path: str | Path) -> list[str]:
    """A text file, one class name a line; blank lines and '#' comments skipped; duplicates refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} does not exist")
    names: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in names:
            raise ValueError(f"{path}:{n}: class {name!r} appears twice (first on line {names[name]})")
        names[name] = n
    if not names:
        raise ValueError(f"{path}: no class names (one a line; blank lines and # comments are skipped)")
    return list(names)


def describe_classes(classes: list[str], generate: Generate, variants: int = 1, seed: int = 0, chunk: int = 8,
                     report: list[ClassReport] | None = None,
                     progress: Callable[[int], None] | None = None) -> list[ClassKnowledge]:
    """Knowledge for `classes`, in their order: `variants` motion descriptions (the first greedy, the others
    sampled with seeds seed+1, seed+2, ...) and one description sentence each. `generate(prompts, seed)` is a
    generate_with_model / generate_with_endpoint with its model bound. Every entry passes knowledge.parse_entry;
    `report`, when given, receives a ClassReport per class; `progress(n)` is called as n more classes are done."""
    if not classes:
        raise ValueError("no classes to describe")
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    out = []
    for i in range(0, len(classes), chunk):
        names = classes[i:i + chunk]
        motions = [build_prompt(c) for c in names]
        raw = [generate(motions, None if k == 0 else seed + k) for k in range(variants)]
        sentences = generate([build_prompt(c, "description") for c in names], None)
        for j, label in enumerate(names):
            rep = ClassReport(label, raw_motion=[r[j] for r in raw], raw_description=sentences[j])
            texts = []
            for answer in rep.raw_motion:
                motion = parse_motion(answer, label)
                rep.found.append(list(motion.found))
                if motion.text not in texts:  # sampled variants can repeat
                    texts.append(motion.text)
            description = parse_description(sentences[j])
            if not description:  # never empty: the sentence the LLM learns to write after the name
                description = _clip(f"A person performs {label}", DESCRIPTION_CHARS) + "."
                rep.description_repaired = True
            entry = {"label": label, "motion": texts, "description": description}
            out.append(parse_entry(entry, f"generated entry for class {label!r}"))  # the format's own check
            if report is not None:
                report.append(rep)
        if progress:
            progress(len(names))
    return out
