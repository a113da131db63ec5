"""Benchmark: latency and throughput of recognition (a) in-process, (b) through Serve without batching,
(c) through Serve with batching, at several concurrencies, in one run, at EQUAL CPUs; then one replica killed
under load.

    python bench/serve_latency.py --cpus 2 [--checkpoint DIR] [--data ../shared/data/msr_action3d] [--frames 24]
                                  [--concurrency 1 8 32] [--requests 48] [--kill-seconds 60] [--json PATH]

Fair by construction: the replica reserves --cpus CPUs and runs torch with that many threads
(torch.set_num_threads, done by services/app.py), and the in-process run uses the same number of threads and, like a
replica, one forward at a time (concurrent callers queue on a lock); Ray's workers run at this process's priority
(RAY_worker_niceness=0; Ray's default, 15, starves them on a shared machine); the modes take turns at each
concurrency. Without --checkpoint, a joints-llm recognizer on the built-in `tiny` backbone is built (random adapter
and head: latency does not depend on trained weights).
The request is a real MSR Action3D sequence cut to --frames frames (N=12, stride 6 -> 3 windows). Clients are
threads with one httpx connection each, over real HTTP on 127.0.0.1 (the body is encoded once, not per call).
Prints p50/p99 latency (ms) and requests/s per mode and concurrency, side by side with in-process and with Serve
without batching; then where a served request's time went (the ingress's Server-Timing header, mean ms);
then the kill test (--kill-seconds 0 skips it): 2 fixed replicas, load at concurrency 4, one RecognizerServer
replica killed (ray.kill) after a third of it: failed requests and seconds until 2 replicas run again.
`--json PATH` writes {"rows": [{mode, concurrency, p50_ms, p99_ms, rps, breakdown, ...}], "kill": ..., ...}
with modes in-process, serve, serve-batching.
"""

from __future__ import annotations

import argparse
import json
import os
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
    """n calls from `concurrency` threads; latency of each, throughput of all; `call` returns (ok, timing dict)."""
    lat, fails, timings = [], 0, []
    lock = threading.Lock()

    def one(_):
        nonlocal fails
        t0 = time.perf_counter()
        ok, timing = call()
        dt = time.perf_counter() - t0
        with lock:
            lat.append(dt)
            fails += not ok
            if timing:
                timings.append({**timing, "client": dt * 1e3})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    p50, p99 = percentiles(lat)
    keys = timings[0].keys() if timings else ()
    breakdown = {k: float(np.mean([t.get(k, 0.0) for t in timings])) for k in keys}
    return {"p50_ms": p50, "p99_ms": p99, "rps": n / wall, "failed": fails, "n": n, "breakdown": breakdown}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(checkpoint: Path, port: int, batch: int, replicas: tuple[int, int], cpus: float, wait_s: float,
           name: str = "actionllm") -> str:
    """The service as application `name` (route prefix /NAME, or / for actionllm); its URL once it answers."""
    from ray import serve

    from services.app import ServeConfig, build_app

    cfg = ServeConfig.model_validate({
        "models": [{"name": "m", "path": str(checkpoint)}], "max_batch_size": batch, "batch_wait_timeout_s": wait_s,
        "num_cpus": cpus, "autoscaling": {"min_replicas": replicas[0], "max_replicas": replicas[1]}})
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    prefix = "/" if name == "actionllm" else f"/{name}"
    serve.run(build_app(cfg), name=name, route_prefix=prefix, blocking=False, logging_config=quiet)
    url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.5)


def server_timing(header: str | None) -> dict:
    """`a;dur=1.5, b;dur=2` -> {a: 1.5, b: 2.0}."""
    out = {}
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


def http_caller(url: str, body: dict):
    local = threading.local()
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}

    def call() -> tuple[bool, dict]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=300)
        try:
            r = local.client.post(f"{url}/v1/recognize", content=content, headers=headers)
            r.json()
            return r.status_code == 200, server_timing(r.headers.get("server-timing"))
        except httpx.HTTPError:
            return False, {}

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
            ok, _ = call()
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


BREAKDOWN = (("client", "client: whole request"), ("ingress", "ingress: route + FastAPI (de)serialisation"),
             ("validate", "ingress: validation + windows"), ("call", "ingress -> replica -> ingress"),
             ("replica", "replica: all of predict()"), ("queue", "replica: waiting for the model (batch)"),
             ("model", "replica: the batch's predict_windows"), ("aggregate", "ingress: aggregate"),
             ("batch_requests", "requests per batch (count)"), ("batch_windows", "windows per batch (count)"))


