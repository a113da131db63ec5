"""The HTTP ingress (FastAPI on Ray Serve): routes, validation, error bodies, auth, the web page.

  POST /v1/recognize    one sequence -> label, probabilities, per-window answers, explanation; for a video
                        recognizer (lvlm-var) one video: a multipart `video` upload, or a JSON `video_uri`
  WS   /v1/stream       frames as they arrive -> one answer per completed window
  GET  /v1/models       the recognizers served      GET /healthz      GET /metrics (Prometheus, whole service)
  GET  /                the web page                GET /docs, /openapi.json

The ingress validates and cuts sequences into the model's windows itself (it reads each recognizer's
config.json, not its weights), then sends the windows to the `RecognizerServer` deployment with the model
as Serve's multiplexed model id. Bad input never reaches a model: it is a 4xx `{error, field, detail}`.

A video (services/video.py) is checked and decoded here, in a worker thread (the container sniffed, frames and
size capped, the recognizer's frames sampled at its image size), and its clip (uint8 [T, S, S, 3]) goes to the
replica as the request's one window; the answer is `actionllm.inference.recognize_clip`'s.
"""

# no `from __future__ import annotations`: FastAPI resolves the routes' annotations at runtime through Serve
import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from actionllm.inference import aggregate, cut, recognize_clip
from actionllm.recognizer_folder import check_candidates, read_config, read_sample, serving_facts
from actionllm.skeleton.layouts import get_layout

from .limits import ClientLimits, LimitSettings, client_id, retry_after
from .metrics import EventBuffer
from .schemas import (
    ApiError,
    ErrorBody,
    ModelInfo,
    RecognizeRequest,
    RecognizeResponse,
    RecognizeUpload,
    request_sequence,
    validation_error,
)
from .stream import error, serve_stream
from .video import FORM_OVERHEAD, Upload, VideoPolicy, allowed_source, decode_clip, read_upload

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).parent / "static"
ERRORS = {c: {"model": ErrorBody} for c in (400, 401, 403, 404, 413, 415, 422, 429, 503)}
MODEL_HEADER = "serve_multiplexed_model_id"
# POST /v1/recognize reads its body itself (JSON or multipart/form-data): its OpenAPI request body, by hand
RECOGNIZE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/RecognizeRequest"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/RecognizeUpload"}}}}}

api = FastAPI(title="ActionLLM", version="1", description="Action recognition with LLM-based recognizers: "
              "skeleton sequences (JSON) and, for video recognizers, videos (multipart upload or `video_uri`). "
              "Errors are JSON bodies {error, field, detail}.")
_state: dict = {}  # this process's ingress (one per replica process): limits, key digest, metrics outbox


def configure(**settings) -> None:
    """Set this process's ingress settings. A module function on purpose: Serve ships the Ingress class to its
    replica by value (with a copy of its globals), while the middleware below runs from this module."""
    _state.update(settings)


def in_flight() -> int:
    """HTTP requests this process's ingress is answering now (a module function, like `configure`: the module's
    `_state`, not the copy a method of the shipped class would read)."""
    return _state.get("in_flight", 0)


def _openapi() -> dict:
    """FastAPI's document plus the two request bodies of POST /v1/recognize (RECOGNIZE_BODY refers to them)."""
    if api.openapi_schema is None:
        doc = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (RecognizeRequest, RecognizeUpload):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        api.openapi_schema = doc
    return api.openapi_schema


api.openapi = _openapi


def model_info(name: str, path: str) -> ModelInfo:
    meta = read_config(path)
    facts = serving_facts(meta)
    if facts is None:  # a folder written before config.json said how to serve it: its class says (imports torch)
        from actionllm.methods import folder_facts
        facts = folder_facts(meta)
    common = dict(name=name, recipe=meta["recipe"], layout=meta["layout"], dims=meta["dims"],
                  window=meta.get("window"), stride=meta.get("stride"), classes=meta["class_names"],
                  sample=read_sample(path) is not None, open_vocabulary=facts["open_vocabulary"])
    if facts["input"] == "video":  # a video recognizer (lvlm-var): clips, not joints
        return ModelInfo(**common, joint_names=[], bones=[], input="video", frames=facts["frames"],
                         image_size=facts["image_size"])
    layout = get_layout(meta["layout"])
    return ModelInfo(**common, joint_names=list(layout.joints),
                     bones=[(int(a), int(b)) for a, b in layout.bone_index])


