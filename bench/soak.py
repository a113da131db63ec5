"""Soak and failover: the service at a steady rate for minutes, then a recognizer replica, an ingress replica and the
metrics collector killed at once (ray.kill) while the load goes on; all figures from this one run.

    python bench/soak.py --minutes 10 [--rate 2] [--workers 4] [--kill-at 0.5] [--no-kill] [--json PATH]

The service: a joints-llm recognizer on the built-in `tiny` backbone (as bench/serve_latency.py builds it), 2 ingress
replicas (`ingress_replicas: 2`: with one, killing it drops the service until its replacement is up), 2 recognizer
replicas (min = max = 2, 0.5 CPU each), the metrics collector; Serve's HTTP proxy on 127.0.0.1; Ray workers at
this process's priority (RAY_worker_niceness=0). The load: `--workers` client threads share one schedule of `--rate`
operations per second, in the cycle valid x6, bad x3, stream x1:
  - valid: POST /v1/recognize, a real MSR Action3D sequence cut to 24 frames (3 windows); ok = 200 with a label;
  - bad: a request the service must refuse (wrong joint count, NaN, malformed JSON, unknown model, wrong media
    type, empty body, wrong type, unknown field, unknown layout); ok = exactly its 4xx;
  - stream: WS /v1/stream, the same 24 frames in 4 messages, `{end: true}`; ok = 3 windows answered, then `end`.
A scraper reads GET /metrics every 2 s and checks that no counter sample (`*_total`, `*_bucket`, `*_count`,
`*_sum`) ever goes down. Each replica's RSS is sampled every 15 s (psutil, by the actor's pid).

Failover figures, measured from the kill:
  - requests ok again: the end of the last failed valid request (0: none failed);
  - replicas restored: per deployment, the first moment serve.status() counts its target RUNNING **and** that many
    replica actors other than the killed ones are alive (Serve lists a dead replica as RUNNING until its next
    health check);
  - whole again: both of the above, and a valid request answered after it.
Prints: totals and errors by kind (steady = outside [kill, whole again]); per minute p50/p99 of valid requests;
each replica's RSS at its start, after its first minute, and at its end; the failover times; the goals checked.
`--json PATH` writes everything printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from serve_latency import build_tiny, free_port  # noqa: E402
from serve_latency import load as load_avg  # noqa: E402

CYCLE = ["valid"] * 6 + ["bad"] * 3 + ["stream"]
TARGETS = {"Ingress": 2, "RecognizerServer": 2, "MetricsCollector": 1}
COUNTER = re.compile(r"^(actionllm_\w+?(?:_total|_bucket|_count|_sum))(\{[^}]*\})? ([0-9.e+-]+)$")


# --- the service ------------------------------------------------------------------------------------------------
def deploy(checkpoint: Path, port: int, app: str = "actionllm", ingress: int = 2, recognizers: int = 2,
           cpus: float = 0.5, model: str = "m") -> str:
    """The service (no API key) as application `app` at route /; its URL once /healthz answers."""
    from ray import serve

    from services.app import ServeConfig, build_app

    os.environ.pop("ACTIONLLM_API_KEY", None)
    cfg = ServeConfig.model_validate({
        "models": [{"name": model, "path": str(checkpoint)}], "num_cpus": cpus, "ingress_replicas": ingress,
        "autoscaling": {"min_replicas": recognizers, "max_replicas": recognizers}})
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    serve.run(build_app(cfg), name=app, route_prefix="/", blocking=False,
              logging_config={"log_level": "WARNING", "enable_access_log": False})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200 and whole(app, set()):
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not come up in 10 minutes")


def replica_actors(app: str) -> list[dict]:
    """The application's live replica actors (deployment, name, pid), and the HTTP proxy's."""
    import ray
    from ray.util.state import list_actors

    out = []  # this Ray's address, named: other Ray instances may run on the machine
    for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                         limit=10_000, raise_on_missing_output=False):
        cls = a.class_name or ""
        if cls.startswith(f"ServeReplica:{app}:"):
            out.append({"deployment": cls.split(":")[-1], "name": a.name, "pid": a.pid})
        elif cls == "ProxyActor":
            out.append({"deployment": "HTTP proxy", "name": a.name, "pid": a.pid})
    return out


def restored(app: str, killed: set[str]) -> dict[str, bool]:
    """Per deployment: its target RUNNING (serve.status) and as many live replica actors not among `killed`."""
    from ray import serve

    status = serve.status().applications.get(app)
    alive: dict[str, int] = {}
    for a in replica_actors(app):
        if a["name"] not in killed:
            alive[a["deployment"]] = alive.get(a["deployment"], 0) + 1
    out = {}
    for dep, target in TARGETS.items():
        d = status.deployments.get(dep) if status else None
        out[dep] = bool(d) and d.replica_states.get("RUNNING", 0) >= target and alive.get(dep, 0) >= target
    return out


def whole(app: str, killed: set[str]) -> bool:
    return all(restored(app, killed).values())


def kill(app: str) -> dict[str, str]:
    """ray.kill one recognizer replica, one ingress replica and the metrics collector, at once."""
    import ray

    chosen = {}
    for a in replica_actors(app):
        if a["deployment"] in TARGETS and a["deployment"] not in chosen:
            chosen[a["deployment"]] = a["name"]
    for name in chosen.values():
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return chosen


def rss_mb(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


# --- the load ---------------------------------------------------------------------------------------------------
@dataclass
class Op:
    kind: str  # valid | bad | stream | metrics
    start: float
    end: float
    ok: bool
    error: str = ""  # the kind of failure


def bad_requests(payload: dict) -> list[tuple[str, dict, int]]:
    """(name, httpx.post kwargs, the status the service must answer): each refused before any model runs."""
    frames = payload["frames"]
    nan = json.loads(json.dumps(frames))
    nan[1][2][0] = float("nan")
    js = {"content-type": "application/json"}
    return [
        ("wrong joint count", {"json": {**payload, "frames": [f[:19] for f in frames]}}, 422),
        ("NaN", {"content": json.dumps({**payload, "frames": nan}), "headers": js}, 422),
        ("malformed JSON", {"content": b'{"frames": [[[1, 2', "headers": js}, 400),
        ("unknown model", {"json": {**payload, "model": "nope"}}, 404),
        ("media type", {"content": b"frames", "headers": {"content-type": "text/plain"}}, 415),
        ("empty body", {"content": b"", "headers": js}, 422),
        ("wrong type", {"json": {**payload, "frames": "abc"}}, 422),
        ("unknown field", {"json": {**payload, "extra": 1}}, 422),
        ("unknown layout", {"json": {**payload, "layout": "nope"}}, 422),
    ]


class Load:
    """`workers` threads take turns on one schedule of `rate` operations/s (CYCLE order); a late schedule restarts
    from now (no catch-up burst). Every operation is logged as an Op; `scrape_s`: GET /metrics every so often."""

    def __init__(self, url: str, payload: dict, rate: float, workers: int, scrape_s: float = 2.0):
        self.url, self.payload, self.rate, self.workers, self.scrape_s = url, payload, rate, workers, scrape_s
        self.content = json.dumps(payload).encode()
        self.bad = bad_requests(payload)
        self.ops: list[Op] = []
        self.backwards: list[str] = []  # counter samples that went down between two scrapes
        self.last: dict[str, float] = {}  # each counter sample's highest value seen
        self.metrics_text = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.slot, self.next_t = itertools.count(), 0.0
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.next_t = time.time()
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(self.workers)]
        self.threads.append(threading.Thread(target=self.scraper, daemon=True))
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)

    def log(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def take_slot(self) -> tuple[int, float]:
        with self.lock:
            now = time.time()
            if self.next_t < now - 1.0 / self.rate:
                self.next_t = now
            t, self.next_t = self.next_t, self.next_t + 1.0 / self.rate
            return next(self.slot), t

    def worker(self, i: int) -> None:
        client = httpx.Client(timeout=60)
        while not self.stop.is_set():
            k, t = self.take_slot()
            self.stop.wait(max(0.0, t - time.time()))
            if self.stop.is_set():
                break
            kind = CYCLE[k % len(CYCLE)]
            t0 = time.time()
            ok, error = {"valid": self.valid, "bad": self.bad_one, "stream": self.stream}[kind](client, k)
            self.log(Op(kind, t0, time.time(), ok, error))
        client.close()

    def valid(self, client: httpx.Client, k: int) -> tuple[bool, str]:
        try:
            r = client.post(f"{self.url}/v1/recognize", content=self.content,
                            headers={"content-type": "application/json"})
        except httpx.TimeoutException:
            return False, "timeout"
        except httpx.HTTPError as err:
            return False, f"connection: {type(err).__name__}"
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}"
        try:
            return ("label" in r.json()), "" if "label" in r.json() else "answer without a label"
        except ValueError:
            return False, "answer not JSON"

    def bad_one(self, client: httpx.Client, k: int) -> tuple[bool, str]:
        name, kw, status = self.bad[(k // len(CYCLE)) % len(self.bad)]
        try:
            r = client.post(f"{self.url}/v1/recognize", **kw)
        except httpx.HTTPError as err:
            return False, f"connection: {type(err).__name__}"
        if r.status_code == status and r.json().get("error"):
            return True, ""
        return False, f"HTTP {r.status_code} (want {status}: {name})"

    def stream(self, client: httpx.Client, k: int) -> tuple[bool, str]:
        from websockets.exceptions import ConnectionClosed, InvalidStatus
        from websockets.sync.client import connect

        frames = self.payload["frames"]
        try:
            with connect(self.url.replace("http", "ws", 1) + "/v1/stream", open_timeout=60) as ws:
                ws.send(json.dumps({}))
                if json.loads(ws.recv(timeout=60)).get("type") != "ready":
                    return False, "stream: no ready"
                for s in range(0, len(frames), 6):
                    ws.send(json.dumps({"frames": frames[s:s + 6]}))
                ws.send(json.dumps({"end": True}))
                windows = 0
                while True:
                    msg = json.loads(ws.recv(timeout=60))
                    if msg["type"] == "error":
                        return False, f"stream: error message {msg.get('error')}"
                    if msg["type"] == "end":
                        break
                    windows += msg["type"] == "window"
            want = (len(frames) - 12) // 6 + 1
            return windows == want, "" if windows == want else f"stream: {windows} windows, want {want}"
        except ConnectionClosed as err:
            return False, f"stream: closed {err.rcvd.code if err.rcvd else 'abnormally'}"
        except InvalidStatus as err:
            return False, f"stream: handshake HTTP {err.response.status_code}"
        except TimeoutError:
            return False, "stream: timeout"
        except OSError as err:
            return False, f"stream: connection {type(err).__name__}"

    def scraper(self) -> None:
        client = httpx.Client(timeout=60)
        while not self.stop.wait(self.scrape_s):
            t0 = time.time()
            try:
                r = client.get(f"{self.url}/metrics")
            except httpx.HTTPError as err:
                self.log(Op("metrics", t0, time.time(), False, f"connection: {type(err).__name__}"))
                continue
            if r.status_code != 200:
                self.log(Op("metrics", t0, time.time(), False, f"HTTP {r.status_code}"))
                continue
            self.check_monotonic(r.text)
            self.log(Op("metrics", t0, time.time(), True))

    def check_monotonic(self, text: str) -> None:
        seen = {}
        for line in text.splitlines():
            m = COUNTER.match(line)
            if m:
                seen[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        with self.lock:
            for name, before in self.last.items():
                now = seen.get(name, 0.0)  # a sample that vanished went back to 0
                if now < before:
                    self.backwards.append(f"{name}: {before:g} -> {now:g}")
            for name, now in seen.items():
                self.last[name] = max(now, self.last.get(name, 0.0))
            self.metrics_text = text


# --- one run ----------------------------------------------------------------------------------------------------
def soak(url: str, app: str, payload: dict, seconds: float, kill_at: float | None, rate: float = 2.0,
         workers: int = 4, rss_every: float = 15.0, whole_timeout: float = 120.0, progress=None) -> dict:
    """Drive the service for `seconds` (kills at `kill_at` s, None: none; the run is extended until the service is
    whole again, at most `whole_timeout` s after the kill). Returns the run's figures (see summarise)."""
    load = Load(url, payload, rate, workers)
    rss: dict[str, dict] = {}  # actor name -> {deployment, samples [(t, MiB)]}
    events: dict = {"killed": {}, "t_kill": None, "restored": {}, "whole_s": None}
    t0 = time.time()

    def sample_rss() -> None:
        now = time.time() - t0
        for a in replica_actors(app):
            mb = rss_mb(a["pid"])
            if mb is not None:
                rss.setdefault(a["name"], {"deployment": a["deployment"], "samples": []})["samples"].append((now, mb))

    load.start()
    sample_rss()
    next_rss, deadline = time.time() + rss_every, t0 + seconds
    while True:
        now = time.time()
        if kill_at is not None and events["t_kill"] is None and now - t0 >= kill_at:
            sample_rss()
            events["t_kill"] = time.time()
            events["killed"] = kill(app)
            if progress:
                progress(f"killed {events['killed']}")
        t_kill = events["t_kill"]
        if t_kill is not None and events["whole_s"] is None:
            state = restored(app, set(events["killed"].values()))
            for dep in events["killed"]:
                if dep not in events["restored"] and state[dep]:
                    events["restored"][dep] = time.time() - t_kill
            if len(events["restored"]) == len(events["killed"]):
                events["whole_s"] = max(events["restored"].values())
        if now >= next_rss:
            sample_rss()
            next_rss += rss_every
            if progress:
                progress(f"{now - t0:.0f} s: {len(load.ops)} operations, load average {load_avg()}")
        pending = t_kill is not None and events["whole_s"] is None and now - t_kill < whole_timeout
        if now >= deadline and not pending:
            break
        time.sleep(0.5)
    sample_rss()
    # after whole again: one more valid request must be answered
    events["answered_after"] = load.valid(httpx.Client(timeout=60), 0)[0]
    load.finish()
    return summarise(load, rss, events, t0, time.time())