def print_tables(rows: list[dict], cpus: float) -> None:
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    print(f"\nequal CPUs: {cpus:g} per replica, torch threads {max(1, int(cpus))} in-process and in the replica, "
          f"Ray workers at nice {os.environ.get('RAY_worker_niceness', 15)} (this process: {os.nice(0)}); "
          f"load average {load()}")
    print("\n| mode | concurrency | p50 ms | p99 ms | req/s | p50 - in-process p50 | req/s vs in-process | "
          "req/s vs serve | failed |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base, serve = by[("in-process", r["concurrency"])], by.get(("serve", r["concurrency"]))
        vs_serve = f"{r['rps'] / serve['rps']:.2f}" if serve else "-"
        print(f"| {r['mode']} | {r['concurrency']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['rps']:.2f} | "
              f"{r['p50_ms'] - base['p50_ms']:+.0f} | {r['rps'] / base['rps']:.2f} | {vs_serve} | {r['failed']} |")
    served = [r for r in rows if r["breakdown"]]
    if served:
        print("\nwhere a served request's time went (mean ms per request; from the ingress's Server-Timing header)")
        cols = [f"{r['mode']} c={r['concurrency']}" for r in served]
        print("| part | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        base = {r["concurrency"]: by[("in-process", r["concurrency"])]["breakdown_inproc"] for r in served}
        for key, label in BREAKDOWN:
            print(f"| {label} | " + " | ".join(f"{r['breakdown'].get(key, 0):.1f}" for r in served) + " |")
        print("| client - ingress (HTTP, proxy, client) | " + " | ".join(
            f"{r['breakdown'].get('client', 0) - r['breakdown'].get('ingress', 0):.1f}" for r in served) + " |")
        print("| in-process recognize, same request (mean) | " + " | ".join(
            f"{base[r['concurrency']]:.1f}" for r in served) + " |")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msr_action3d")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level (at least 2 x c)")
    ap.add_argument("--kill-seconds", type=float, default=60, help="0: no kill test")
    ap.add_argument("--cpus", type=float, default=2.0, help="CPUs per replica = torch threads in-process and in it")
    ap.add_argument("--batch", type=int, default=16, help="max_batch_size of serve-batching")
    ap.add_argument("--wait", type=float, default=0.01, help="batch_wait_timeout_s of serve-batching")
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

    threads = max(1, int(args.cpus))
    torch.set_num_threads(threads)  # = what services/app.py gives a replica of --cpus CPUs
    reader = get_reader("msr-action3d")(args.data)
    seq = next(iter(reader.read_file(reader.files()[0])))
    seq = seq.with_(joints=seq.joints[:, : args.frames], scores=None)
    body = {"layout": seq.layout, "frames": seq.joints[0].tolist()}
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    checkpoint = args.checkpoint or build_tiny(tmp, reader.class_names)
    print(f"recognizer {checkpoint}; request: {seq.num_frames} frames; torch threads {torch.get_num_threads()} "
          f"in-process and in the replica (num_cpus {args.cpus:g}); load average {load()}", file=sys.stderr)

    rows: list[dict] = []
    concurrency = [] if args.kill_only else args.concurrency
    rec = load_recognizer(checkpoint)
    one = SkeletonSequence("bench", seq.layout, seq.joints)
    model_lock = threading.Lock()  # one forward at a time, as in a replica
    compute: list[float] = []

    def in_process() -> tuple[bool, dict]:
        with model_lock:
            t0 = time.perf_counter()
            ok = bool(recognize(rec, one))
            compute.append((time.perf_counter() - t0) * 1e3)
        return ok, {}

    # Ray starts its workers (the Serve proxy and replicas) at nice 15 (RAY_worker_niceness): on a machine that also
    # runs other work, they then get a fraction of the CPU time this (nice 0) process gets for in-process runs
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False,
             num_cpus=max(4, int(2 * args.cpus + 0.999)))  # the State API (kill test); both modes' replicas at once
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    callers = {"in-process": in_process}
    for mode, batch in (() if args.kill_only else (("serve", 1), ("serve-batching", args.batch))):
        callers[mode] = http_caller(deploy(checkpoint, port, batch, (1, 1), args.cpus, args.wait, name=mode), body)
    for call in callers.values():
        for _ in range(5):
            call()  # warm-up
    # the modes take turns at each concurrency, so that a change in the machine's load hits all of them alike
    for c in concurrency:
        for mode, call in callers.items():
            compute.clear()
            r = drive(call, c, max(args.requests, 2 * c))
            rows.append({"mode": mode, "concurrency": c, **r,
                         **({"breakdown_inproc": float(np.mean(compute))} if mode == "in-process" else {})})
    for mode in callers:
        if mode != "in-process":
            serve.delete(mode)
    order = list(callers)
    rows.sort(key=lambda r: (order.index(r["mode"]), r["concurrency"]))

    if rows:
        print_tables(rows, args.cpus)
    kill = None
    if args.kill_seconds > 0:
        url = deploy(checkpoint, port, args.batch, (2, 2), min(args.cpus, 0.5), args.wait)
        kill = kill_test(url, body, args.kill_seconds)
        print(f"\nkill one of 2 replicas during {args.kill_seconds:.0f} s of load (4 clients): {kill['requests']} "
              f"requests, {kill['failed']} failed; 2 replicas running again "
              f"{kill['recovered_s'] and round(kill['recovered_s'], 1)} s after the kill; last failure "
              f"{kill['last_failure_after_kill_s'] and round(kill['last_failure_after_kill_s'], 1)} s after it")
    if args.json:
        args.json.write_text(json.dumps({"cpus": args.cpus, "torch_threads": threads, "load_average": load(),
                                         "rows": rows, "kill": kill}, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