def request_candidates(body: RecognizeRequest, model: ModelInfo) -> list[dict] | None:
    """The request's candidate classes, checked (None: the model's own classes)."""
    if body.candidates is None:
        return None
    if not model.open_vocabulary:
        raise ApiError(422, "candidates not supported", "candidates", f"model {model.name!r} ({model.recipe}) "
                       "answers among its trained classes only; candidates need an open-vocabulary recognizer (sugar)")
    try:
        return check_candidates([c.model_dump(exclude_none=True) for c in body.candidates])
    except ValueError as err:
        field, _, detail = str(err).partition(": ")
        raise ApiError(422, "invalid candidates", field, detail) from None


# --- errors, body limit, auth, per-request metrics ------------------------------------------------------------
@api.exception_handler(ApiError)
async def _api_error(request: Request, err: ApiError):
    return JSONResponse(err.body(), status_code=err.status)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError):
    e = validation_error(list(err.errors()))
    return JSONResponse(e.body(), status_code=e.status)


@api.exception_handler(Exception)
async def _fault(request: Request, err: Exception):
    """A fault of the service (never of the request: bad input is refused before) -> a JSON 500, logged."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal error", "field": None, "detail": type(err).__name__}, status_code=500)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException):
    return JSONResponse({"error": str(err.detail).lower(), "field": None, "detail": f"{request.method} {request.url.path}"},
                        status_code=err.status_code)


@api.middleware("http")
async def _guard(request: Request, call_next):
    """Body size limit (before the body is read), API key, one metrics event per request, and the route's
    timing breakdown (if it left one) as a `Server-Timing` header."""
    if _state.get("draining"):  # `actionllm serve` was asked to stop: requests in flight finish, new ones do not start
        return JSONResponse(ApiError(503, "shutting down", None, "this service is stopping; retry on another "
                                     "instance or after it restarts").body(), status_code=503,
                            headers={"Connection": "close", "Retry-After": "5"})
    _state["in_flight"] = _state.get("in_flight", 0) + 1
    try:
        return await _guarded(request, call_next)
    finally:
        _state["in_flight"] -= 1


async def _guarded(request: Request, call_next):
    t0 = time.perf_counter()
    request.state.model = "-"
    limit, what = _state.get("max_body_bytes", 8 << 20), "body"
    if _is_multipart(request.headers.get("content-type")):  # a video upload: its own limit (+ the form's fields)
        limit, what = _state.get("max_video_bytes", 50 << 20) + FORM_OVERHEAD, "video"
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        response = JSONResponse(ApiError(413, f"{what} too large", what,
                                         f"{length} bytes; this service takes at most {limit}").body(), status_code=413)
    elif not _authorised(request.headers.get("authorization"), request.url.path):
        response = JSONResponse(ApiError(401, "unauthorized", "Authorization",
                                         "send `Authorization: Bearer <ACTIONLLM_API_KEY>`").body(), status_code=401)
    elif (wait := _rate_limited(request)) is not None:
        s = limits().settings
        response = JSONResponse(ApiError(429, "too many requests", None, f"more than {s.rate_limit_rps:g} requests/s "
                                         f"(bursts of {s.rate_limit_burst}) from this client; retry in "
                                         f"{retry_after(wait)} s").body(),
                                status_code=429, headers={"Retry-After": retry_after(wait)})
    else:
        if length is None and request.method in ("POST", "PUT", "PATCH"):  # chunked: bounded while it streams
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # stop reading here: the rest of the body is never held
                    return JSONResponse(ApiError(413, f"{what} too large", what,
                                                 f"over {limit} bytes (chunked, {size} read when it was stopped)"
                                                 ).body(), status_code=413, headers={"Connection": "close"})
                chunks.append(chunk)
            request._body = b"".join(chunks)  # what the route reads (Starlette's cached body)
        response = await call_next(request)
    timing = getattr(request.state, "timing", None)
    if timing is not None:  # validate, call (to the replica and back), aggregate, queue, model, replica: ms
        timing["ingress"] = (time.perf_counter() - t0) * 1e3
        response.headers["Server-Timing"] = ", ".join(f"{k};dur={v:.2f}" for k, v in timing.items())
    outbox = events()
    if outbox is not None:
        route = request.scope.get("route")
        outbox.add("request", getattr(route, "path", "unmatched"), request.state.model, response.status_code,
                   time.perf_counter() - t0)
    return response


def _is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "multipart/form-data"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def events() -> EventBuffer | None:
    return _state.get("events")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def limits() -> ClientLimits:
    """This replica's per-client counters (services/limits.py), made on first use."""
    return _state.setdefault("limits", ClientLimits())


