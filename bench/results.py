"""The results table: run recipes on the public datasets through the same CLI commands a user types, and
render docs/results.md from the row JSONs the runs wrote (no figure typed by hand: every figure is read from a run's
report.json; a row whose run was not made by `results.py run` says so in its note, e.g. the two 2026-11-22 rows).

  python bench/results.py run --recipe-config actionllm/methods/stgcn/configs/stgcn-cpu.yaml --datasets msr-action3d,florence3d
  python bench/results.py table            # -> docs/results.md from docs/results/rows/*.json

Each cell: `actionllm prepare` (once per dataset) -> `actionllm train` -> `actionllm evaluate --split test`,
timed; its row (docs/results/rows/<recipe>-<dataset>.json, kept in git) records the commands, the metrics,
the wall times and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "docs" / "results" / "rows"
BIN = Path(sys.executable).parent / "actionllm"
GCN_NAMES = {"stgcn": "ST-GCN", "ctrgcn": "CTR-GCN"}
# dataset -> (reader, folder under the data root, protocol, what the split is)
DATASETS = {
    "msr-action3d": ("msr-action3d", "msr_action3d", "cross-subject", "odd subjects train (1,3,5,7,9), even test"),
    "utd-mhad": ("utd-mhad", "utd_mhad_skeleton", "cross-subject", "odd subjects train (1,3,5,7), even test"),
    "florence3d": ("florence3d", "florence3d", "cross-subject", "odd subjects train, even test"),
    "jhmdb": ("jhmdb", "jhmdb_ddnet", "split1", "official split 1 (ground-truth 2D joints)"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu}), no GPU"


def sh(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def input_text(clip: dict) -> str:
    """A recognizer's clip preprocessing in a few words (the results table's input column)."""
    return f"{clip.get('modality', 'joint')}, align {clip.get('align', 'none')}, centre {clip.get('centre', 'frame')}"


def bridge_text(bridge: dict) -> str:
    """A Joint2Text bridge in a few words (the input column of joints-llm rows)."""
    fmt = bridge.get("format", "paper")
    detail = f"{bridge.get('precision', 2)} decimal(s)" if fmt == "paper" else f"0-{bridge.get('grid', 10) - 1} grid"
    return f"Joint2Text {fmt}, {detail}, N {bridge.get('window')} / stride {bridge.get('stride') or bridge.get('window')}"


def ensemble_input(inputs: list[str]) -> str:
    """The members' inputs in a few words: 'joint + bone + ..., align view, centre frame' when only the modality
    differs, else each member's in full."""
    parts = [i.split(", ", 1) for i in inputs]
    if all(len(x) == 2 for x in parts) and len({x[1] for x in parts}) == 1:
        return " + ".join(x[0] for x in parts) + ", " + parts[0][1]
    return " + ".join(inputs)


def slug(name: str) -> str:
    """A row's name as a file and folder name: 'lvlm-var (zero-shot, LoRA off)' -> 'lvlm-var-zero-shot-LoRA-off'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")


def rel(path: Path) -> str:
    return os.path.relpath(path.resolve(), ROOT)


def new_cell(cell: Path) -> Path:
    """A cell's folder, with its log emptied."""
    cell.mkdir(parents=True, exist_ok=True)
    log = cell / "log.txt"
    log.write_text("")
    return log


def shards_of(ds: str, args, log: Path) -> tuple[Path, list[str]]:
    """The dataset's shard folder under --work (prepared once) and the `actionllm prepare` command that makes it."""
    fmt, folder, protocol, _ = DATASETS[ds]
    val = getattr(args, "val_fraction", None)
    shards = Path(args.work) / "shards" / (ds if val is None else f"{ds}-val{round(val * 100)}")
    prepare = [str(BIN), "prepare", "--format", fmt, "--input", rel(Path(args.data_root) / folder), "--output",
               rel(shards), "--protocol", protocol, *(["--val-fraction", f"{val:g}"] if val is not None else [])]
    if not (shards / "manifest.json").is_file():
        sh(prepare, log)
    return shards, prepare


