"""`actionllm serve`: the Ray Serve application of services/ (HTTP, WebSocket, metrics, web page)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from .common import app, console, fail, out
from .progress import run_log, scratch_log, stop_ray


@app.command()
def serve(
    checkpoint: list[str] = typer.Option([], help="a recognizer folder, as DIR or NAME=DIR (repeatable; the first is "
                                          "the default model)"),
    config: Path = typer.Option(None, help="YAML: a serve config (deploy/serve.yaml, or its `args:`), or a training "
                                "config such as tune's best.yaml (serves the recognizer it trained)"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes it: set ACTIONLLM_API_KEY, or it is "
                             "refused without --open-without-key)"),
    port: int = typer.Option(8000, min=1, max=65535),
    min_replicas: int = typer.Option(None, min=0, help="recognizer replicas at least (autoscaling)"),
    max_replicas: int = typer.Option(None, min=1, help="recognizer replicas at most (autoscaling)"),
    max_models: int = typer.Option(None, min=1, help="recognizers one replica holds (LRU-evicted beyond)"),
    num_cpus: float = typer.Option(None, min=0, help="CPUs per recognizer replica"),
    video_root: list[str] = typer.Option([], help="video recognizers: a directory (or s3:// gs:// prefix) whose "
                                          "files a request may name by `video_uri` (repeatable; default: none, "
                                          "video_uri refused; uploads always work)"),
    max_video_mb: float = typer.Option(None, min=0.001, help="largest video upload or video_uri file, MiB "
                                       "(default 50)"),
    max_video_frames: int = typer.Option(None, min=1, help="videos with more frames are refused (default 10000)"),
    max_video_side: int = typer.Option(None, min=16, help="videos wider or taller than this are refused, pixels "
                                       "(default 4096)"),
    rate_limit: float = typer.Option(None, min=0, help="requests per second per client (its API key, else its "
                                     "address) on each ingress replica; over it: 429 + Retry-After; 0 = off "
                                     "(default 200)"),
    rate_burst: int = typer.Option(None, min=1, help="requests a client may send at once (default 400)"),
    max_streams: int = typer.Option(None, min=0, help="open WebSocket streams per client on each ingress replica; "
                                    "0 = off (default 8)"),
    stream_idle_s: float = typer.Option(None, min=0, help="close a stream silent this long, seconds; 0 = never "
                                        "(default 300)"),
    address: str = typer.Option(None, help="Ray cluster address (default: an embedded local Ray)"),
    once: Path = typer.Option(None, help="send one request and stop: a JSON request body, a shard folder "
                              "(its first test sequence), or a video file (uploaded); prints the answer"),
    open_without_key: bool = typer.Option(False, "--open-without-key", help="serve on a non-loopback --host with no "
                                          "API key set: every route open to whoever reaches the port"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show Ray's logs here (default: a log file, named "
                                 "when the service starts, or at the end with --once)"),
) -> None:
    """Serve recognizers over HTTP with Ray Serve: POST /v1/recognize (skeleton JSON, or for video recognizers a
    multipart `video` upload or a `video_uri` under --video-root), WS /v1/stream, /v1/models, /metrics, a web page
    at /. Runs until Ctrl-C or SIGTERM: requests in flight get up to 3 s to finish (new ones: 503), then it stops
    (or, with --once, answers one request and stops)."""
    from pydantic import ValidationError

    from services.launch import serve_config, start

    try:
        cfg = serve_config(checkpoint, config, min_replicas=min_replicas, max_replicas=max_replicas,
                           max_models=max_models, num_cpus=num_cpus, video_roots=video_root,
                           max_video_mb=max_video_mb, max_video_frames=max_video_frames,
                           max_video_side=max_video_side, rate_limit_rps=rate_limit, rate_limit_burst=rate_burst,
                           max_streams_per_client=max_streams, stream_idle_timeout_s=stream_idle_s)
    except ValidationError as err:
        fail(f"invalid serve config:\n{err}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        fail(str(err).strip('"'))
    if not is_loopback(host) and not os.environ.get(cfg.api_key_env) and not open_without_key:
        fail(f"--host {host} serves every route to the network, and {cfg.api_key_env} is not set: set it (requests "
             f"then need `Authorization: Bearer <key>`), or pass --open-without-key to serve without a key on purpose")
    say = lambda m: console.print(m, highlight=False)  # noqa: E731
    show = lambda data: out.print_json(data=data)  # noqa: E731
    log_path = scratch_log("serve" if once is None else "serve-once")
    with run_log(log_path, verbose) as log:
        if log and once is None:  # a long-running service: where Ray's lines go, said before it starts
            say(f"Ray's log: {log}")
        try:
            start(cfg, host=host, port=port, address=address, once=once, say=say, show=show)
        finally:
            stop_ray()
    if log and once is not None:
        console.print(f"  Ray's log of this run: {log}", highlight=False, soft_wrap=True)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: a service only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
