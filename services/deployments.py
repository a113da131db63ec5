"""The Serve deployments behind the ingress: recognizer replicas (and the metrics collector, from services/metrics.py).

A `RecognizerServer` replica holds up to K recognizers (`@serve.multiplexed`, LRU-evicted): recognizers on
the same base model share one copy of it (each adds its LoRA adapter and head; see Recognizer.load(shared=)),
so K adapters cost K adapters, not K bases. Requests for a model reach a replica that has it when one does
(Serve's multiplexed routing); within a replica, a `Batcher` (services/batching.py) gathers the windows of the
requests that queue while the model is busy into one predict_windows call per model. Recognizers listed in
`preload` are loaded in __init__, so a replica is reported ready (and receives traffic) only once they are in
memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import threading
import time

import numpy as np
from ray import serve

from actionllm.methods import load_recognizer

from .batching import Batcher
from .metrics import HEALTH_CHECK_PERIOD_S, EventBuffer, MetricsCollector  # noqa: F401 (MetricsCollector: app.py's)

log = logging.getLogger("ray.serve")


class Loaded:
    """One recognizer in a replica's cache; Serve calls __del__ when it evicts it (LRU)."""

    def __init__(self, model_id: str, rec, on_evict):
        self.model_id, self.rec, self._on_evict = model_id, rec, on_evict

    def __del__(self) -> None:
        on_evict, self._on_evict = getattr(self, "_on_evict", None), None
        if on_evict is not None:
            on_evict(self)


