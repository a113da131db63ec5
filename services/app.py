"""`build_app(args)`: the Serve application, for `serve run services.app:build_app`, `serve deploy
deploy/serve.yaml` (its `args:` are a `ServeConfig`) and `actionllm serve`.

  Ingress (FastAPI, validation, windows)  ->  RecognizerServer (autoscaled; K recognizers per replica,
  multiplexed, batched)  ;  both  ->  MetricsCollector (one replica: the service's Prometheus registry)
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actionllm.checks import refuse_pickles
from actionllm.recognizer_folder import read_config

from .api import Ingress, key_digest
from .deployments import HEALTH_CHECK_PERIOD_S, MetricsCollector, recognizer_server
from .limits import LimitSettings
from .video import normalise_root

INGRESS_MAX_ONGOING = 256  # requests one ingress replica holds at once
LIMITS = LimitSettings()  # the defaults of the per-client limits


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    path: str


class Autoscaling(BaseModel):
    """Ray Serve's autoscaling_config for the recognizer replicas."""

    model_config = ConfigDict(extra="forbid")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)  # per replica; requests wait in batches, so a few
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    look_back_period_s: float = Field(5.0, gt=0)
    metrics_interval_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class ServeConfig(BaseModel):
    """Everything `deploy/serve.yaml` may set under `args:`."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelRef] = Field(min_length=1, description="recognizer folders (name + path); the first is the default")
    max_models_per_replica: int = Field(4, ge=1, description="K: recognizers a replica holds (LRU beyond)")
    max_batch_size: int = Field(16, ge=1, description="requests per batch (one predict_windows call)")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="most a free model waits for as many requests as "
                                        "its previous batch held (never for a lone client); services/batching.py")
    window_batch: int = Field(16, ge=1, description="windows per forward pass inside a batch")
    autoscaling: Autoscaling = Autoscaling()
    num_cpus: float = Field(1.0, ge=0, description="CPUs per recognizer replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per recognizer replica (fractions share one)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    max_frames: int = Field(2000, ge=1)
    max_body_bytes: int = Field(8 << 20, ge=1024)
    video_roots: list[str] = Field([], description="directories (or s3:// gs:// prefixes) whose videos a request "
                                   "may name by `video_uri`; none: video_uri is refused (uploads still work)")
    max_video_bytes: int = Field(50 << 20, ge=1024, description="largest video upload / video_uri file (bytes)")
    max_video_frames: int = Field(10_000, ge=1, description="videos with more frames are refused")
    max_video_side: int = Field(4096, ge=16, description="videos wider or taller (pixels) are refused")
    api_key_env: str = Field("ACTIONLLM_API_KEY", description="env var holding the API key (unset: no key)")
    # per-client limits (services/limits.py): a client is its API key, or its address when there is none; each
    # ingress replica counts on its own; 0 switches a limit off
    rate_limit_rps: float = Field(LIMITS.rate_limit_rps, ge=0, description="requests per second per client "
                                  "(token bucket; over it: 429 with Retry-After)")
    rate_limit_burst: int = Field(LIMITS.rate_limit_burst, ge=1, description="requests a client may send at once")
    max_streams_per_client: int = Field(LIMITS.max_streams_per_client, ge=0, description="open WebSocket streams "
                                        "per client (one more: an error message, then close 1008)")
    stream_idle_timeout_s: float = Field(LIMITS.stream_idle_timeout_s, ge=0, description="a stream silent for this "
                                         "long is closed")
    ingress_replicas: int = Field(1, ge=1)

    @field_validator("models")
    @classmethod
    def _unique_readable(cls, models: list[ModelRef]) -> list[ModelRef]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        for m in models:
            read_config(m.path)  # a clear error now, not a replica crash later
            refuse_pickles(m.path)  # a recognizer folder holds safetensors only
        return models

    @field_validator("video_roots")
    @classmethod
    def _roots(cls, roots: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_root(r) for r in roots))  # absolute, checked, deduplicated


def model_refs(checkpoints: list[str]) -> list[dict]:
    """CLI `--checkpoint [NAME=]DIR` values -> ModelRef dicts (the name defaults to the folder's name, or its
    parent's when the folder is the `recognizer/` that `actionllm train` writes)."""
    out = []
    for c in checkpoints:
        name, sep, path = c.partition("=")
        if not sep:
            path = c
            p = Path(c).absolute()
            name = p.parent.name if p.name == "recognizer" else p.name
        out.append({"name": name, "path": str(Path(path).absolute())})
    return out


def build_app(args: dict):
    """The Serve application from a ServeConfig dict (what `serve run`/`serve deploy` pass as `args`)."""
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.model_validate(args)
    models = {m.name: str(Path(m.path).resolve()) for m in cfg.models}
    collector = MetricsCollector.bind()
    server = recognizer_server(cfg.max_models_per_replica).options(
        autoscaling_config=cfg.autoscaling.model_dump(),
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        max_ongoing_requests=max(cfg.max_batch_size * 2, 8),
    ).bind(models, collector, preload=[cfg.models[0].name], device=cfg.device, max_batch_size=cfg.max_batch_size,
           batch_wait_timeout_s=cfg.batch_wait_timeout_s, window_batch=cfg.window_batch,
           threads=max(1, int(cfg.num_cpus)))  # torch threads = the CPUs Ray reserved (as Ray sets OMP_NUM_THREADS)
    key = os.environ.get(cfg.api_key_env)  # only its digest travels to the ingress replicas
    # the ingress only awaits the recognizers: with Serve's default max_ongoing_requests (5) the proxy backs off
    # (25 ms, 50 ms, ... 0.5 s) at concurrency > 5; the recognizers' own limit above is the back-pressure
    limits = {k: getattr(cfg, k) for k in LimitSettings.__dataclass_fields__}  # Ingress.reconfigure's user_config
    # health_check_period_s: a dead ingress replica is replaced within ~1 s of dying, not Serve's default 10 s
    return Ingress.options(num_replicas=cfg.ingress_replicas, ray_actor_options={"num_cpus": 0},
                           health_check_period_s=HEALTH_CHECK_PERIOD_S,
                           max_ongoing_requests=INGRESS_MAX_ONGOING, user_config=limits).bind(
        models, server, collector, max_frames=cfg.max_frames, max_body_bytes=cfg.max_body_bytes,
        api_key_env=cfg.api_key_env, api_key_sha256=key_digest(key) if key else None,
        video={"roots": cfg.video_roots, "max_bytes": cfg.max_video_bytes, "max_frames": cfg.max_video_frames,
               "max_side": cfg.max_video_side})
