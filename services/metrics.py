"""Whole-service Prometheus metrics: one collector, its state kept where a restart cannot lose it.

A Serve application runs several processes (the ingress replica(s), the recognizer replicas, which come and go
with autoscaling), and a Prometheus registry lives in one process. So that `GET /metrics` gives the whole
service and not one replica's fragment, every replica sends its observations as small event lists to one
`MetricsCollector` deployment (one replica, no CPU reserved), which folds them into its state and renders it.

No counter goes backwards, whatever restarts:
  - the state is plain data (each counter's value and each histogram's bucket counts and sum, per label set),
    rendered by a custom prometheus-client collector (`StateCollector`);
  - a batch of events is applied to a copy, the copy is persisted (`KVStore`: Ray's GCS key-value store), and
    only then does it become the state that `/metrics` shows and the call returns. So every value ever shown or
    acknowledged is stored, and a new collector replica restores it (a persist that fails changes nothing: the
    sender keeps its batch and sends it again);
  - a replica's `EventBuffer` keeps a batch the collector did not acknowledge (the collector gone, restarting,
    slow) and sends it again with the same sequence number; the collector applies each (sender, seq) once, so a
    batch whose answer was lost is not counted twice. The buffer is bounded (MAX_BUFFERED events; beyond, the
    oldest are dropped and counted in a warning).
The state lives as long as the Ray cluster (GCS), under the application's name: it survives the collector's
restarts and a redeploy of the application; a new cluster starts at 0, which Prometheus' rate() treats as a reset.
Only the events still in a killed ingress or recognizer replica's buffer (at most ~0.2 s of its requests) are lost.

Events are plain lists (kind, labels..., value): no pickled objects cross from a request.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from ray import serve

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
HEALTH_CHECK_PERIOD_S = 1.0  # Serve notices a dead replica at its next health check (Serve's default: 10 s)
MAX_BUFFERED = 50_000  # events a replica keeps while the collector is away (~80 bytes each)
MAX_SENDERS = 1000  # senders whose last sequence number the state remembers (the most recent)
FORMAT = 1  # of the stored state


@dataclass(frozen=True)
class Spec:
    """One metric: prometheus name (a counter's without `_total`), help, label names, a histogram's buckets."""

    attr: str
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # empty: a counter

    @property
    def histogram(self) -> bool:
        return bool(self.buckets)

    def declaration(self) -> Counter | Histogram:
        """prometheus-client's own object for this metric, registered nowhere and never observed (it checks the
        names as prometheus-client does; tools that list the metrics read it)."""
        if self.histogram:
            return Histogram(self.name, self.help, self.labels, buckets=self.buckets, registry=None)
        return Counter(self.name, self.help, self.labels, registry=None)


SPECS = (
    Spec("requests", "actionllm_requests", "Requests answered, by route, model and HTTP status",
         ("route", "model", "status")),
    Spec("latency", "actionllm_request_latency_seconds", "Request latency at the ingress", ("route", "model"),
         LATENCY_BUCKETS),
    Spec("batch_requests", "actionllm_batch_size_requests", "Requests per model batch", (), BATCH_BUCKETS),
    Spec("batch_windows", "actionllm_batch_size_windows", "Windows per model batch", (), BATCH_BUCKETS),
    Spec("windows", "actionllm_windows", "Windows recognised", ("model",)),
    Spec("tokens", "actionllm_tokens", "LLM tokens processed (0 for non-token models)", ("model",)),
    Spec("cache", "actionllm_model_cache", "Recognizer lookups on replicas: hit or load", ("model", "result")),
    Spec("evictions", "actionllm_model_evictions", "Recognizers evicted from replicas (LRU)", ("model",)),
)
BY_ATTR = {s.attr: s for s in SPECS}


# --- the state: plain data --------------------------------------------------------------------------------------
def empty_state() -> dict:
    """{version, values: {metric: {label values: counter value | [bucket counts (+Inf last), sum]}},
    senders: {sender: [last seq applied, when]}}; `version` counts the persisted changes."""
    return {"version": 0, "values": {s.name: {} for s in SPECS}, "senders": {}}


def _add(state: dict, attr: str, labels: tuple, amount: float) -> None:
    spec = BY_ATTR[attr]
    if not math.isfinite(amount) or (amount < 0 and not spec.histogram):
        raise ValueError(f"{spec.name}: {amount!r} (a counter only goes up, by a finite amount)")
    series = state["values"][spec.name]
    key = tuple(str(v) for v in labels)
    if not spec.histogram:
        series[key] = series.get(key, 0.0) + amount
        return
    counts, total = series.get(key) or ([0] * (len(spec.buckets) + 1), 0.0)
    i = next((k for k, b in enumerate(spec.buckets) if amount <= b), len(spec.buckets))
    counts = list(counts)
    counts[i] += 1
    series[key] = [counts, total + amount]


def apply_events(state: dict, events: list[list]) -> int:
    """Fold replicas' events into `state` (in place); a malformed event is logged and skipped, never fatal.
    Returns the number of events applied."""
    n = 0
    for ev in events:
        try:
            kind = ev[0]
            if kind == "request":
                _, route, model, status, seconds = ev
                seconds = float(seconds)
                _add(state, "latency", (route, model), seconds)  # checked first: a bad one changes nothing
                _add(state, "requests", (route, model, str(status)), 1)
            elif kind == "batch":
                _, requests, windows = ev
                requests, windows = int(requests), int(windows)
                _add(state, "batch_requests", (), requests)
                _add(state, "batch_windows", (), windows)
            elif kind == "windows":
                _, model, windows, tokens = ev
                windows, tokens = int(windows), int(tokens)
                if windows < 0 or tokens < 0:
                    raise ValueError("negative count")
                _add(state, "windows", (model,), windows)
                _add(state, "tokens", (model,), tokens)
            elif kind == "cache":
                _, model, result = ev
                _add(state, "cache", (model, result), 1)
            elif kind == "evict":
                _add(state, "evictions", (ev[1],), 1)
            else:
                log.warning("unknown metrics event %r", kind)
                continue
            n += 1
        except (ValueError, TypeError, IndexError) as err:
            log.warning("bad metrics event %r: %s", ev, err)
    return n


def dumps(state: dict) -> bytes:
    values = {name: [[list(k), v] for k, v in series.items()] for name, series in state["values"].items()}
    return json.dumps({"format": FORMAT, "version": state["version"], "values": values,
                       "senders": state["senders"]}, separators=(",", ":")).encode()


def loads(blob: bytes) -> dict:
    doc = json.loads(blob)
    if doc.get("format") != FORMAT:
        raise ValueError(f"stored metrics state has format {doc.get('format')!r}, this code reads {FORMAT}")
    state = empty_state()
    for name, series in doc["values"].items():
        if name in state["values"]:  # a metric no longer declared is dropped
            state["values"][name] = {tuple(k): v for k, v in series}
    state["version"], state["senders"] = int(doc["version"]), dict(doc["senders"])
    return state


# --- where the state is kept ------------------------------------------------------------------------------------
class KVStore:
    """Ray's GCS key-value store (ray.experimental.internal_kv), reachable from any process of the cluster and kept
    as long as the cluster is (with GCS fault tolerance, across a head restart too). Call from a Ray worker."""

    namespace = "actionllm"

    def __init__(self, key: str):
        self.key = key

    def load(self) -> bytes | None:
        from ray.experimental import internal_kv

        return internal_kv._internal_kv_get(self.key, namespace=self.namespace)

    def save(self, blob: bytes) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(self.key, blob, overwrite=True, namespace=self.namespace)


class FileStore:
    """A file, replaced atomically (for a single machine, and for tests)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def load(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def save(self, blob: bytes) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, self.path)