def percentile_ms(lat: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(lat) * 1e3, q)) if lat else None


def summarise(load: Load, rss: dict, events: dict, t0: float, t1: float) -> dict:
    t_kill, whole_s = events["t_kill"], events["whole_s"]
    window = (t_kill, t_kill + whole_s) if t_kill is not None and whole_s is not None else \
        ((t_kill, t1) if t_kill is not None else None)

    def phase(op: Op) -> str:  # an op in flight at any moment of [kill, whole again] belongs to the failover
        if window and op.end >= window[0] and op.start <= window[1]:
            return "failover"
        return "steady"

    totals: dict = {}
    for op in load.ops:
        p = totals.setdefault(phase(op), {}).setdefault(op.kind, {"n": 0, "failed": 0, "errors": {}})
        p["n"] += 1
        if not op.ok:
            p["failed"] += 1
            p["errors"][op.error] = p["errors"].get(op.error, 0) + 1
    valid = [op for op in load.ops if op.kind == "valid"]
    failed_valid = [op for op in valid if not op.ok]
    minutes = []
    for m in range(int((t1 - t0) // 60) + 1):
        ops = [op for op in valid if t0 + 60 * m <= op.start < t0 + 60 * (m + 1)]
        lat = [op.end - op.start for op in ops if op.ok]
        if ops:
            minutes.append({"minute": m + 1, "valid": len(ops), "failed": sum(not op.ok for op in ops),
                            "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99),
                            "kill": t_kill is not None and t0 + 60 * m <= t_kill < t0 + 60 * (m + 1),
                            "ops": sum(t0 + 60 * m <= op.start < t0 + 60 * (m + 1) for op in load.ops)})
    replicas = []
    for name, r in rss.items():
        s = r["samples"]
        born, last = s[0][0], s[-1][0]
        after_minute = next((mb for t, mb in s if t >= born + 60), None)
        replicas.append({"deployment": r["deployment"], "name": name, "killed": name in events["killed"].values(),
                         "first_s": born, "last_s": last, "start_mb": s[0][1], "minute_mb": after_minute,
                         "end_mb": s[-1][1], "samples": [(round(t), round(mb, 1)) for t, mb in s],
                         "growth_pct": (100 * (s[-1][1] / after_minute - 1)) if after_minute and last - born >= 120
                         else None})
    fail_ends = [op.end for op in failed_valid if t_kill is not None and op.end >= t_kill]
    ref = t_kill if t_kill is not None else t0  # failures' times: from the kill (else from the start)
    failures = [{"kind": op.kind, "error": op.error, "start_s": op.start - ref, "end_s": op.end - ref}
                for op in load.ops if not op.ok]
    five = sum(1 for op in load.ops if op.error.startswith("HTTP 5"))
    return {
        "seconds": t1 - t0, "ops": len(load.ops), "rate": len(load.ops) / (t1 - t0), "totals": totals,
        "valid": len(valid), "failed_valid": len(failed_valid),
        "failed_valid_pct": 100 * len(failed_valid) / max(1, len(valid)), "http_5xx": five,
        "backwards": load.backwards, "minutes": minutes, "replicas": replicas, "failures": failures,
        "kill_at_s": (t_kill - t0) if t_kill else None, "killed": events["killed"], "restored_s": events["restored"],
        "requests_ok_s": (max(fail_ends) - t_kill if fail_ends else 0.0) if t_kill is not None else None,
        "whole_s": whole_s, "answered_after": events["answered_after"],
        "counted_200": _count(load.metrics_text, 'route="/v1/recognize"', 'status="200"'),
        "answered_200": sum(1 for op in valid if op.ok),
    }


def _count(text: str, *needles: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("actionllm_requests_total{") and all(n in line for n in needles):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- report -----------------------------------------------------------------------------------------------------
def fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def per_minute(samples: list) -> str:
    """The RSS sample nearest each whole minute of a replica's life (from its first sample), and its last."""
    born, marks = samples[0][0], []
    for k in range(int((samples[-1][0] - born) // 60) + 1):
        marks.append(min(samples, key=lambda s: abs(s[0] - born - 60 * k))[1])
    return " ".join(f"{mb:.0f}" for mb in [*marks, samples[-1][1]])


def report(r: dict) -> str:
    out = [f"\n{r['seconds']:.0f} s, {r['ops']} operations ({r['rate']:.2f}/s, /metrics scrapes included), load "
           f"average {load_avg()}"]
    out.append("\n| phase | kind | operations | failed | errors by kind |\n|---|---|---|---|---|")
    for ph in ("steady", "failover"):
        for kind in ("valid", "bad", "stream", "metrics"):
            t = r["totals"].get(ph, {}).get(kind)
            if t:
                errs = "; ".join(f"{k}: {v}" for k, v in sorted(t["errors"].items())) or "-"
                out.append(f"| {ph} | {kind} | {t['n']} | {t['failed']} | {errs} |")
    out.append("\n| minute | operations | valid | failed | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for m in r["minutes"]:
        out.append(f"| {m['minute']}{' (kill)' if m['kill'] else ''} | {m['ops']} | {m['valid']} | {m['failed']} | "
                   f"{fmt(m['p50_ms'])} | {fmt(m['p99_ms'])} |")
    out.append("\n| replica | start s | RSS MiB at start | after its 1st minute | at its end (s) | growth after "
               "1st minute | MiB at each minute of its life |\n|---|---|---|---|---|---|---|")
    for p in sorted(r["replicas"], key=lambda p: (p["deployment"], p["first_s"])):
        end = f"{p['end_mb']:.0f} ({p['last_s']:.0f}{', killed' if p['killed'] else ''})"
        out.append(f"| {p['deployment']} {p['name'][-8:]} | {p['first_s']:.0f} | {p['start_mb']:.0f} | "
                   f"{fmt(p['minute_mb'])} | {end} | {fmt(p['growth_pct'], 1) + ' %' if p['growth_pct'] is not None else '-'} | "
                   f"{per_minute(p['samples'])} |")
    if r["kill_at_s"] is not None:
        restored = ", ".join(f"{d} {fmt(s, 1)} s" for d, s in r["restored_s"].items())
        out.append(f"\nkilled at {r['kill_at_s']:.0f} s: {', '.join(r['killed'])}; valid requests ok again "
                   f"{fmt(r['requests_ok_s'], 1)} s after the kill; replicas restored: {restored}; whole again "
                   f"{fmt(r['whole_s'], 1)} s after the kill (a valid request answered after: {r['answered_after']})")
    if r["failures"]:
        out.append("failures (s from the kill): " + "; ".join(
            f"{f['kind']} {f['error']} [{f['start_s']:+.1f}, {f['end_s']:+.1f}]" for f in r["failures"][:20]))
    out.append(f"valid requests failed: {r['failed_valid']} of {r['valid']} ({r['failed_valid_pct']:.2f} %); HTTP 5xx: "
               f"{r['http_5xx']}; counters that went backwards in /metrics: {len(r['backwards'])} "
               f"{r['backwards'][:5] if r['backwards'] else ''}")
    out.append(f"/v1/recognize 200s counted in /metrics {r['counted_200']:.0f}, answered to clients "
               f"{r['answered_200']} (events still buffered in a killed replica are lost; a final scrape may miss "
               "the last ~0.2 s)")
    return "\n".join(out)


def goals(r: dict) -> list[tuple[str, bool, str]]:
    steady = r["totals"].get("steady", {})
    steady_5xx = sum(v for t in steady.values() for k, v in t["errors"].items() if k.startswith("HTTP 5"))
    steady_failed = steady.get("valid", {}).get("failed", 0) + steady.get("stream", {}).get("failed", 0)
    growth = [p["growth_pct"] for p in r["replicas"] if p["growth_pct"] is not None]
    p99 = [m["p99_ms"] for m in r["minutes"][1:] if not m["kill"] and m["p99_ms"] is not None and m["valid"] >= 10]
    out = [("0 5xx outside the failover", steady_5xx == 0, str(steady_5xx)),
           ("0 failed valid requests / streams outside the failover", steady_failed == 0, str(steady_failed)),
           ("RSS growth < 5 % after the first minute (replicas that lived >= 2 min)",
            bool(growth) and max(growth) < 5, f"max {max(growth):.1f} %" if growth else "no replica lived 2 min"),
           ("p99 flat (last / second minute, kill minute excluded)", len(p99) >= 2 and p99[-1] <= 1.5 * p99[0],
            f"{p99[-1] / p99[0]:.2f}" if len(p99) >= 2 else "too short")]
    if r["kill_at_s"] is not None:
        out += [("valid requests failed <= 0.5 %", r["failed_valid_pct"] <= 0.5, f"{r['failed_valid_pct']:.2f} %"),
                ("no counter went backwards", not r["backwards"], str(len(r["backwards"]))),
                ("requests ok again within 10 s", r["requests_ok_s"] is not None and r["requests_ok_s"] <= 10,
                 f"{fmt(r['requests_ok_s'], 1)} s"),
                ("replicas restored within 10 s", r["whole_s"] is not None and r["whole_s"] <= 10,
                 f"{fmt(r['whole_s'], 1)} s")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=2.0, help="operations per second (valid:bad:stream = 6:3:1)")
    ap.add_argument("--workers", type=int, default=4, help="client threads (operations in flight at most)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="when to kill, as a fraction of the run")
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--cpus", type=float, default=0.5, help="CPUs per recognizer replica (= its torch threads, >= 1)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msr_action3d")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import ray
    from ray import serve

    from actionllm.skeleton.formats import get_reader

    reader = get_reader("msr-action3d")(args.data)
    seq = next(iter(reader.read_file(reader.files()[0])))
    payload = {"layout": seq.layout, "frames": seq.joints[0, :24].tolist()}  # 24 frames: 3 windows (N=12, stride 6)
    checkpoint = build_tiny(Path(tempfile.mkdtemp(prefix="soak-")), reader.class_names)
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves the service on a shared machine
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), configure_logging=False)  # the dashboard serves the State API (actors)
    t = time.time()
    url = deploy(checkpoint, free_port(), cpus=args.cpus)
    print(f"service up in {time.time() - t:.0f} s at {url}; load average {load_avg()}", file=sys.stderr)
    seconds = args.minutes * 60
    r = soak(url, "actionllm", payload, seconds, None if args.no_kill else args.kill_at * seconds, args.rate,
             args.workers, progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(report(r))
    print("\ngoals:")
    for name, ok, value in goals(r):
        print(f"  {'met ' if ok else 'NOT met'}  {name}: {value}")
    if args.json:
        args.json.write_text(json.dumps({**r, "goals": goals(r), "load_average": load_avg()}, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
