"""`actionllm describe`: SUGAR's motion knowledge for a list of action classes, written by a language model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import app, console, fail, out


def report_path(knowledge: Path) -> Path:
    """knowledge.jsonl -> knowledge.report.json (what the model wrote and what was repaired)."""
    return knowledge.with_name(knowledge.stem + ".report.json")


def class_names(classes: Path | None, data: str | None) -> list[str]:
    """The class list from --classes FILE or --data SHARDS (its manifest); exits 2 on bad input."""
    if (classes is None) == (data is None):
        fail("give exactly one of --classes FILE (one class name a line) or --data SHARDS (a prepared shard folder)")
    if classes is not None:
        from actionllm.methods.sugar.describe import read_class_names

        try:
            return read_class_names(classes)
        except (FileNotFoundError, ValueError, UnicodeDecodeError) as err:
            fail(str(err))
    from actionllm.skeleton.shards import Manifest

    try:
        manifest = Manifest.read(data)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    names = list(manifest.class_names) or list(manifest.per_class)
    if not names:
        fail(f"{data}/manifest.json names no classes")
    return names


def print_summary(reports) -> None:
    """class | parts found / 6 (per variant) | what was repaired, to stderr."""
    from actionllm.components.knowledge import PARTS

    table = Table("class", "parts found", "repaired", box=None, pad_edge=False, title="knowledge generated")
    for r in reports:
        missing = [p for p in PARTS if any(p not in f for f in r.found)]
        repaired = ", ".join(missing + (["description"] if r.description_repaired else [])) or "-"
        table.add_row(r.label, " ".join(f"{len(f)}/6" for f in r.found), repaired)
    console.print(table)
    n = sum(r.repaired for r in reports)
    console.print(f"{len(reports) - n} of {len(reports)} classes complete, {n} repaired "
                  "(a part the model did not describe reads '<part> not described')", highlight=False)


@app.command()
def describe(
    classes: Path = typer.Option(None, "--classes", help="text file, one action class name a line (blank lines and "
                                 "# comments skipped)"),
    data: str = typer.Option(None, "--data", help="a shard folder (prepare / synth-gait): its manifest's classes"),
    out_path: Path = typer.Option(..., "--out", help="knowledge JSONL to write (format: "
                                  "actionllm/components/knowledge.py); a .report.json is written beside it"),
    backbone: str = typer.Option(None, help="local causal LM: 'smollm2-135m', a hub id, a folder or a .gguf"),
    gguf_file: str = typer.Option(None, help="GGUF file inside the --backbone repo/folder"),
    endpoint: str = typer.Option(None, help="OpenAI-compatible server (vLLM, Ray Serve LLM), e.g. "
                                 "http://127.0.0.1:8000: POST /v1/chat/completions"),
    model: str = typer.Option(None, help="--endpoint's model name (default: the first of its GET /v1/models)"),
    api_key_env: str = typer.Option(None, help="NAME of the environment variable that holds --endpoint's API key "
                                    "(sent as 'Authorization: Bearer ...'; never given on the command line)"),
    max_new_tokens: int = typer.Option(128, min=8, max=4096, help="tokens generated per answer"),
    variants: int = typer.Option(1, min=1, max=16, help="motion descriptions per class: the first greedy, the "
                                 "others sampled (seeds seed+1 ...)"),
    seed: int = typer.Option(0, help="seed of the sampled variants"),
    device: str = typer.Option("auto", help="--backbone's device: auto (cuda when available), cpu, cuda, cuda:1"),
    timeout: float = typer.Option(120.0, min=1.0, help="seconds to wait for one --endpoint answer"),
    concurrency: int = typer.Option(8, min=1, help="--endpoint requests in flight at once"),
    retries: int = typer.Option(2, min=0, max=10, help="--endpoint: ask again this many times after a timeout, a "
                                "refused connection or an HTTP 429/5xx (waits 1 s, 2 s, ...)"),
    force: bool = typer.Option(False, "--force", help="overwrite --out (and its .report.json)"),
) -> None:
    """Generate SUGAR's motion knowledge (paper sec. 3.1) for a list of action classes with a language model.

    Each class gets the paper's prompt (six body parts: head, hand, arm, hip, leg, foot) and a one-sentence
    description prompt, answered by a local causal LM (--backbone) or an OpenAI-compatible endpoint
    (--endpoint). Answers in any shape are parsed into "head ...; hand ...; arm ...; hip ...; leg ...; foot
    ..."; a part the model did not describe reads "<part> not described" and is listed in the summary and in
    the .report.json beside --out (with the raw answers). Bad input exits 2; an endpoint failure exits 1.
    """
    if (backbone is None) == (endpoint is None):
        fail("give exactly one of --backbone (a local causal LM) or --endpoint URL (an OpenAI-compatible server)")
    if backbone is not None and (model or api_key_env):
        fail("--model and --api-key-env go with --endpoint, not --backbone")
    if endpoint is not None and gguf_file:
        fail("--gguf-file goes with --backbone, not --endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        fail(f"--endpoint {endpoint!r} must be an http:// or https:// URL")
    report_file = report_path(out_path)
    for path in (out_path, report_file):
        if path.exists() and not force:
            fail(f"{path} exists (pass --force to overwrite it)")
    names = class_names(classes, data)
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            fail(f"--api-key-env {api_key_env}: the environment variable {api_key_env} is not set")

    from actionllm.methods.sugar import describe as d

    if backbone is not None:
        generate, source = local_generator(backbone, gguf_file, device, max_new_tokens), f"backbone {backbone}"
    else:
        try:
            model = model or d.endpoint_model(endpoint, api_key, timeout, retries)
        except d.EndpointError as err:
            fail(str(err), code=1)
        source = f"endpoint {endpoint} model {model}"

        def generate(prompts, sample_seed):
            return d.generate_with_endpoint(endpoint, prompts, model=model, api_key=api_key, seed=sample_seed,
                                            max_new_tokens=max_new_tokens, timeout=timeout, concurrency=concurrency,
                                            retries=retries)

    reports: list[d.ClassReport] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(f"describing {len(names)} classes", total=len(names))
        try:
            knowledge = d.describe_classes(names, generate, variants=variants, seed=seed, report=reports,
                                           progress=lambda n: bar.advance(task, n))
        except d.EndpointError as err:
            fail(str(err), code=1)
    from actionllm.components.knowledge import write_knowledge

    write_knowledge(out_path, knowledge)
    report = {"source": source, "max_new_tokens": max_new_tokens, "variants": variants, "seed": seed,
              "motion_prompt": d.MOTION_PROMPT, "description_prompt": d.DESCRIPTION_PROMPT,
              "classes": [r.to_json() for r in reports]}
    report_file.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_summary(reports)
    out.print(f"wrote {out_path} ({len(knowledge)} classes) and {report_file}", highlight=False, soft_wrap=True)


def local_generator(backbone: str, gguf_file: str | None, device: str, max_new_tokens: int):
    """Load --backbone once -> generate(prompts, seed) -> answers. A backbone not on this machine exits 2."""
    import torch

    from actionllm.components.backbone import (
        BackboneConfig,
        BackboneUnavailable,
        check_available,
        load_backbone,
    )
    from actionllm.methods.sugar.describe import generate_with_model

    cfg = BackboneConfig(name_or_path=backbone, gguf_file=gguf_file)
    try:
        check_available(cfg)
    except BackboneUnavailable as err:
        fail(str(err))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with console.status(f"loading {backbone} on {device}"):
        try:
            model, tokenizer = load_backbone(cfg, device=device)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            fail(f"could not load backbone {backbone!r}: {first}")
    model.eval()
    return lambda prompts, sample_seed: generate_with_model(model, tokenizer, prompts, max_new_tokens, sample_seed)