# A recognizer replica's glibc malloc gets a fixed 8 MiB mmap threshold. glibc raises its threshold each time a large
# block is freed, after which a larger batch's activations come from the heap and stay in the process (a one-time
# RSS step of 11.7 % in bench/soak.py's 10-minute run). Measured in-process (tiny joints-llm, 3- then 12-window
# batches): RSS after a large batch +2.4 % instead of +33.5 %, steady RSS 525 instead of 565 MiB, latency
# unchanged (a 128 KiB threshold also removed the step but cost ~25 % latency in page faults). Set with mallopt at
# the replica's start rather than MALLOC_*_ environment variables in its runtime_env: an actor with its own
# runtime_env needs a worker process started for it, one without may take an idle one from Ray's pool (a killed
# replica was back in 4.9-5.0 s instead of 5.3-6.1 s without load; under bench/soak.py's load no difference showed).
MALLOC_THRESHOLD = 8 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def glibc():
    """The process's glibc (ctypes), or None where the C library is another."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def fix_malloc_thresholds(nbytes: int = MALLOC_THRESHOLD) -> bool:
    """mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD, nbytes): blocks of >= nbytes are mmapped and returned to the
    system when freed, and glibc stops raising the threshold. False where libc is not glibc (nothing changes)."""
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes)) \
        and bool(libc.mallopt(M_TRIM_THRESHOLD, nbytes))


# A replica that served concurrent requests keeps the heap they fragmented: +50 MiB after 120 requests at
# concurrency 4 in one replica, given back only once later requests happened to free the heap's top. glibc's
# malloc_trim(0) returns every free page of every arena to the system (3 ms median, 9 ms at most, in a tiny
# joints-llm replica); a replica calls it when a batch ends with nothing queued, at most every TRIM_INTERVAL_S.
TRIM_INTERVAL_S = 1.0


class IdleTrim:
    """malloc_trim(0), at most every `interval_s` seconds: a Batcher's on_idle. A no-op where libc is not glibc."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S, clock=time.monotonic):
        libc = glibc()
        self.trim = libc.malloc_trim if libc is not None else None
        self.interval_s, self.clock, self.last, self.calls = interval_s, clock, float("-inf"), 0

    def __call__(self) -> None:
        now = self.clock()
        if self.trim is not None and now - self.last >= self.interval_s:
            self.last, self.calls = now, self.calls + 1
            self.trim(0)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def recognizer_server(max_models: int):
    """The recognizer deployment class with K = `max_models` recognizers per replica (a decorator argument)."""

    # a dead replica is noticed (and replaced) within HEALTH_CHECK_PERIOD_S, not Serve's default 10 s
    @serve.deployment(name="RecognizerServer", health_check_period_s=HEALTH_CHECK_PERIOD_S)
    class RecognizerServer:
        def __init__(self, models: dict[str, str], collector, preload: list[str], device: str = "auto",
                     max_batch_size: int = 16, batch_wait_timeout_s: float = 0.01, window_batch: int = 16,
                     threads: int = 0):
            """`threads`: torch's intra-op threads (the replica's num_cpus; 0: leave torch's default)."""
            if not fix_malloc_thresholds():
                log.warning("not glibc: the malloc thresholds stay at the C library's defaults")
            if threads > 0:
                import torch

                torch.set_num_threads(threads)
            self.models, self.device, self.window_batch = dict(models), resolve_device(device), window_batch
            self.shared: dict = {}  # base key -> (PeftModel, tokenizer, adapter names): bases shared by recognizers
            self.loaded: set[str] = set()
            self.lock = threading.Lock()  # one forward at a time: adapters on a shared base are switched per call
            self.events = EventBuffer(collector)
            self._preloaded = {m: self._load(m) for m in preload[:max_models]}
            # the windows of requests that queue while the model is busy go through it together (services/batching.py)
            self.batcher = Batcher(self._run, max_batch_size, batch_wait_timeout_s, on_batch=self._record,
                                   on_idle=IdleTrim())

        def _load(self, model_id: str) -> Loaded:
            t0 = time.time()
            rec = load_recognizer(self.models[model_id], device=self.device, shared=self.shared)
            self.loaded.add(model_id)
            log.info("loaded recognizer %r from %s in %.1f s (%d base(s) in this replica)", model_id,
                     self.models[model_id], time.time() - t0, len(self.shared))
            return Loaded(model_id, rec, self._evicted)

        def _evicted(self, loaded: Loaded) -> None:
            with self.lock:
                loaded.rec.release()
            self.loaded.discard(loaded.model_id)
            self.events.add("evict", loaded.model_id)

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def get_model(self, model_id: str) -> Loaded:
            if model_id not in self.models:
                raise KeyError(f"unknown model {model_id!r}")
            self.events.add("cache", model_id, "load")
            if model_id in self._preloaded:  # loaded at start (counted as a load then)
                return self._preloaded.pop(model_id)
            return await asyncio.get_running_loop().run_in_executor(None, self._load, model_id)

        async def predict(self, windows: list[np.ndarray], candidates: list[dict] | None = None) -> dict:
            """The windows of one request -> predict_windows' output for them (model from the multiplexed id; a
            video request's one window is its decoded clip, uint8 [T, S, S, 3];
            `candidates`: classes named by the request, for open-vocabulary recognizers), plus `timing` (ms):
            queue (waiting for the model), model (its batch's forward), replica (all of this call)."""
            t0 = time.perf_counter()
            model_id = serve.get_multiplexed_model_id()
            if model_id in self.loaded and model_id not in self._preloaded:
                self.events.add("cache", model_id, "hit")
            loaded = await self.get_model(model_id)
            out, queued = await self.batcher.submit((loaded, windows, candidates))
            out["timing"] = {**out["timing"], "queue": queued * 1e3, "replica": (time.perf_counter() - t0) * 1e3}
            return out

        def _record(self, items: list[tuple], results: list[dict]) -> None:
            self.events.add("batch", len(items), sum(len(w) for _, w, _ in items))
            for model_id, n_windows, n_tokens in results[0]["timing"].pop("counts"):
                self.events.add("windows", model_id, n_windows, n_tokens)

        def _run(self, items: list[tuple[Loaded, list[np.ndarray], list[dict] | None]]) -> list[dict]:
            """One predict_windows call per model and candidate set over the windows of all its requests in the
            batch (forward passes of `window_batch` windows, mixing requests), split back per request."""
            t0 = time.perf_counter()
            results: list[dict | None] = [None] * len(items)
            counts = []
            groups: dict[tuple[str, str], list[int]] = {}
            for i, (loaded, _, candidates) in enumerate(items):
                groups.setdefault((loaded.model_id, json.dumps(candidates)), []).append(i)
            for (model_id, _), idx in groups.items():
                rec, candidates = items[idx[0]][0].rec, items[idx[0]][2]
                flat = [w for i in idx for w in items[i][1]]
                extra = {} if candidates is None else {"candidates": candidates}
                with self.lock:
                    out = rec.predict_windows(flat, batch_size=self.window_batch, **extra)
                counts.append((model_id, len(flat), int(out.get("tokens", 0))))
                s = 0
                for i in idx:
                    n = len(items[i][1])
                    results[i] = {"probabilities": out["probabilities"][s:s + n],
                                  "frame_weights": out["frame_weights"][s:s + n],
                                  "joint_weights": out["joint_weights"][s:s + n],
                                  "joint_names": out["joint_names"],
                                  # per-window extras a recipe returns (llm-ar, lvlm-var: the LLM's generated
                                  # text; lvlm-var: each video's semantic tokens)
                                  **{k: out[k][s:s + n] for k in ("generated", "semantic_tokens") if k in out}}
                    s += n
            model_ms = (time.perf_counter() - t0) * 1e3
            windows = sum(len(w) for _, w, _ in items)
            for r in results:
                r["timing"] = {"model": model_ms, "batch_requests": len(items), "batch_windows": windows}
            results[0]["timing"]["counts"] = counts  # for _record (metrics), removed there
            return results

        def check_health(self) -> None:
            if not self.models:
                raise RuntimeError("no recognizers configured")

    return RecognizerServer
