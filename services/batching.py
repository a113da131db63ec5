"""Dynamic batching for a replica that runs one forward pass at a time (a CPU replica, or one GPU).

Why not `@serve.batch`: Ray's batch loop forms the next batch `batch_wait_timeout_s` after its first request
arrives, *while the previous batch is still running*, and queues it behind it; so under load the model gets
many small batches (what arrived in one timeout) plus a wait each, and at concurrency 1 every request pays
the whole timeout. Measured on 2 CPUs: batching was slower than no batching at every concurrency.

This batcher forms a batch when the model is FREE: it takes every request that queued while the previous batch
ran (up to `max_batch_size`), so a busy model batches by itself and an idle one never waits for a lone request.
It waits (at most `wait_s`) only for as many requests as the previous batch held: under steady concurrency c
the c clients answered by one batch come back within a few ms and are gathered into the next one; at
concurrency 1 the previous batch held 1 request, so nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ray.serve")


class Batcher:
    """`await submit(item)` -> run([items])[i], with run called in a worker thread on batches of <= max_batch_size
    items, one batch at a time."""

    def __init__(self, run: Callable[[list], list], max_batch_size: int = 16, wait_s: float = 0.01,
                 on_batch: Callable[[list, list], None] | None = None, on_idle: Callable[[], None] | None = None):
        """`on_batch(items, results)`: called on the event loop after each batch (metrics). `on_idle()`: called in
        the worker thread when a batch ends and no request is queued (housekeeping that must not delay a batch)."""
        self.run, self.max_batch_size, self.wait_s = run, max(1, max_batch_size), max(0.0, wait_s)
        self.on_batch, self.on_idle = on_batch, on_idle
        self.pending: list[tuple[Any, asyncio.Future, float]] = []
        self.expect = 1  # requests the previous batch held: how many to wait for
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, item) -> tuple[Any, float]:
        """The item's result and the seconds it queued before its batch started."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        fut = loop.create_future()
        self.pending.append((item, fut, time.perf_counter()))
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        return await fut

    async def _gather(self) -> None:
        """Wait (at most wait_s) until as many requests as the previous batch held are queued."""
        want = min(self.expect, self.max_batch_size)
        deadline = time.perf_counter() + self.wait_s
        while len(self.pending) < want:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            batch, self.pending = self.pending[:self.max_batch_size], self.pending[self.max_batch_size:]
            batch = [b for b in batch if not b[1].cancelled()]
            if not batch:
                continue
            self.expect = len(batch)
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(None, self.run, [b[0] for b in batch])
            except Exception as err:  # the batch's callers get the error; the loop keeps serving
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut, queued), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result((result, start - queued))
            if self.on_batch is not None:
                try:
                    self.on_batch([b[0] for b in batch], results)
                except Exception:  # metrics never take a batch down
                    log.exception("on_batch failed")
            if self.on_idle is not None and not self.pending:
                try:
                    await loop.run_in_executor(None, self.on_idle)
                except Exception:  # nor does housekeeping
                    log.exception("on_idle failed")