def client_of(header: str | None, host: str | None) -> str:
    """Who a request or stream counts against: its API key (when the service has one), else its address."""
    token = (header or "").partition(" ")[2].strip()
    return client_id(token, bool(_state.get("api_key_sha256")), host)


def _rate_limited(request: Request) -> float | None:
    """None, or the seconds this client waits for its next request (the health probe is never limited)."""
    if request.url.path == "/healthz":
        return None
    host = request.client.host if request.client else None
    return limits().take(client_of(request.headers.get("authorization"), host))


def _authorised(header: str | None, path: str) -> bool:
    digest = _state.get("api_key_sha256")
    if not digest or path in ("/", "/healthz") or path.startswith(("/docs", "/openapi.json", "/static")):
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(key_digest(token.strip()), digest)


class _Answered:
    """recognize_clip's view of a recognizer whose predict_windows already ran in a replica: that output."""

    def __init__(self, out: dict, class_names: list[str]):
        self.out, self.class_names = out, class_names

    def predict_windows(self, windows: list, batch_size: int = 1) -> dict:
        return self.out


# --- the ingress deployment ---------------------------------------------------------------------------------
@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, models: dict[str, str], server, collector, max_frames: int = 2000,
                 max_body_bytes: int = 8 << 20, api_key_env: str = "ACTIONLLM_API_KEY",
                 api_key_sha256: str | None = None, video: dict | None = None):
        """The API key: its SHA-256 as handed over by build_app (the key itself never enters the deployment's
        config), else the replica's own `api_key_env` variable; neither: no key needed. `video`: VideoPolicy's
        fields (roots, max_bytes, max_frames, max_side; services/video.py)."""
        self.video = VideoPolicy(**{k: tuple(v) if k == "roots" else v for k, v in (video or {}).items()})
        self.infos = {name: model_info(name, path) for name, path in models.items()}
        self.samples = {name: read_sample(path) for name, path in models.items()}
        self.default = next(iter(self.infos))
        self.server, self.collector, self.max_frames = server, collector, max_frames
        self.handles: dict = {}  # model name -> the server's handle with that multiplexed model id
        own = os.environ.get(api_key_env)
        self.max_body_bytes = max_body_bytes
        configure(max_body_bytes=max_body_bytes, max_video_bytes=self.video.max_bytes, events=EventBuffer(collector),
                  api_key_sha256=api_key_sha256 or (key_digest(own) if own else None), limits=ClientLimits())
        self.page = (STATIC / "index.html").read_text()

    def reconfigure(self, config: dict) -> None:
        """Serve's user_config hook: the per-client limits (LimitSettings' fields; build_app passes ServeConfig's).
        A redeploy that changes only these updates the running replicas in place."""
        limits().update(LimitSettings(**config))

    def drain(self) -> dict:
        """Stop taking HTTP requests (new ones: 503 "shutting down"); -> how many are still in flight here. Called
        through a handle by `actionllm serve` when it is asked to stop (services/launch.py)."""
        configure(draining=True)
        return {"in_flight": in_flight()}

    def resolve(self, name: str | None, header: str | None) -> ModelInfo:
        name = name or header or self.default
        if name not in self.infos:
            raise ApiError(404, "unknown model", "model", f"{name!r}; served: {', '.join(self.infos)}")
        return self.infos[name]

    async def run_windows(self, model: ModelInfo, windows: list, candidates: list[dict] | None = None) -> dict:
        """The windows through a recognizer replica; a replica that dies mid-request (a crash, a node lost) is
        retried once on another; if that fails too, 503 (the service is degraded; not the request's fault)."""
        handle = self.handles.get(model.name)
        if handle is None:  # one handle per model, made once (options() builds a new handle each call)
            handle = self.handles[model.name] = self.server.options(multiplexed_model_id=model.name)
        for attempt in range(2):
            try:
                return await handle.predict.remote(windows, candidates)
            except (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError) as err:
                log.warning("recognizer replica failed (%s), attempt %d", type(err).__name__, attempt + 1)
                if attempt:
                    raise ApiError(503, "recognizer unavailable", None, f"{type(err).__name__}; retry later") from None
        raise AssertionError("unreachable")

    @api.post("/v1/recognize", response_model=RecognizeResponse, response_model_exclude_none=True, responses=ERRORS,
              openapi_extra=RECOGNIZE_BODY)
    async def recognize(self, request: Request) -> RecognizeResponse:
        """A skeleton sequence (JSON: RecognizeRequest), or for a video recognizer a video: a multipart/form-data
        upload (RecognizeUpload: field `video`), or JSON `video_uri` naming a file under an allowed root."""
        t0 = time.perf_counter()
        kind = _media_type(request.headers.get("content-type"))
        if kind == "multipart/form-data":
            return await self.recognize_upload(request, t0)
        body = await self.json_request(request, kind)
        model = self.resolve(body.model, request.headers.get(MODEL_HEADER))
        request.state.model = model.name
        if model.input == "video" or body.video_uri is not None:
            return await self.recognize_video_uri(body, model, request, t0)
        seq = request_sequence(body, model, self.max_frames)
        candidates = request_candidates(body, model)
        windows, starts = cut(seq, model.window, model.stride)
        t1 = time.perf_counter()
        out = await self.run_windows(model, windows, candidates)
        t2 = time.perf_counter()
        names = model.classes if candidates is None else [c["name"] for c in candidates]
        answer = aggregate(out, starts, seq.num_frames, model.window, names)
        t3 = time.perf_counter()
        # where the time went, for the Server-Timing header (ms): see _guard
        request.state.timing = {"validate": (t1 - t0) * 1e3, "call": (t2 - t1) * 1e3, "aggregate": (t3 - t2) * 1e3,
                                **out.pop("timing", {})}
        # serialised here, once: returned as a model, FastAPI would dump, re-validate and re-encode it
        body = RecognizeResponse(model=model.name, **answer, latency_ms=(t3 - t0) * 1e3)
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")

    @staticmethod
    async def json_request(request: Request, kind: str) -> RecognizeRequest:
        """The JSON body as FastAPI would parse it (no Content-Type: JSON), refusals naming the field."""
        if kind and kind != "application/json" and not kind.endswith("+json"):
            raise ApiError(415, "unsupported media type", "body", f"{kind!r}; send application/json (a skeleton "
                           "sequence, or a video_uri) or multipart/form-data (a video upload)")
        raw = await request.body()
        if not raw:
            raise ApiError(422, "invalid request", "body", "Field required (an empty body)")
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, "malformed JSON", "body", str(err)) from None
        try:
            return RecognizeRequest.model_validate(doc)
        except ValidationError as err:
            raise validation_error(list(err.errors())) from None

    async def recognize_video_uri(self, body: RecognizeRequest, model: ModelInfo, request: Request,
                                  t0: float) -> Response:
        if model.input != "video":
            raise ApiError(422, "wrong input", "video_uri", f"model {model.name!r} reads skeleton sequences "
                           f"({model.layout}), not videos; send `frames` (GET /v1/models says each model's input)")
        for name in ("frames", "data", "layout", "fps"):
            if getattr(body, name) is not None:
                raise ApiError(422, "wrong input", name, f"model {model.name!r} reads videos, not skeleton "
                               "sequences: send `video_uri`, or upload the file as multipart form field `video`")
        if body.video_uri is None:
            raise ApiError(422, "invalid request", "video_uri", f"model {model.name!r} reads videos: send "
                           "`video_uri`, or upload the file as multipart form field `video`")
        source = allowed_source(body.video_uri, self.video)
        candidates = request_candidates(body, model)
        return await self.answer_video(source, "video_uri", model, candidates, request, t0)

    async def recognize_upload(self, request: Request, t0: float) -> Response:
        """multipart/form-data: the `video` part streamed to a temporary file, removed whatever happens."""
        upload = Upload()
        try:
            try:
                await read_upload(request.stream(), request.headers.get("content-type", ""), upload, self.video)
            except ClientDisconnect:
                raise ApiError(400, "upload interrupted", "video", "the client went away mid-upload") from None
            unknown = sorted(set(upload.fields) - {"model", "candidates"})
            if unknown:
                raise ApiError(422, "invalid request", unknown[0], "unknown form field; the form takes `video`, "
                               "`model` and `candidates`")
            model = self.resolve(upload.fields.get("model"), request.headers.get(MODEL_HEADER))
            request.state.model = model.name
            if model.input != "video":
                raise ApiError(422, "wrong input", "video", f"model {model.name!r} reads skeleton sequences "
                               f"({model.layout}), not videos; POST them as JSON `frames` (GET /v1/models says "
                               "each model's input)")
            if upload.path is None:
                raise ApiError(422, "invalid request", "video", "no `video` file in the form")
            candidates = None
            if "candidates" in upload.fields:
                try:
                    body = RecognizeRequest.model_validate({"candidates": json.loads(upload.fields["candidates"])})
                except json.JSONDecodeError as err:
                    raise ApiError(422, "invalid request", "candidates", f"not JSON: {err}") from None
                except ValidationError as err:
                    raise validation_error(list(err.errors())) from None
                candidates = request_candidates(body, model)
            return await self.answer_video(upload.path, "video", model, candidates, request, t0)
        finally:
            upload.remove()

    async def answer_video(self, source: str, field: str, model: ModelInfo, candidates: list[dict] | None,
                           request: Request, t0: float) -> Response:
        """Check and decode the video (a worker thread: FFmpeg blocks), its clip through a replica as the one
        window, and recognize_clip's answer as a RecognizeResponse."""
        td = time.perf_counter()
        clip, info = await asyncio.to_thread(decode_clip, source, model.frames, model.image_size, self.video, field)
        t1 = time.perf_counter()
        out = await self.run_windows(model, [clip], candidates)
        t2 = time.perf_counter()
        timing = out.pop("timing", {})
        names = model.classes if candidates is None else [c["name"] for c in candidates]
        answer = recognize_clip(_Answered(out, names), clip)  # the one-clip answer, as in-process
        text = answer["explanation"].get("text")
        window = {"start": 0, "end": info["num_frames"], "label": answer["label"],
                  "probabilities": answer["probabilities"], **({"generated": text} if text is not None else {})}
        t3 = time.perf_counter()
        request.state.timing = {"validate": (td - t0) * 1e3, "decode": (t1 - td) * 1e3, "call": (t2 - t1) * 1e3,
                                "aggregate": (t3 - t2) * 1e3, **timing}
        body = RecognizeResponse(
            model=model.name, label=answer["label"], probabilities=answer["probabilities"], windows=[window],
            explanation={"frame_weights": answer["explanation"]["frame_weights"], "joint_weights": [],
                         "joint_names": [], "text": text},
            semantic_tokens=answer.get("semantic_tokens"), video=info, latency_ms=(t3 - t0) * 1e3)
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")

    @api.get("/v1/models", response_model=list[ModelInfo])
    async def models(self) -> list[ModelInfo]:
        return list(self.infos.values())

    @api.get("/v1/models/{name}/sample")
    async def sample(self, name: str) -> dict:
        """A real sequence of the model's data (its folder's sample.json): a request body plus its true label."""
        if name not in self.infos:
            raise ApiError(404, "unknown model", "model", f"{name!r}; served: {sorted(self.infos)}")
        sample = self.samples.get(name)
        if sample is None:
            raise ApiError(404, "no sample", "model", f"{name!r} has no sample.json (trained before samples were kept)")
        return {"model": name, **sample}

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "models": list(self.infos)}

    @api.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(self) -> Response:
        await events().flush()
        text = await self.collector.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    @api.websocket("/v1/stream")
    async def stream(self, ws: WebSocket) -> None:
        """Messages in: first `{model?, layout?, window?, stride?}`, then `{frames: [[V][C], ...]}` (any number of
        frames per message, up to max_frames), optionally `{end: true}`. Out: `{type: "window", start, end, label,
        probabilities, joint_weights}` each time a window completes; `{type: "error", error, field, detail}` for a
        bad message (the stream stays open; services/stream.py has the bounds). Auth: the Authorization header, or
        `?api_key=` for browsers. A client over its open-stream or request limit gets an error, then close 1008."""
        key = ws.query_params.get("api_key")
        header = ws.headers.get("authorization") or (f"Bearer {key}" if key else None)
        if not _authorised(header, "/v1/stream"):
            await ws.close(code=1008, reason="unauthorized")
            return
        client = client_of(header, ws.client.host if ws.client else None)
        counters = limits()
        await ws.accept()
        wait = counters.take(client)  # opening a stream is a request
        if wait is not None or not counters.open_stream(client):
            s = counters.settings
            detail = (f"more than {s.rate_limit_rps:g} requests/s from this client; retry in {retry_after(wait)} s"
                      if wait is not None else f"this client has {s.max_streams_per_client} streams open (the "
                      "limit); close one first")
            await ws.send_json(error(ApiError(429, "too many requests" if wait is not None else "too many streams",
                                              None, detail)))
            await ws.close(code=1008, reason="too many requests" if wait is not None else "too many streams")
            return
        try:
            await serve_stream(ws, self, self.max_frames, self.max_body_bytes, counters.settings.stream_idle_timeout_s)
        except WebSocketDisconnect:
            pass
        finally:
            counters.close_stream(client)