# --- the collector's side ---------------------------------------------------------------------------------------
class StateCollector:
    """A prometheus-client custom collector that renders a ServiceMetrics' state."""

    def __init__(self, metrics: ServiceMetrics):
        self.metrics = metrics

    def collect(self):
        values = self.metrics.state["values"]
        for spec in SPECS:
            series = values.get(spec.name, {})
            if not spec.histogram:
                fam = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
                for key, value in sorted(series.items()):
                    fam.add_metric(key, value)
                yield fam
                continue
            fam = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
            if not series and not spec.labels:  # as prometheus-client: an unlabelled histogram shows its zeros
                series = {(): [[0] * (len(spec.buckets) + 1), 0.0]}
            for key, (counts, total) in sorted(series.items()):
                cumulative, buckets = 0, []
                for bound, count in zip((*spec.buckets, math.inf), counts, strict=True):
                    cumulative += count
                    buckets.append((floatToGoString(bound), cumulative))
                fam.add_metric(key, buckets, total)
            yield fam


class ServiceMetrics:
    """The service's metrics: the state (restored from `store` at start), `record` (apply, persist, then show)
    and `render` (Prometheus text). `store`: None keeps the state in memory only."""

    def __init__(self, store: KVStore | FileStore | None = None):
        self.store = store
        self.lock = threading.Lock()  # Serve runs a sync method in a thread pool
        self.state = self._restore()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(self))
        for spec in SPECS:  # prometheus-client's declarations (never observed): self.requests, self.latency, ...
            setattr(self, spec.attr, spec.declaration())

    def _restore(self) -> dict:
        blob = self.store.load() if self.store is not None else None  # unreachable store: raise, never start at 0
        self._blob = blob  # the stored state as last read or written here
        if blob is None:
            return empty_state()
        try:
            state = loads(blob)
        except (ValueError, KeyError, TypeError) as err:
            log.error("stored metrics state unreadable (%s): counters start again at 0", err)
            return empty_state()
        log.info("metrics state restored (version %d)", state["version"])
        return state

    def _adopt_newer(self) -> None:
        """Another collector replica (two live for a moment during a redeploy) stored a newer state: start from it."""
        blob = self.store.load()
        if blob is not None and blob != self._blob:
            stored = loads(blob)
            if stored["version"] > self.state["version"]:
                self.state = stored
            self._blob = blob

    def record(self, events: list[list], sender: str | None = None, seq: int | None = None) -> int:
        """Apply a batch of events once: a (sender, seq) already applied is acknowledged and skipped. The new state
        is persisted before it is shown; if persisting raises, nothing changes and the error goes to the sender,
        which keeps the batch. Returns the number of events applied."""
        with self.lock:
            if self.store is not None:
                self._adopt_newer()
            if sender is not None and seq is not None and seq <= self.state["senders"].get(sender, (0,))[0]:
                return 0
            new = copy.deepcopy(self.state)
            n = apply_events(new, events)
            if sender is not None and seq is not None:
                new["senders"][sender] = [seq, time.time()]
                if len(new["senders"]) > MAX_SENDERS:  # forget the senders silent the longest (replicas long gone)
                    keep = sorted(new["senders"].items(), key=lambda kv: kv[1][1])[-MAX_SENDERS:]
                    new["senders"] = dict(keep)
            new["version"] += 1
            if self.store is not None:
                blob = dumps(new)
                self.store.save(blob)
                self._blob = blob
            self.state = new
            return n

    def render(self) -> bytes:
        with self.lock:  # only persisted states are ever shown (record swaps one in after saving it)
            return generate_latest(self.registry)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, health_check_period_s=HEALTH_CHECK_PERIOD_S)
