"""Batching in the recognizer replicas (services/batching.py): a lone request never waits, requests that queue
while the model is busy share one forward, errors reach their callers; and over real Serve + HTTP, requests of
different lengths batched together get the same answers as in-process `recognize`, with a Server-Timing header."""

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, msr_request, wait_healthy  # noqa: E402

from services.batching import Batcher  # noqa: E402


def slow_double(seconds: float, batches: list):
    def run(items: list) -> list:
        batches.append(list(items))
        time.sleep(seconds)
        return [2 * x for x in items]

    return run


def test_a_lone_request_does_not_wait_for_company():
    async def main():
        batches = []
        b = Batcher(slow_double(0.0, batches), max_batch_size=8, wait_s=2.0)
        t0 = time.perf_counter()
        result, queued = await b.submit(21)
        return result, queued, time.perf_counter() - t0, batches

    result, queued, seconds, batches = asyncio.run(main())
    assert result == 42 and batches == [[21]]
    assert seconds < 1.0 and queued < 1.0  # not the 2 s wait: the previous batch (none) held one request


def test_requests_queued_while_busy_share_the_next_batch_and_keep_their_answers():
    async def main():
        batches = []
        b = Batcher(slow_double(0.3, batches), max_batch_size=4, wait_s=0.05)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.1)  # the model is busy with [0]
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 7)]
        return [r[0] for r in await asyncio.gather(first, *rest)], batches

    results, batches = asyncio.run(main())
    assert results == [2 * i for i in range(7)]
    assert batches[0] == [0] and batches[1] == [1, 2, 3, 4] and batches[2] == [5, 6]  # max_batch_size 4


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_serving():
    def run(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    async def main():
        b = Batcher(run, max_batch_size=4, wait_s=0.0)
        with pytest.raises(ValueError, match="bad item"):
            await b.submit("bad")
        return await b.submit("good")

    assert asyncio.run(main())[0] == "good"


def test_on_idle_runs_after_a_batch_only_when_nothing_is_queued():
    """Housekeeping (a replica's malloc_trim) runs between batches, never while requests wait."""
    events = []

    def run(items):
        events.append(("batch", list(items)))
        time.sleep(0.2)
        return items

    async def main():
        b = Batcher(run, max_batch_size=2, wait_s=0.0, on_idle=lambda: events.append(("idle",)))
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)  # [0] runs; 1, 2, 3 queue behind it
        rest = [asyncio.ensure_future(b.submit(i)) for i in (1, 2, 3)]
        await asyncio.gather(first, *rest)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert events == [("batch", [0]), ("batch", [1, 2]), ("batch", [3]), ("idle",)]


def test_idle_trim_trims_at_most_once_per_interval():
    from services.deployments import IdleTrim

    now = [0.0]
    trim = IdleTrim(interval_s=1.0, clock=lambda: now[0])
    calls = []
    if trim.trim is not None:  # glibc: the real malloc_trim once, then a recorder
        trim()
        assert trim.calls == 1
    trim.trim, trim.last = calls.append, float("-inf")
    for t in (0.0, 0.4, 0.9, 1.0, 1.5, 2.2):
        now[0] = t
        trim()
    assert calls == [0, 0, 0]  # at 0.0, 1.0 and 2.2: malloc_trim(0), never twice within a second


@pytest.mark.ray
def test_batched_requests_of_different_lengths_answer_as_in_process(ray_local, tiny_recognizers, data_root):
    from ray import serve

    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer
    from services.app import ServeConfig, build_app

    port = free_port()
    cfg = ServeConfig.model_validate({
        "models": [{"name": "alpha", "path": str(tiny_recognizers["alpha"])}], "max_batch_size": 8,
        "batch_wait_timeout_s": 0.02, "window_batch": 8, "num_cpus": 1,
        "autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="batching", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        bodies = [msr_request(data_root, i) for i in range(3)]
        assert len({seq.num_frames for _, seq in bodies}) > 1  # different window counts and token lengths
        lock = threading.Lock()
        timings = []

        def post(k: int) -> dict:
            r = httpx.post(f"{url}/v1/recognize", json=bodies[k % 3][0], timeout=120)
            assert r.status_code == 200, r.text
            with lock:
                timings.append(r.headers["server-timing"])
            return r.json()

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, range(24)))
        rec = load_recognizer(tiny_recognizers["alpha"])
        local = [recognize(rec, seq) for _, seq in bodies]
        for k, a in enumerate(answers):
            want = local[k % 3]
            assert a["label"] == want["label"]
            np.testing.assert_allclose([a["probabilities"][c] for c in want["probabilities"]],
                                       list(want["probabilities"].values()), atol=1e-4)
            np.testing.assert_allclose(a["explanation"]["frame_weights"], want["explanation"]["frame_weights"],
                                       atol=1e-4)
        parts = [dict(p.strip().split(";dur=") for p in t.split(",")) for t in timings]
        assert all({"validate", "call", "queue", "model", "replica", "ingress"} <= set(p) for p in parts)
        assert max(float(p["batch_requests"]) for p in parts) > 1  # some requests shared a forward
    finally:
        serve.delete("batching")
        serve.shutdown()
