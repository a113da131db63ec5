"""What `actionllm serve` does: turn flags / YAML into a ServeConfig, start Serve on a local Ray (or a cluster),
print the URL, and wait (or send one request with --once and stop)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import yaml

from .app import ServeConfig, build_app, model_refs


def serve_config(checkpoints: list[str], config: Path | None = None, **overrides) -> ServeConfig:
    """`--checkpoint`s and/or `--config` (a serve config, a Serve deploy file, or a training config whose
    recognizer was trained) plus flag overrides -> a validated ServeConfig."""
    doc: dict = {}
    if config is not None:
        raw = yaml.safe_load(Path(config).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{config}: expected a YAML mapping")
        if "applications" in raw:  # a Serve deploy file: the first application's args
            doc = dict(raw["applications"][0].get("args") or {})
        elif "models" in raw:
            doc = dict(raw)
        elif "recipe_config" in raw or "recipe" in raw:  # a training config (e.g. tune's best.yaml)
            rec = Path(raw.get("output") or "") / "recognizer"
            if not (rec / "config.json").is_file():
                raise FileNotFoundError(f"{config} is a training config; its recognizer {rec} does not exist yet: "
                                        f"train it first (actionllm train --config {config})")
            doc = {"models": model_refs([str(rec)])}
        else:
            raise ValueError(f"{config}: neither a serve config (models:), a Serve deploy file (applications:) "
                             "nor a training config (recipe_config:)")
    if checkpoints:
        doc["models"] = model_refs(checkpoints)
    if not doc.get("models"):
        raise ValueError("nothing to serve: give --checkpoint DIR (or --config)")
    auto = dict(doc.get("autoscaling") or {})
    for key in ("min_replicas", "max_replicas"):
        if overrides.get(key) is not None:
            auto[key] = overrides[key]
    if auto:
        doc["autoscaling"] = auto
    if overrides.get("max_models") is not None:
        doc["max_models_per_replica"] = overrides["max_models"]
    if overrides.get("num_cpus") is not None:
        doc["num_cpus"] = overrides["num_cpus"]
    if overrides.get("video_roots"):  # --video-root (repeatable) replaces the config's roots
        doc["video_roots"] = list(overrides["video_roots"])
    if overrides.get("max_video_mb") is not None:
        doc["max_video_bytes"] = int(overrides["max_video_mb"] * (1 << 20))
    for key in ("max_video_frames", "max_video_side", "rate_limit_rps", "rate_limit_burst", "max_streams_per_client",
                "stream_idle_timeout_s"):
        if overrides.get(key) is not None:
            doc[key] = overrides[key]
    return ServeConfig.model_validate(doc)


def first_request(path: Path) -> dict:
    """--once: a JSON request body as is, or a shard folder's first test sequence as raw frames."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    from actionllm.skeleton.shards import read_shards

    for seq, _ in read_shards(str(path), split="test"):
        return {"layout": seq.layout, "fps": float(seq.fps), "frames": seq.joints[0].tolist(),
                "_true_label": seq.label_name}
    raise ValueError(f"{path}: no test sequence to send")


def start(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
          once: Path | None = None, say=print, show=print) -> None:
    import ray
    from ray import serve

    env_address = os.environ.get("RAY_ADDRESS", "")  # the GCS address, set inside a Ray job (`actionllm submit`)
    address = address or (env_address if env_address and "://" not in env_address else None)
    own_ray = not ray.is_initialized() and address is None  # an embedded local Ray: it ends with this command
    if not ray.is_initialized():  # (Ray blocks SIGINT in the processes it starts: Ctrl-C reaches this one only)
        ray.init(address=address, include_dashboard=False, configure_logging=False,
                 **({} if address else {"num_cpus": max(os.cpu_count() or 1, 4)}))
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # replicas' per-call INFO lines flood a terminal
    serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
    t0 = time.time()
    serve.run(build_app(cfg), name="actionllm", route_prefix="/", blocking=False, logging_config=quiet)
    url = f"http://{host}:{port}"
    say(f"serving {', '.join(m.name for m in cfg.models)} at {url}  (ready in {time.time() - t0:.1f} s; "
        f"POST {url}/v1/recognize, web page {url}/, docs {url}/docs, metrics {url}/metrics)")
    if once is not None:
        try:
            import httpx

            from actionllm.video.decode import VIDEO_EXTENSIONS

            headers = {}
            key = os.environ.get(cfg.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            if Path(once).suffix.lower() in VIDEO_EXTENSIONS:  # a video: uploaded to the first (video) model
                truth = None
                with open(once, "rb") as f:
                    r = httpx.post(f"{url}/v1/recognize", files={"video": (Path(once).name, f)}, headers=headers,
                                   timeout=300)
            else:
                body = first_request(once)
                truth = body.pop("_true_label", None)
                r = httpx.post(f"{url}/v1/recognize", json=body, headers=headers, timeout=300)
            answer = r.json()
            if r.status_code != 200:
                raise RuntimeError(f"the service answered {r.status_code}: {answer}")
            top = max(answer["probabilities"].values())
            verdict = "" if truth is None else (" (correct)" if truth == answer["label"] else " (wrong)")
            say(f"served answer: {answer['label']} with probability {top:.2f}"
                + (f"; true label: {truth}{verdict}" if truth is not None else "")
                + f"  [model {answer['model']}, {len(answer['windows'])} window(s), {answer['latency_ms']:.0f} ms]")
            text = (answer.get("explanation") or {}).get("text")
            if text is not None:  # a generative recognizer: the LLM's own words beside the label
                say(f"the LLM says: {text}")
            show({"status": r.status_code, "model": answer["model"], "label": answer["label"], "true_label": truth,
                  "top_probability": top, "windows": len(answer["windows"]),
                  "latency_ms": round(answer["latency_ms"], 1), **({"text": text} if text is not None else {})})
        finally:
            serve.shutdown()
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a process manager's stop
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(1.0)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
    t0 = time.time()
    left = drain(serve.get_app_handle("actionllm"), grace_s=DRAIN_GRACE_S)
    if own_ray:  # the local Ray this command started goes with everything on it: seconds, not Serve's ~30 s teardown
        ray.shutdown()
    else:  # a cluster's Ray stays up; this command's application goes
        serve.delete("actionllm")
    say(f"stopped in {time.time() - t0:.1f} s" + (f" ({left} request(s) still in flight were cut off)" if left
                                                    else ""))


DRAIN_GRACE_S = 3.0  # how long requests in flight may take to finish once the service is asked to stop


def drain(ingress, grace_s: float, quiet_s: float = 0.3) -> int:
    """Tell the ingress to refuse new requests (503) and wait up to `grace_s` for those in flight; -> how many were
    still in flight when the wait ended (0: none cut off). "None in flight" must hold for `quiet_s`: a request the
    proxy had already taken reaches the ingress a moment later (and its 503 must get back before Ray stops). With
    several ingress replicas each call reaches one, so the calls repeat until the replicas they reach report none."""
    deadline, left, quiet_since = time.time() + grace_s, 0, None
    while time.time() < deadline:
        try:
            left = ingress.drain.remote().result(timeout_s=max(0.1, deadline - time.time()))["in_flight"]
        except Exception:  # noqa: BLE001  (an ingress that cannot answer has nothing to finish)
            return 0
        if left:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= quiet_s:
            return 0
        time.sleep(0.05)
    return left
