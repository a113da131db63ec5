"""services/metrics.py without Ray: the collector's state as plain data, its rendering, its persistence across a
restart (a file store stands in for Ray's GCS key-value store), exactly-once batches, and a replica's EventBuffer
keeping and resending what the collector did not acknowledge."""

import asyncio
import re

import pytest

from services.metrics import EventBuffer, FileStore, ServiceMetrics

EVENTS = [["request", "/v1/recognize", "alpha", 200, 0.3], ["request", "/v1/recognize", "alpha", 422, 0.01],
          ["batch", 3, 9], ["windows", "alpha", 9, 100], ["cache", "alpha", "load"], ["evict", "alpha"]]


def samples(text: bytes) -> dict[str, float]:
    """Prometheus text -> {sample with labels: value}."""
    out = {}
    for line in text.decode().splitlines():
        m = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+|[+-]Inf|NaN)$", line)
        if m:  # labels in a fixed order (route, model, status / result, le), whatever order the text has
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            order = ["route", "model", "status", "result", "le"]
            inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels, key=order.index))
            out[m.group(1) + (f"{{{inner}}}" if inner else "")] = float(m.group(3))
    return out


def test_render_is_what_prometheus_client_rendered(tmp_path):
    m = ServiceMetrics()
    assert m.record(EVENTS) == 6
    s = samples(m.render())
    assert s['actionllm_requests_total{route="/v1/recognize",model="alpha",status="200"}'] == 1
    assert s['actionllm_requests_total{route="/v1/recognize",model="alpha",status="422"}'] == 1
    lat = 'actionllm_request_latency_seconds_{}{{route="/v1/recognize",model="alpha"{}}}'
    assert s[lat.format("bucket", ',le="0.005"')] == 0 and s[lat.format("bucket", ',le="0.01"')] == 1
    assert s[lat.format("bucket", ',le="0.5"')] == 2 and s[lat.format("bucket", ',le="+Inf"')] == 2
    assert s[lat.format("count", "")] == 2 and s[lat.format("sum", "")] == pytest.approx(0.31)
    assert s['actionllm_batch_size_requests_bucket{le="2.0"}'] == 0
    assert s['actionllm_batch_size_requests_bucket{le="4.0"}'] == 1 and s["actionllm_batch_size_requests_sum"] == 3
    assert s['actionllm_batch_size_windows_bucket{le="16.0"}'] == 1 and s["actionllm_batch_size_windows_count"] == 1
    assert s['actionllm_windows_total{model="alpha"}'] == 9 and s['actionllm_tokens_total{model="alpha"}'] == 100
    assert s['actionllm_model_cache_total{model="alpha",result="load"}'] == 1
    assert s['actionllm_model_evictions_total{model="alpha"}'] == 1
    text = m.render().decode()
    assert "# TYPE actionllm_requests_total counter" in text and "# TYPE actionllm_request_latency_seconds histogram" in text
    # an unlabelled histogram shows its zeros before any observation, as prometheus-client's did
    assert samples(ServiceMetrics().render())["actionllm_batch_size_windows_count"] == 0


def test_malformed_events_are_skipped_never_fatal():
    m = ServiceMetrics()
    bad = [["bogus"], ["request", "x"], ["windows", "alpha", -3, 0], ["request", "/r", "m", 200, float("nan")],
           ["batch", "many", 1], ["evict"]]
    assert m.record(bad + [["cache", "alpha", "hit"]]) == 1
    s = samples(m.render())
    assert s == {**samples(ServiceMetrics().render()), 'actionllm_model_cache_total{model="alpha",result="hit"}': 1}


def test_a_restarted_collector_shows_every_value_it_showed(tmp_path):
    store = FileStore(tmp_path / "state.json")
    first = ServiceMetrics(store)
    shown = []
    for k in range(5):
        first.record(EVENTS[: k + 2], "replica-a", k + 1)
        shown.append(samples(first.render()))
        # a collector started now (the first one killed just after this render) shows the same values
        assert samples(ServiceMetrics(store).render()) == shown[-1]
    second = ServiceMetrics(store)
    second.record([["request", "/v1/recognize", "alpha", 200, 0.2]], "replica-a", 6)
    after = samples(second.render())
    for name, value in shown[-1].items():  # nothing went backwards
        assert after[name] >= value, name
    assert after['actionllm_requests_total{route="/v1/recognize",model="alpha",status="200"}'] == 6