class MetricsCollector:
    """The application's one metrics collector (the class lives here, not beside the recognizers, so that its
    replica imports no torch and a new one is up in seconds). State key: `metrics/<application name>`."""

    def __init__(self, key: str | None = None) -> None:
        self.metrics = ServiceMetrics(KVStore(key or f"metrics/{serve.get_replica_context().app_name}"))

    def record(self, events: list[list], sender: str | None = None, seq: int | None = None) -> int:
        return self.metrics.record(events, sender, seq)

    def render(self) -> bytes:
        return self.metrics.render()


# --- the replicas' side -----------------------------------------------------------------------------------------
class EventBuffer:
    """A replica's outbox of events, flushed to the collector in one call every `interval` s (and on demand). A batch
    the collector does not acknowledge (within `timeout` s) is kept and sent again, with backoff up to `max_retry_s`,
    under its sequence number; at most `max_events` events wait (beyond: the oldest are dropped, and said so)."""

    def __init__(self, collector, interval: float = 0.2, timeout: float = 10.0, max_events: int = MAX_BUFFERED,
                 max_retry_s: float = 2.0):
        self.collector, self.interval, self.timeout, self.max_retry_s = collector, interval, timeout, max_retry_s
        self.sender, self.seq = uuid.uuid4().hex, 0
        self.pending: deque[list] = deque(maxlen=max_events)
        self.sending: tuple[int, list[list]] | None = None  # the batch in flight, or to send again
        self.dropped = 0
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self._last_warning = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, *event) -> None:
        """Queue an event; callable from the replica's event loop or from another thread (Serve runs a
        multiplexed model's __del__ in an executor)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: hand it over (dropped only if no loop has ever run here)
            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.add, *event)
            return
        self.loop = loop
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
            self._warn(f"metrics buffer full ({self.pending.maxlen} events): {self.dropped} dropped so far")
        self.pending.append(list(event))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush_later())

    def buffered(self) -> int:
        return len(self.pending) + (len(self.sending[1]) if self.sending else 0)

    async def _flush_later(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            ok = await self.flush()
            if ok and not self.pending and self.sending is None:
                return
            delay = self.interval if ok else min(2 * delay, self.max_retry_s)

    async def flush(self) -> bool:
        """Send the batch left over by a failed send (same sequence number), then what is buffered. True when all
        of it reached the collector; False when a send failed (the batch stays; metrics never fail a request)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for _ in range(2):  # the left-over batch, then the fresh one
                if self.sending is None:
                    if not self.pending:
                        return True
                    self.seq += 1
                    self.sending = (self.seq, list(self.pending))
                    self.pending.clear()
                seq, events = self.sending
                try:
                    await asyncio.wait_for(self._send(events, seq), self.timeout)
                except Exception as err:  # noqa: BLE001 (the collector away, restarting, slow: keep, send again)
                    self._warn(f"could not send {len(events)} metrics events (kept, sent again): "
                               f"{type(err).__name__}: {err}")
                    return False
                self.sending = None
            return not self.pending

    async def _send(self, events: list[list], seq: int) -> None:
        await self.collector.record.remote(events, self.sender, seq)

    def _warn(self, message: str) -> None:  # once a minute at most
        if time.time() - self._last_warning > 60:
            log.warning(message)
            self._last_warning = time.time()
