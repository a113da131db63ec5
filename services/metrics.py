"""Whole-service Prometheus metrics (prometheus-client).

A Serve application runs several processes (the ingress replica(s), the recognizer replicas, which come
and go with autoscaling), and a prometheus-client registry lives in one process. So that `GET /metrics`
gives the whole service and not one replica's fragment, every replica sends its observations as small
event lists to one `MetricsCollector` deployment (one replica, no CPU reserved), which owns the only
registry and renders it. Counters there outlive replica restarts and scale-downs; when the collector itself
restarts, counters start again at 0, which Prometheus' rate() treats as a reset.

Events are plain tuples (kind, labels..., value): no pickled objects cross from a request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The registry and the metrics; `apply(events)` folds replicas' events in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("actionllm_requests", "Requests answered, by route, model and HTTP status",
                                ["route", "model", "status"], registry=r)
        self.latency = Histogram("actionllm_request_latency_seconds", "Request latency at the ingress",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("actionllm_batch_size_requests", "Requests per model batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_windows = Histogram("actionllm_batch_size_windows", "Windows per model batch",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.windows = Counter("actionllm_windows", "Windows recognised", ["model"], registry=r)
        self.tokens = Counter("actionllm_tokens", "LLM tokens processed (0 for non-token models)", ["model"],
                              registry=r)
        self.cache = Counter("actionllm_model_cache", "Recognizer lookups on replicas: hit or load",
                             ["model", "result"], registry=r)
        self.evictions = Counter("actionllm_model_evictions", "Recognizers evicted from replicas (LRU)",
                                 ["model"], registry=r)

    def apply(self, events: list[list]) -> None:
        for ev in events:
            try:
                kind = ev[0]
                if kind == "request":
                    _, route, model, status, seconds = ev
                    self.requests.labels(route, model, str(status)).inc()
                    self.latency.labels(route, model).observe(float(seconds))
                elif kind == "batch":
                    _, requests, windows = ev
                    self.batch_requests.observe(int(requests))
                    self.batch_windows.observe(int(windows))
                elif kind == "windows":
                    _, model, windows, tokens = ev
                    self.windows.labels(model).inc(int(windows))
                    self.tokens.labels(model).inc(int(tokens))
                elif kind == "cache":
                    _, model, result = ev
                    self.cache.labels(model, result).inc()
                elif kind == "evict":
                    self.evictions.labels(ev[1]).inc()
                else:
                    log.warning("unknown metrics event %r", kind)
            except (ValueError, TypeError, IndexError) as err:  # a malformed event is logged, never fatal
                log.warning("bad metrics event %r: %s", ev, err)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EventBuffer:
    """A replica's outbox of events, flushed to the collector in one call every `interval` s (and on demand)."""

    def __init__(self, collector, interval: float = 0.2):
        self.collector, self.interval = collector, interval
        self.pending: list[list] = []
        self._task: asyncio.Task | None = None
        self._last_error = 0.0
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
        self.pending.append(list(event))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()

    async def flush(self) -> None:
        events, self.pending = self.pending, []
        if not events:
            return
        try:
            await self.collector.record.remote(events)
        except Exception as err:  # metrics must never take a request down; say so (once a minute at most)
            if time.time() - self._last_error > 60:
                log.warning("could not send %d metrics events: %s", len(events), err)
                self._last_error = time.time()