def videos_of(ds: str, shards: Path, args, log: Path) -> tuple[Path, list[list[str]]]:
    """The dataset's skeletons rendered as MP4 stick figures and prepared as video shards under --work (once), and
    the `actionllm render` and `actionllm prepare --format video-folder` commands that make them."""
    videos, vshards = Path(args.work) / "videos" / shards.name, Path(args.work) / "shards" / f"{shards.name}-video"
    render = [str(BIN), "render", "--data", rel(shards), "--output", rel(videos), "--size", str(args.video_size)]
    prepare = [str(BIN), "prepare", "--format", "video-folder", "--input", rel(videos), "--output", rel(vshards)]
    if not (vshards / "manifest.json").is_file():
        if not (videos / "videos.csv").is_file():
            sh(render, log)
        sh(prepare, log)
    return vshards, [render, prepare]


def video_backbone(rc: dict) -> str:
    """An lvlm-var recognizer's LLM, visual encoder and tokens in a few words (the backbone column)."""
    c = rc["config"]
    vst = c.get("vst", {})
    tokens = f"{vst.get('codebook_size', 512)} codes" if vst.get("enabled", True) else "no VST (direct projection)"
    seen = f"{c['encoder']['name_or_path']} frozen, {c['encoder']['image_size']} px, {c['video']['frames']} frames; {tokens}"
    llm = rc.get("backbone", {}).get("name_or_path") or c["backbone"]["name_or_path"]
    if rc.get("stage") == "vst":  # the VST and its class head: no LLM yet (its width only)
        return f"none (VST with its class head: {seen}; tokens {llm}-wide)"
    return f"{llm} (LoRA r {c['lora']['r']}; {seen})"


