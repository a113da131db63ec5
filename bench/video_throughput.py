"""Benchmark: the lvlm-var video path on CPU -- decode throughput, EfficientNet-Lite0 encode throughput, and what the
frame-feature cache saves per epoch of the VST stage, measured side by side in one run.

    python bench/video_throughput.py [--videos 48] [--size 112] [--frames 16] [--epochs 2] [--threads 1]
                                     [--backbone smollm2-135m] [--shards VIDEO_SHARDS] [--json PATH]

Data: without --shards, the MSR Action3D skeletons (../shared/data/msr_action3d, cross-subject, what
bench/evaluate_speed.py writes) are prepared as shards, the first --videos sequences rendered as --size px MP4 stick
figures (actionllm/video/render.py) and prepared as video shards, all in a temporary folder. With --shards, the
first --videos rows of an existing video shard folder (its shard files are copied to a temporary folder first, so
the feature cache built here never touches yours).

Figures (every ratio is between two figures of this run, on the same machine and load):
1. decode: `read_frames(uri, --frames, --size)` over the videos in one process (PyAV; FFmpeg's decoder threads as
   read_frames sets them, torch not involved): videos/s and frames/s of wall time, and per CPU-second of the
   process (process_time: the per-core figure even when FFmpeg spreads a clip over both cores);
2. encode: EfficientNet-Lite0 (batch 32) frames/s at image_size 112 and 224, with torch threads = 1 (per core) and
   = all cores, on frames decoded at that size; end to end, decode + encode videos/s (features.encode_rows, batches
   of 8 videos, --threads torch threads) over the first --e2e-videos videos at both sizes;
3. epoch: a `VSTRecognizer` (the recipe's default VST, width of --backbone's LLM: SmolLM2-135M 576, `tiny` 64) over
   the videos in batches of 8, forward + backward + gradient clipping + AdamW step, (a) decoding and encoding every
   video every epoch vs (b) reading the cached features (`read_cache`, included in each epoch); the epochs of the
   two modes alternate (a, b, a, b, ...) so that a change of load hits both; plus the one-off cost of building the
   cache (`build_cache`, batches of 8) and its size. Wall seconds and this process's CPU seconds (with one torch
   thread the CPU figure is the work itself, far less swayed by other jobs on a shared machine).
--threads: torch threads of the end-to-end and epoch figures (default 1, one core: what a Ray worker given 1 CPU
runs with; on an oversubscribed machine 2 threads run many times slower than 1, see the encode table).
Prints a table, the ratios and the machine's load average (a shared 2-core machine: read figures beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

STARTED = time.perf_counter()  # the whole bench's time includes the imports (torch, PyAV, actionllm)
ROOT = Path(__file__).resolve().parents[1]
SIZES = (112, 224)


def clock() -> tuple[float, float]:
    """(wall, this process's CPU) seconds: with one torch thread the CPU figure is the work itself, much less
    swayed by other jobs on a shared machine than the wall figure."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def make_video_shards(raw: Path, tmp: Path, videos: int, size: int) -> tuple[Path, dict]:
    """MSR skeletons -> shards -> the first `videos` rendered as MP4s -> video shards; seconds of each step."""
    from actionllm.skeleton.formats import get_reader
    from actionllm.skeleton.prepare import prepare
    from actionllm.video import folder
    from actionllm.video.render import render_shards

    t = {}
    t0 = time.perf_counter()
    prepare(get_reader("msr-action3d")(raw), tmp / "skeleton-shards", "cross-subject", val_fraction=0.0,
            on_note=lambda _: None)
    t["prepare_skeletons_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    render_shards(tmp / "skeleton-shards", tmp / "videos", size=size, limit=videos)
    t["render_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    folder.prepare(tmp / "videos", tmp / "video-shards")
    t["prepare_videos_s"] = time.perf_counter() - t0
    return tmp / "video-shards", t


def copy_shards(src: Path, dst: Path) -> Path:
    """The manifest and shard files of a video shard folder (not its features/): the row URIs stay absolute."""
    dst.mkdir(parents=True)
    for p in Path(src).iterdir():
        if p.is_file():
            shutil.copy2(p, dst / p.name)
    return dst


def bench_decode(rows: list[dict], frames: int, size: int) -> dict:
    from actionllm.video.decode import read_frames

    read_frames(rows[0]["uri"], frames, size, num_frames=rows[0]["num_frames"])  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for r in rows:
        read_frames(r["uri"], frames, size, num_frames=r["num_frames"])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(rows)
    return {"videos": n, "frames": frames, "size": size, "wall_s": wall, "cpu_s": cpu,
            "videos_per_s": n / wall, "frames_per_s": n * frames / wall,
            "videos_per_cpu_s": n / cpu, "frames_per_cpu_s": n * frames / cpu}


def bench_encode(encoder, clips: np.ndarray, threads: int) -> dict:
    """Frames/s of encoder.encode over `clips` (uint8 [B, T, H, W, 3]) with `threads` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder.encode(clips[:1, :encoder.cfg.batch_size])  # warm-up at this thread count
        t0 = clock()
        encoder.encode(clips)
        wall, cpu = since(t0)
    finally:
        torch.set_num_threads(before)
    n = clips.shape[0] * clips.shape[1]
    return {"image_size": encoder.image_size, "threads": threads, "frames": n, "wall_s": wall, "cpu_s": cpu,
            "frames_per_s": n / wall, "frames_per_cpu_s": n / cpu}


def bench_end_to_end(rows: list[dict], encoder, frames: int, batch: int = 8) -> dict:
    from actionllm.video.features import encode_rows

    t0 = clock()
    for s in range(0, len(rows), batch):
        encode_rows(rows[s:s + batch], encoder, frames)
    wall, cpu = since(t0)
    return {"image_size": encoder.image_size, "videos": len(rows), "wall_s": wall, "cpu_s": cpu,
            "videos_per_s": len(rows) / wall, "frames_per_s": len(rows) * frames / wall,
            "videos_per_cpu_s": len(rows) / cpu}


class Trainer:
    """One VSTRecognizer + AdamW, trained one batch at a time as training/loop.py does (clip, step, after_step)."""

    def __init__(self, cfg: dict, class_names: list[str], feat_dim: int, lr: float, weight_decay: float):
        import torch

        from actionllm.methods.lvlm_var.model import VSTRecognizer

        torch.manual_seed(0)
        self.rec = VSTRecognizer(cfg, class_names, "video", 3, feat_dim=feat_dim)
        self.rec.train()
        self.opt = torch.optim.AdamW([p for p in self.rec.parameters() if p.requires_grad], lr=lr,
                                     weight_decay=weight_decay)

    def step(self, feats, labels) -> float:
        import torch

        out = self.rec(feats=feats, labels=labels)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.rec.parameters() if p.requires_grad], 1.0)
        self.opt.step()
        self.rec.after_step()
        self.opt.zero_grad(set_to_none=True)
        return float(out["loss"].detach())


def epoch_decoded(trainer: Trainer, rows: list[dict], encoder, frames: int, batch: int, order) -> tuple[float, float]:
    """(a) every video decoded and encoded in this epoch; (wall, CPU) seconds."""
    import torch

    from actionllm.video.features import encode_rows

    t0 = clock()
    for s in range(0, len(order), batch):
        feats = encode_rows([rows[i] for i in order[s:s + batch]], encoder, frames)
        x = torch.from_numpy(np.stack([f["features"].reshape(f["steps"], f["feat_dim"]) for f in feats]))
        trainer.step(x, torch.tensor([f["label"] for f in feats]))
    return since(t0)


def epoch_cached(trainer: Trainer, rows: list[dict], cache: Path, batch: int, order) -> tuple[float, float]:
    """(b) the cached features read (read_cache, in the epoch) and trained on; (wall, CPU) seconds."""
    import torch

    from actionllm.video.features import read_cache

    t0 = clock()
    cached = {r["sample_id"]: r for r in read_cache(cache)}
    for s in range(0, len(order), batch):
        sel = [cached[rows[i]["sample_id"]] for i in order[s:s + batch]]
        x = torch.from_numpy(np.stack([np.asarray(r["features"], np.float32).reshape(r["steps"], r["feat_dim"])
                                       for r in sel]))
        trainer.step(x, torch.tensor([r["label"] for r in sel]))
    return since(t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default=None, help="an existing video shard folder (default: MSR rendered here)")
    ap.add_argument("--raw", default=str(ROOT.parent / "shared" / "data" / "msr_action3d"))
    ap.add_argument("--videos", type=int, default=48, help="videos rendered / used")
    ap.add_argument("--size", type=int, default=112, help="rendered video size and read_frames' size (px)")
    ap.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    ap.add_argument("--image-size", type=int, default=112,
                    help="the encoder's image_size in the epoch comparison (the recipe's CPU run file: 112)")
    ap.add_argument("--encode-frames", type=int, default=128, help="frames per encode-throughput measurement")
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed in each mode")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the end-to-end and epoch figures")
    ap.add_argument("--e2e-videos", type=int, default=24, help="videos of the end-to-end decode + encode figure")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="smollm2-135m", help="sets the VST width: smollm2-135m (576) or tiny (64)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    import torch

    from actionllm.components.backbone import BackboneConfig, hidden_size
    from actionllm.components.visual_encoder import VisualEncoderConfig, load_visual_encoder
    from actionllm.video.decode import read_frames
    from actionllm.video.features import build_cache
    from actionllm.video.folder import read_video_rows

    cores = os.cpu_count() or 1
    load_start = os.getloadavg()
    try:
        width = hidden_size(BackboneConfig(name_or_path=args.backbone))
    except Exception as err:  # noqa: BLE001 -- the weights package missing: say so, fall back to tiny's width
        print(f"backbone {args.backbone!r} not available offline ({type(err).__name__}: {err}); using 'tiny'")
        args.backbone, width = "tiny", hidden_size(BackboneConfig(name_or_path="tiny"))
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        if args.shards:
            shards, setup = copy_shards(Path(args.shards), tmp / "video-shards"), {}
        else:
            shards, setup = make_video_shards(Path(args.raw), tmp, args.videos, args.size)
        rows = sorted(read_video_rows(shards), key=lambda r: r["sample_id"])[:args.videos]
        manifest = json.loads((shards / "manifest.json").read_text())
        class_names = manifest["class_names"]

        # 1. decode
        decode = bench_decode(rows, args.frames, args.size)

        # 2. encode (threads 1 and all) at 112 and 224, on real decoded frames; then decode + encode end to end
        # (decoded at the encoder's size, as encode_rows does: the encoder itself resizes nothing)
        need = max(1, -(-args.encode_frames // args.frames))
        clips = {s: np.stack([read_frames(r["uri"], args.frames, s, num_frames=r["num_frames"])
                              for r in (rows * need)[:need]]) for s in SIZES}
        encoders = {s: load_visual_encoder(VisualEncoderConfig(image_size=s, batch_size=32)) for s in SIZES}
        encode = [bench_encode(encoders[s], clips[s], th) for s in SIZES for th in (1, cores)]
        torch.set_num_threads(args.threads)
        e2e = [bench_end_to_end(rows[:args.e2e_videos], encoders[s], args.frames, args.batch_size) for s in SIZES]

        # 3. the epoch, without and with the feature cache
        encoder = encoders[args.image_size] if args.image_size in encoders else load_visual_encoder(
            VisualEncoderConfig(image_size=args.image_size, batch_size=32))
        t0 = clock()
        cache = build_cache(str(shards), rows, encoder, args.frames, batch=args.batch_size).parent
        build_s, build_cpu = since(t0)
        cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 1e6
        cfg = {"backbone": {"name_or_path": args.backbone}, "video": {"frames": args.frames},
               "encoder": {"name_or_path": "efficientnet-lite0", "image_size": args.image_size}}
        lr, wd = 1e-3, 0.01  # the CPU run file's vst lr, the recipe's vst weight decay
        trainers = {m: Trainer(cfg, class_names, encoder.dim, lr, wd) for m in ("decoded", "cached")}
        vst_params = sum(p.numel() for p in trainers["cached"].rec.parameters() if p.requires_grad)
        for tr in trainers.values():  # warm-up step each (first-call costs out of both)
            x = torch.zeros(2, encoder.out_steps(args.frames), encoder.dim)
            tr.step(x, torch.tensor([0, 1]))
        rng = np.random.default_rng(0)
        times: dict[str, list[tuple[float, float]]] = {"decoded": [], "cached": []}
        for _ in range(args.epochs):
            order = rng.permutation(len(rows)).tolist()  # the same order in both modes
            times["decoded"].append(epoch_decoded(trainers["decoded"], rows, encoder, args.frames,
                                                  args.batch_size, order))
            times["cached"].append(epoch_cached(trainers["cached"], rows, cache, args.batch_size, order))
    load_end = os.getloadavg()
    total_s = time.perf_counter() - STARTED
    wall = {m: float(np.mean([w for w, _ in v])) for m, v in times.items()}
    cpu = {m: float(np.mean([c for _, c in v])) for m, v in times.items()}
    ratio, ratio_cpu = wall["decoded"] / wall["cached"], cpu["decoded"] / cpu["cached"]
    break_even = build_s / max(wall["decoded"] - wall["cached"], 1e-9)

    source = f"from {args.shards}" if args.shards else f"MSR Action3D rendered at {args.size} px"
    print(f"{len(rows)} videos ({source}), {args.frames} frames each; {cores} CPUs; load average (1 min) "
          f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at the end; torch {torch.__version__}")
    if setup:
        print("data made here (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in setup.items()))
    print(f"\n1. decode read_frames(frames={args.frames}, size={args.size}), one process")
    print(f"   {'':26s}{'videos/s':>10s}{'frames/s':>10s}")
    print(f"   {'per wall second':26s}{decode['videos_per_s']:10.1f}{decode['frames_per_s']:10.0f}")
    print(f"   {'per CPU-second (per core)':26s}{decode['videos_per_cpu_s']:10.1f}{decode['frames_per_cpu_s']:10.0f}"
          f"   (CPU {decode['cpu_s']:.2f} s, wall {decode['wall_s']:.2f} s)")
    print(f"\n2. encode EfficientNet-Lite0, batch 32, {encode[0]['frames']} frames decoded at the image size: frames/s")
    print(f"   {'image_size':12s}{'1 thread':>10s}{f'{cores} threads':>11s}{'ratio':>8s}"
          f"{'1 thread, per CPU-second':>27s}")
    for s in SIZES:
        one, many = (next(e for e in encode if e["image_size"] == s and e["threads"] == th) for th in (1, cores))
        print(f"   {s:<12d}{one['frames_per_s']:10.1f}{many['frames_per_s']:11.1f}"
              f"{many['frames_per_s'] / one['frames_per_s']:7.2f}x{one['frames_per_cpu_s']:27.1f}")
    print(f"   decode + encode end to end ({args.threads} torch thread(s), {e2e[0]['videos']} videos in batches of "
          f"{args.batch_size}):")
    for e in e2e:
        print(f"   {e['image_size']:<12d}{e['videos_per_s']:6.2f} videos/s ({e['frames_per_s']:.0f} frames/s), "
              f"{e['videos_per_cpu_s']:.2f} videos per CPU-second")
    print(f"\n3. VST stage epoch over {len(rows)} videos, batch {args.batch_size}, image_size {args.image_size}, "
          f"VST width {width} ({args.backbone}), {vst_params / 1e6:.2f} M trainable, {args.threads} torch "
          f"thread(s); {args.epochs} epochs each, alternating")
    print(f"   {'(seconds per epoch)':34s}{'wall':>8s}{'CPU':>8s}   wall of each epoch")
    for m, label in (("decoded", "(a) decode + encode every epoch"), ("cached", "(b) cached features (read_cache)")):
        print(f"   {label:34s}{wall[m]:8.2f}{cpu[m]:8.2f}   " + " ".join(f"{w:.2f}" for w, _ in times[m]))
    print(f"   {'ratio (a)/(b)':34s}{ratio:7.1f}x{ratio_cpu:7.1f}x")
    print(f"   {'building the cache once':34s}{build_s:8.2f}{build_cpu:8.2f}   ({cache_mb:.2f} MB; repaid after "
          f"{break_even:.2f} epochs)")
    print(f"\nwhole bench {total_s:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "videos": len(rows), "frames": args.frames, "size": args.size, "cores": cores, "threads": args.threads,
            "setup_s": setup, "decode": decode, "encode": encode, "end_to_end": e2e,
            "epoch": {"image_size": args.image_size, "batch_size": args.batch_size, "backbone": args.backbone,
                      "vst_width": width, "vst_trainable_parameters": vst_params, "epochs": args.epochs,
                      "decoded_wall_cpu_s": times["decoded"], "cached_wall_cpu_s": times["cached"],
                      "decoded_s_per_epoch": wall["decoded"], "cached_s_per_epoch": wall["cached"],
                      "decoded_cpu_s_per_epoch": cpu["decoded"], "cached_cpu_s_per_epoch": cpu["cached"],
                      "ratio": ratio, "ratio_cpu": ratio_cpu, "cache_build_s": build_s, "cache_build_cpu_s": build_cpu,
                      "cache_mb": cache_mb, "break_even_epochs": break_even},
            "load_average_start": list(load_start), "load_average_end": list(load_end), "total_s": total_s,
        }, indent=2) + "\n")

if __name__ == "__main__":
    main()