def test_a_batch_is_applied_once_also_across_a_restart(tmp_path):
    store = FileStore(tmp_path / "state.json")
    m = ServiceMetrics(store)
    assert m.record(EVENTS, "replica-a", 1) == 6
    assert m.record(EVENTS, "replica-a", 1) == 0  # the sender did not hear the answer and sent it again
    assert ServiceMetrics(store).record(EVENTS, "replica-a", 1) == 0  # ... to a new collector
    assert m.record(EVENTS, "replica-b", 1) == 6  # another sender's seq 1
    s = samples(ServiceMetrics(store).render())
    assert s['actionllm_requests_total{route="/v1/recognize",model="alpha",status="200"}'] == 2


def test_a_failed_persist_changes_nothing_and_the_batch_is_sent_again(tmp_path):
    class Flaky(FileStore):
        fail = True

        def save(self, blob):
            if self.fail:
                raise OSError("store unreachable")
            super().save(blob)

    store = Flaky(tmp_path / "state.json")
    m = ServiceMetrics(store)
    before = m.render()
    with pytest.raises(OSError):
        m.record(EVENTS, "a", 1)
    assert m.render() == before  # the failed batch is not shown
    store.fail = False
    assert m.record(EVENTS, "a", 1) == 6  # the sender's retry is applied (once)
    assert samples(m.render()) == samples(ServiceMetrics(store).render())


def test_two_collectors_on_one_store_lose_no_batch(tmp_path):
    """During a redeploy two collector replicas may live for a moment: each starts from the newer stored state."""
    store = FileStore(tmp_path / "state.json")
    old, new = ServiceMetrics(store), ServiceMetrics(store)
    for k in range(1, 7):
        (old if k % 2 else new).record([["evict", "alpha"]], "r", k)
    for m in (old, new, ServiceMetrics(store)):
        m.record([], "r", 6)  # (a duplicate: adopts the stored state, applies nothing)
        assert samples(m.render())['actionllm_model_evictions_total{model="alpha"}'] == 6


class FakeCollector:
    """A collector deployment's handle: `record.remote(...)` awaitable; it can refuse, hang, or apply and then lose
    its answer (the replica killed between applying and replying)."""

    def __init__(self, metrics: ServiceMetrics):
        self.metrics, self.refuse, self.hang, self.lose_answer, self.calls = metrics, 0, 0, 0, []

    @property
    def record(self):
        return self

    def remote(self, events, sender, seq):
        async def call():
            self.calls.append((seq, len(events)))
            if self.refuse:
                self.refuse -= 1
                raise ConnectionError("collector gone")
            if self.hang:
                self.hang -= 1
                await asyncio.sleep(60)
            n = self.metrics.record(events, sender, seq)
            if self.lose_answer:
                self.lose_answer -= 1
                raise ConnectionError("answer lost")
            return n

        return call()


def test_event_buffer_keeps_and_resends_until_the_collector_is_back(tmp_path):
    metrics = ServiceMetrics(FileStore(tmp_path / "state.json"))
    collector = FakeCollector(metrics)

    async def scenario():
        buf = EventBuffer(collector, interval=0.01, timeout=0.2, max_retry_s=0.05)
        collector.refuse, collector.hang, collector.lose_answer = 3, 1, 1
        for k in range(40):
            buf.add("request", "/v1/recognize", "alpha", 200, 0.1)
            if k % 10 == 0:
                await asyncio.sleep(0.02)
        for _ in range(200):  # the background flushes retry on their own
            await asyncio.sleep(0.02)
            if buf.buffered() == 0 and buf._task.done():
                break
        assert buf.buffered() == 0 and buf.dropped == 0
        return buf

    buf = asyncio.run(scenario())
    s = samples(metrics.render())
    assert s['actionllm_requests_total{route="/v1/recognize",model="alpha",status="200"}'] == 40  # none lost, none twice
    seqs = [seq for seq, _ in collector.calls]
    assert seqs == sorted(seqs) and len(seqs) > len(set(seqs))  # batches were sent again under their number
    assert buf.seq == max(seqs)


def test_event_buffer_is_bounded_and_counts_what_it_drops():
    async def scenario():
        buf = EventBuffer(FakeCollector(ServiceMetrics()), interval=60, max_events=5)
        for k in range(8):
            buf.add("evict", f"m{k}")
        assert buf.buffered() == 5 and buf.dropped == 3
        assert [e[1] for e in buf.pending] == ["m3", "m4", "m5", "m6", "m7"]  # the oldest went
        assert await buf.flush() and buf.buffered() == 0
        buf._task.cancel()

    asyncio.run(scenario())
