"""Benchmark: latency and throughput of recognition (a) in-process, (b) through Serve without batching,
(c) through Serve with batching, at several concurrencies, in one run; then one replica killed under load.

    python bench/serve_latency.py [--checkpoint DIR] [--data ../shared/data/msr_action3d] [--frames 24]
                                  [--concurrency 1 8 32] [--requests 48] [--kill-seconds 60]

Without --checkpoint, a joints-llm recognizer on the built-in `tiny` backbone is built (random adapter and head:
latency does not depend on trained weights). The request is a real MSR Action3D sequence cut to --frames
frames (N=12, stride 6 -> 3 windows). Clients are threads with one httpx connection each, over real HTTP on
127.0.0.1. Prints p50/p99 latency (ms) and requests/s per mode and concurrency, and ratios against (a);
then the kill test: 2 fixed replicas, --kill-seconds of load at concurrency 4, one RecognizerServer replica
killed (ray.kill) after a third of it: failed requests and seconds until 2 replicas run again.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_tiny(folder: Path, classes: list[str]) -> Path:
    import torch

    from actionllm.methods.joints_llm.model import JointsLLMRecognizer

    cfg = {"bridge": {"window": 12, "stride": 6, "precision": 1}, "backbone": {"name_or_path": "tiny"}}
    rec = JointsLLMRecognizer(cfg, classes, "kinect20", 3, seed=0)
    with torch.no_grad():
        for n, p in rec.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return rec.save(folder / "tiny")


def percentiles(lat: list[float]) -> tuple[float, float]:
    a = np.asarray(lat) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def drive(call, concurrency: int, n: int) -> dict:
    """n calls from `concurrency` threads; latency of each, throughput of all."""
    lat, fails = [], 0
    lock = threading.Lock()

    def one(_):
        nonlocal fails
        t0 = time.perf_counter()
        ok = call()
        with lock:
            lat.append(time.perf_counter() - t0)
            fails += not ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    p50, p99 = percentiles(lat)
    return {"p50_ms": p50, "p99_ms": p99, "rps": n / wall, "failed": fails, "n": n}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(checkpoint: Path, port: int, batch: int, replicas: tuple[int, int], cpus: float) -> str:
    from ray import serve

    from services.app import ServeConfig, build_app

    cfg = ServeConfig.model_validate({
        "models": [{"name": "m", "path": str(checkpoint)}], "max_batch_size": batch, "batch_wait_timeout_s": 0.01,
        "num_cpus": cpus, "autoscaling": {"min_replicas": replicas[0], "max_replicas": replicas[1]}})
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    serve.run(build_app(cfg), name="actionllm", route_prefix="/", blocking=False, logging_config=quiet)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.5)


def http_caller(url: str, body: dict):
    local = threading.local()

    def call() -> bool:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        try:
            return local.client.post(f"{url}/v1/recognize", json=body).status_code == 200
        except httpx.HTTPError:
            return False

    return call


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("actionllm")
    return app.deployments["RecognizerServer"].replica_states.get("RUNNING", 0) if app else 0


def kill_test(url: str, body: dict, seconds: float) -> dict:
    import ray
    from ray.util.state import list_actors

    call, stop = http_caller(url, body), threading.Event()
    log: list[tuple[float, bool]] = []
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            ok = call()
            with lock:
                log.append((time.time(), ok))

    threads = [threading.Thread(target=client) for _ in range(4)]
    t0 = time.time()
    for t in threads:
        t.start()
    time.sleep(seconds / 3)
    victim = next(a for a in list_actors(filters=[("state", "=", "ALIVE")])
                  if "RecognizerServer" in (a.class_name or ""))
    t_kill = time.time()
    ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
    recovered = None  # a NEW replica actor alive and 2 replicas RUNNING (the dead one may still count a while)
    while time.time() - t0 < seconds:
        if recovered is None:
            alive = [a.name for a in list_actors(filters=[("state", "=", "ALIVE")])
                     if "RecognizerServer" in (a.class_name or "") and a.name != victim.name]
            if len(alive) >= 2 and running_replicas() >= 2:
                recovered = time.time() - t_kill
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    failed = [ts for ts, ok in log if not ok]
    return {"requests": len(log), "failed": len(failed), "recovered_s": recovered,
            "last_failure_after_kill_s": (max(failed) - t_kill) if failed else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msr_action3d")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level (at least 2 x c)")
    ap.add_argument("--kill-seconds", type=float, default=60)
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--kill-only", action="store_true", help="only the replica-kill test")
    args = ap.parse_args()

    import ray
    import torch
    from ray import serve

    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer
    from actionllm.skeleton.formats import get_reader
    from actionllm.skeleton.sequence import SkeletonSequence

    reader = get_reader("msr-action3d")(args.data)
    seq = next(iter(reader.read_file(reader.files()[0])))
    seq = seq.with_(joints=seq.joints[:, : args.frames], scores=None)
    body = {"layout": seq.layout, "frames": seq.joints[0].tolist()}
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    checkpoint = args.checkpoint or build_tiny(tmp, reader.class_names)
    print(f"recognizer {checkpoint}; request: {seq.num_frames} frames; torch threads {torch.get_num_threads()}",
          file=sys.stderr)

    results: dict[str, dict] = {}
    concurrency = [] if args.kill_only else args.concurrency
    rec = load_recognizer(checkpoint)
    one = SkeletonSequence("bench", seq.layout, seq.joints)
    recognize(rec, one)  # warm-up
    for c in concurrency:
        results[f"in-process c={c}"] = drive(lambda: bool(recognize(rec, one)), c, max(args.requests, 2 * c))

    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False, num_cpus=4)  # State API
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    for mode, batch in (() if args.kill_only else (("serve, no batching", 1), ("serve, batching", 16))):
        url = deploy(checkpoint, port, batch, (1, 1), args.cpus)
        call = http_caller(url, body)
        for _ in range(3):
            call()  # warm-up
        for c in args.concurrency:
            results[f"{mode} c={c}"] = drive(call, c, max(args.requests, 2 * c))
        serve.delete("actionllm")

    print("\n| mode | concurrency | p50 ms | p99 ms | req/s | req/s vs in-process | failed |\n|---|---|---|---|---|---|---|")
    for key, r in results.items():
        mode, c = key.rsplit(" c=", 1)
        base = results[f"in-process c={c}"]["rps"]
        print(f"| {mode} | {c} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['rps']:.2f} | {r['rps'] / base:.2f} | "
              f"{r['failed']} |")

    url = deploy(checkpoint, port, 16, (2, 2), min(args.cpus, 0.5))
    kill = kill_test(url, body, args.kill_seconds)
    print(f"\nkill one of 2 replicas during {args.kill_seconds:.0f} s of load (4 clients): {kill['requests']} requests, "
          f"{kill['failed']} failed; 2 replicas running again {kill['recovered_s'] and round(kill['recovered_s'], 1)} s "
          f"after the kill; last failure {kill['last_failure_after_kill_s'] and round(kill['last_failure_after_kill_s'], 1)}"
          f" s after it")
    if args.json:
        args.json.write_text(json.dumps({"latency": results, "kill": kill}, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