def run(args) -> None:
    cfg = yaml.safe_load(Path(args.recipe_config).read_text())
    recipe = cfg.get("recipe", "joints-llm")
    for ds in args.datasets.split(","):
        _, _, protocol, split_text = DATASETS[ds]
        cell = Path(args.work) / f"{args.name or recipe}-{ds}"
        log = new_cell(cell)
        shards, prepare = shards_of(ds, args, log)
        made = [prepare]
        if args.video:  # the skeletons rendered to videos: what a video recipe (lvlm-var) reads
            shards, more = videos_of(ds, shards, args, log)
            made += more
        train = [str(BIN), "train", "--config", rel(Path(args.recipe_config)), "--data", rel(shards),
                 "--output", rel(cell / "run"), *args.extra]
        train_s = sh(train, log)
        final = Path(json.loads((cell / "run" / "summary.json").read_text())["recognizer"])  # <run>/<stage>/...
        stages = [p for p in sorted((cell / "run").glob("*/recognizer")) if args.stage_rows]
        prior = json.loads((final / "config.json").read_text()).get("prior") if args.prior_rows else None
        for recognizer, alone in [(final, False), *([(final, True)] if prior else []), *((s, False) for s in stages)]:
            row = cell_row(args, recipe, ds, cell, shards, made, train, train_s, recognizer, final, alone)
            name = cell.name if recognizer == final else f"{cell.name}-{recognizer.parent.name}"
            name += "-llm-alone" if alone else ""
            (cell / f"{'row' if recognizer == final and not alone else name}.json").write_text(
                json.dumps(row, indent=2) + "\n")
            ROWS.mkdir(parents=True, exist_ok=True)
            (ROWS / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
            print(json.dumps({k: row[k] for k in ("dataset", "recipe", "top1", "macro_f1", "train_s")}), flush=True)


def epochs_text(summary: dict, stage: str | None = None) -> int | str:
    """Epochs of a run: one stage's, or each stage's joined ('60 + 3') for a multi-stage recipe's final row."""
    stages = summary.get("stages")
    if stage is not None and stages:
        return stages[stage]["metrics"]["epoch"] + 1
    if stages and len(stages) > 1:
        return " + ".join(str(v["metrics"]["epoch"] + 1) for v in stages.values())
    return summary["metrics"]["epoch"] + 1


def cell_row(args, recipe: str, ds: str, cell: Path, shards: Path, made: list, train: list, train_s: float,
             recognizer: Path, final: Path, alone: bool = False) -> dict:
    """Evaluate one recognizer of a trained cell on the test split -> its row. `alone`: an LLM stage answering
    without its first stage's prior (--prior-weight 0: the paper's recognizer), beside the fused row."""
    _, _, protocol, split_text = DATASETS[ds]
    report_dir = cell / ("report" if recognizer == final else f"report-{recognizer.parent.name}")
    report_dir = report_dir.with_name(report_dir.name + "-llm-alone") if alone else report_dir
    evaluate = [str(BIN), "evaluate", "--checkpoint", rel(recognizer), "--data", rel(shards),
                "--split", "test", "--report", rel(report_dir), *(["--prior-weight", "0"] if alone else []),
                *(["--rotate", args.rotate] if args.rotate else []),
                *shlex.split(args.evaluate_flags or "")]
    eval_s = sh(evaluate, cell / "log.txt")
    report = json.loads((report_dir / "report.json").read_text())
    summary = json.loads((cell / "run" / "summary.json").read_text())
    rc = json.loads((recognizer / "config.json").read_text())
    clip = rc["config"].get("clip", {})
    preset = rc["config"].get("preset") or rc["config"].get("encoder", {}).get("preset", "")
    backbone = rc.get("backbone", {}).get("name_or_path") or \
        f"none ({GCN_NAMES.get(recipe, recipe)} {preset}, {rc.get('parameters', 0) / 1e6:.2f}M params)"
    if rc.get("text_encoder"):  # sugar's alignment stage: a GCN encoder + a frozen sentence encoder
        backbone = f"{rc['text_encoder']} text encoder (frozen) + GCN encoder {preset}, " \
                   f"{rc.get('parameters', 0) / 1e6:.2f}M params"
    if rc.get("align") and rc.get("bridge"):  # sugar's llm stage: the bridge and the adapter on the align encoder
        backbone = f"{backbone} (LoRA r {rc['config']['lora']['r']}; {sugar_bridge_text(rc['config']['bridge'])}) " \
                   "on the align stage's frozen encoder"
    video = "frames" in rc.get("config", {}).get("video", {})
    if video:
        backbone = video_backbone(rc)
    from actionllm.methods import get_recipe  # here: `table` needs no torch

    stages = get_recipe(recipe).stages
    # a stage's folder is labelled with its stage unless it is the recipe's last (the whole method)
    last = recognizer == final and (len(stages) == 1 or rc.get("stage") == stages[-1])
    name = recipe if last else f"{recipe} ({rc.get('stage')} stage)"
    if recognizer == final and getattr(args, "label", None):
        name = args.label
    if rc["config"].get("knowledge") == "names":  # sugar / lvlm-var without a knowledge file
        name += " [class texts: names only]"
    prior = rc.get("prior") if recognizer == final else None
    if prior:  # the fusion weight was chosen on the val split by `actionllm train` (actionllm/fusion.py)
        name += " (LLM alone, prior weight 0)" if alone else \
            f" + first-stage prior (weight {prior['weight']:g} chosen on {prior['sequences']} val seq.)"
    row = {"dataset": ds, "protocol": protocol, "split": split_text, "recipe": name, "backbone": backbone,
           "top1": report["top1"], "top5": report["top5"], "macro_f1": report["macro_f1"],
           "chance": report["chance"], "test_sequences": report["sequences"],
           **({"input": input_text(clip)} if clip else
              {"input": bridge_text(rc["config"]["bridge"])} if "window" in rc["config"].get("bridge", {}) else
              {"input": f"rendered stick-figure video, {args.video_size} px"} if video else {}),
           **({"tokens_per_video": report.get("tokens_per_video"), "codes_used": report.get("codes_used")}
              if video else {}),
           **({"rotated": report["rotated"]} if report.get("rotated") else {}),
           **({"classes": report["classes"]} if report.get("classes") else {}),
           **({"candidates": report["candidates"]} if report.get("candidates") else {}),
           "seconds_per_epoch": round(train_s / (summary["metrics"]["epoch"] + 1), 1),
           "epochs": epochs_text(summary, None if recognizer == final else recognizer.parent.name),
           "steps": summary["metrics"]["step"],
           "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "machine": machine(),
           "commands": [shlex.join(c).replace(str(BIN), "actionllm") for c in (*made, train, evaluate)],
           **({"note": args.note} if getattr(args, "note", None) else {}),
           **({"prior": {**prior, "weight_used": 0.0 if alone else prior["weight"]}} if prior else {}),
           "date": time.strftime("%Y-%m-%d")}
    return row


def sugar_bridge_text(bridge: dict) -> str:
    """SUGAR's bridge in a few words (Table 4's ablation rows differ only here)."""
    kind, tokens = bridge.get("kind", "tqp"), bridge.get("tokens", 32)
    return {"tqp": f"TQP, {tokens} tokens, {bridge.get('segments', 4)} segments",
            "qformer": f"one Q-Former, {tokens} tokens", "xattn": f"cross-attention, {tokens} tokens",
            "linear": "linear, one token per encoder frame"}.get(kind, kind)


def ensemble(args) -> None:
    """Several finished cells (e.g. the four streams of one recipe) -> `actionllm evaluate` with one --checkpoint
    per cell (the sum of their probabilities) -> a row named --name."""
    cells = [Path(args.work) / c for c in args.cells.split(",")]
    rows = [json.loads((c / "row.json").read_text()) for c in cells]
    ds = rows[0]["dataset"]
    if any(r["dataset"] != ds for r in rows):
        raise SystemExit(f"the cells hold different datasets: {[r['dataset'] for r in rows]}")
    out = Path(args.work) / f"{args.name}-{ds}"
    log = new_cell(out)
    members = [Path(json.loads((c / "run" / "summary.json").read_text())["recognizer"]) for c in cells]
    evaluate = [str(BIN), "evaluate", *[a for m in members for a in ("--checkpoint", rel(m))], "--data",
                rel(Path(args.work) / "shards" / ds), "--split", "test", "--report", rel(out / "report"),
                *(["--rotate", args.rotate] if args.rotate else [])]
    eval_s = sh(evaluate, log)
    report = json.loads((out / "report" / "report.json").read_text())
    row = {"dataset": ds, "protocol": rows[0]["protocol"], "split": rows[0]["split"], "recipe": args.name,
           "backbone": " + ".join(r["backbone"] for r in rows) if len({r["backbone"] for r in rows}) > 1
           else f"{len(rows)} x {rows[0]['backbone']}",
           "top1": report["top1"], "top5": report["top5"], "macro_f1": report["macro_f1"],
           "chance": report["chance"], "test_sequences": report["sequences"],
           "input": ensemble_input([r.get("input", "?") for r in rows]),
           **({"rotated": report["rotated"]} if report.get("rotated") else {}),
           "members": [{"cell": c.name, "top1": r["top1"]} for c, r in zip(cells, rows, strict=True)],
           "epochs": rows[0]["epochs"], "steps": sum(r["steps"] for r in rows),
           "train_s": round(sum(r["train_s"] for r in rows), 1), "eval_s": round(eval_s, 1), "machine": machine(),
           "commands": [c for r in rows for c in r["commands"][1:2]]
           + [shlex.join(evaluate).replace(str(BIN), "actionllm")],
           "note": "the sum of the members' sequence probabilities; train wall = the members' total",
           "date": time.strftime("%Y-%m-%d")}
    (out / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    (ROWS / f"{out.name}.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps({k: row[k] for k in ("dataset", "recipe", "top1", "macro_f1")}), flush=True)


def evaluate_cell(args) -> None:
    """A finished cell's recognizer evaluated on another dataset's test split (e.g. SUGAR's cross-dataset zero-shot:
    trained on UTD-MHAD, answering among MSR Action3D's classes) -> a row named --name."""
    cell = Path(args.work) / args.cell
    trained = json.loads((cell / "row.json").read_text())
    split_text = DATASETS[args.dataset][3]
    out = Path(args.work) / f"{slug(args.name)}-{args.dataset}"
    log = new_cell(out)
    shards, prepare = shards_of(args.dataset, args, log)
    made = [prepare]
    if args.video:
        shards, more = videos_of(args.dataset, shards, args, log)
        made += more
    recognizer = Path(json.loads((cell / "run" / "summary.json").read_text())["recognizer"])
    evaluate = [str(BIN), "evaluate", "--checkpoint", rel(recognizer), "--data", rel(shards), "--split", "test",
                "--report", rel(out / "report"), *shlex.split(args.evaluate_flags or "")]
    eval_s = sh(evaluate, log)
    report = json.loads((out / "report" / "report.json").read_text())
    same = args.dataset == trained["dataset"]
    row = {"dataset": args.dataset,
           "protocol": trained["protocol"] if same else f"trained on {trained['dataset']} ({trained['protocol']})",
           "split": split_text, "recipe": args.name, "backbone": trained["backbone"], "top1": report["top1"],
           "top5": report["top5"], "macro_f1": report["macro_f1"], "chance": report["chance"],
           "test_sequences": report["sequences"],
           **({"input": trained["input"]} if same and trained.get("input") else {}),
           **({"classes": report["classes"]} if report.get("classes") else {}),
           **({"candidates": report["candidates"]} if report.get("candidates") else {}),
           "epochs": trained["epochs"], "steps": trained["steps"], "train_s": trained["train_s"],
           "eval_s": round(eval_s, 1), "machine": machine(),
           "commands": [shlex.join(c).replace(str(BIN), "actionllm") for c in made]
           + [c for c in trained["commands"] if c.startswith("actionllm train ")]
           + [shlex.join(evaluate).replace(str(BIN), "actionllm")],
           "note": f"the recognizer of the {trained['recipe']} row, evaluated with `{args.evaluate_flags}`" if same else
                   f"the recognizer of {trained['recipe']} on {trained['dataset']}, evaluated on this dataset",
           "date": time.strftime("%Y-%m-%d")}
    (out / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    (ROWS / f"{out.name}.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps({k: row[k] for k in ("dataset", "recipe", "top1", "macro_f1", "chance")}), flush=True)


def table(args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(args.rows).glob("*.json"))]
    order = list(DATASETS)
    rows.sort(key=lambda r: (order.index(r["dataset"]) if r["dataset"] in order else 99, r["recipe"]))
    lines = ["| dataset | protocol | recipe | backbone | top-1 | macro-F1 | top-5 | chance | epochs | train wall | "
             "hardware |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        recipe = f"{r['recipe']} ({r['input']})" if r.get("input") else r["recipe"]
        lines.append(f"| {r['dataset']} ({r['test_sequences']} test seq.) | {r['protocol']} | {recipe} | "
                     f"{r['backbone']} | **{100 * r['top1']:.1f}** | {100 * r['macro_f1']:.1f} | "
                     f"{100 * r['top5']:.1f} | {100 * r['chance']:.1f} | {r['epochs']} | "
                     f"{r['train_s'] / 60:.1f} min | {r['machine']} |")
    cmds = ["", "Commands (from the repository root; `bench/results.py run` runs exactly these):", ""]
    for r in rows:
        note = f" {r['note']}." if r.get("note") else ""
        cmds += [f"**{r['dataset']} / {r['recipe']}** ({r['date']}; split: {r['split']}).{note}", "```bash",
                 *r["commands"], "```", ""]
    rotated = [r for r in rows if r.get("rotated")]
    if rotated:
        angles = sorted({a for r in rotated for a in r["rotated"]}, key=float)
        cmds += ["## Rotated-view evaluation", "", "Top-1 with every test sequence turned about its vertical by each "
                 "angle before it is cut (`actionllm evaluate --rotate`), and the drop from 0 to the largest angle.",
                 "", "| dataset | recipe | " + " | ".join(f"{a} deg" for a in angles) + " | drop |",
                 "|---|---|" + "---|" * (len(angles) + 1)]
        for r in rotated:
            tops = [100 * r["rotated"][a]["top1"] if a in r["rotated"] else None for a in angles]
            recipe = f"{r['recipe']} ({r['input']})" if r.get("input") else r["recipe"]
            cmds.append(f"| {r['dataset']} | {recipe} | " + " | ".join("" if t is None else f"{t:.1f}" for t in tops)
                        + f" | {tops[0] - tops[-1]:.1f} |")
        cmds.append("")
    head = ["# Results", "", "Sequence-level scores on each dataset's test split. Rows: `docs/results/rows/*.json`, "
            "written by `python bench/results.py run`; this file and the README table by "
            "`python bench/results.py table`.", ""]
    Path(args.output).write_text("\n".join(head + lines + cmds))
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- results:begin (bench/results.py table) -->", "<!-- results:end -->"
    if begin in text and end in text:
        a, b = text.index(begin) + len(begin), text.index(end)
        readme.write_text(text[:a] + "\n" + "\n".join(lines) + "\n" + text[b:])
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train + evaluate one recipe config on datasets")
    r.add_argument("--recipe-config", required=True, help="a TrainConfig YAML (recipe, epochs, recipe_config)")
    r.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated: {', '.join(DATASETS)}")
    r.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    r.add_argument("--work", default="runs/results")
    r.add_argument("--name", default=None, help="cell name prefix (default: the recipe)")
    r.add_argument("--rotate", default=None, help="also evaluate the test set rotated by these angles (0,30,60,90)")
    r.add_argument("--evaluate-flags", default=None, help="more `actionllm evaluate` flags, one string (e.g. "
                   "'--classes \"a,b\"' for an unseen-class run, '--candidates K.jsonl' for a cross-dataset one)")
    r.add_argument("--video", action="store_true", help="render the skeletons to videos first (`actionllm render`) "
                   "and train on the video shards (a video recipe: lvlm-var)")
    r.add_argument("--video-size", type=int, default=112, help="rendered frame size (--video)")
    r.add_argument("--stage-rows", action="store_true", help="also a row for each earlier stage's recognizer "
                   "(e.g. lvlm-var's vst stage, a classifier in its own right)")
    r.add_argument("--val-fraction", type=float, default=None, help="`actionllm prepare --val-fraction`: the share "
                   "of the training sequences held out for choices (default: prepare's 0.1)")
    r.add_argument("--prior-rows", action="store_true", help="an LLM stage with a first-stage prior: also a row "
                   "with the prior off (--prior-weight 0, the paper's LLM alone) beside the fused one")
    r.add_argument("--note", default=None, help="a sentence kept in the row (how it was run, what it shares)")
    r.add_argument("--label", default=None, help="the row's recipe column (default: the recipe, or the recipe and "
                   "the stage for a stage's folder), e.g. 'sugar (align + llm, P1: 5 classes unseen)'")
    r.add_argument("extra", nargs="*", help="extra `actionllm train` flags after --")
    e = sub.add_parser("ensemble", help="evaluate finished cells together (sum of their probabilities)")
    e.add_argument("--cells", required=True, help="comma-separated cell folders under --work (one dataset)")
    e.add_argument("--name", required=True, help="the row's recipe name, e.g. 'stgcn 4-stream'")
    e.add_argument("--work", default="runs/results")
    e.add_argument("--rotate", default=None)
    c = sub.add_parser("evaluate", help="evaluate a finished cell's recognizer on another dataset")
    c.add_argument("--cell", required=True, help="the trained cell's folder under --work")
    c.add_argument("--dataset", required=True, help=f"the dataset to evaluate on: {', '.join(DATASETS)}")
    c.add_argument("--name", required=True, help="the row's recipe name")
    c.add_argument("--work", default="runs/results")
    c.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    c.add_argument("--evaluate-flags", default=None, help="more `actionllm evaluate` flags, one string")
    c.add_argument("--video", action="store_true", help="evaluate on the dataset rendered to videos (a video recipe)")
    c.add_argument("--video-size", type=int, default=112, help="rendered frame size (--video)")
    t = sub.add_parser("table", help="render the table from row.json files")
    t.add_argument("--rows", default=str(ROWS), help="folder of row JSONs")
    t.add_argument("--output", default="docs/results.md")
    args = p.parse_args()
    {"run": run, "ensemble": ensemble, "evaluate": evaluate_cell, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
