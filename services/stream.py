"""WS /v1/stream: one client's frames -> one answer per completed window, with bounded memory.

Bounds (each refusal is an error message `{type: "error", error, field, detail}`; the stream stays open unless
said otherwise):
  - a message is at most `max_body_bytes` (as a POST body; larger: "message too large") and holds at most
    `max_frames` frames ("too many frames"); a binary message is refused ("binary message": send JSON text);
  - the window a client asks for is at most `max_frames` frames, and the buffer never holds more than one window:
    frames no window needs (stride > window) are dropped as they arrive, a completed window is answered and its
    first `stride` frames dropped at once. So a stream that never completes a window holds < window frames;
  - MAX_BAD_MESSAGES refusals in a row close the stream (code 1008), so a client that only sends garbage and never
    reads cannot pile up error replies;
  - a stream that sends nothing for `idle_timeout_s` (0: never) is told so and closed (code 1000).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket

from actionllm.inference import aggregate

from .schemas import ApiError, RecognizeRequest, frames_array, validation_error

MAX_BAD_MESSAGES = 100  # refusals in a row before the stream is closed


class StreamSession:
    """One WebSocket client's buffer: frames are kept only until the window that needs them is answered."""

    def __init__(self, ingress, start: dict, max_frames: int):
        self.ingress = ingress
        self.model = ingress.resolve(start.get("model"), None)
        if self.model.input != "skeleton":
            raise ApiError(422, "wrong input", "model", f"model {self.model.name!r} reads videos; the stream takes "
                           "skeleton frames (POST /v1/recognize takes a video)")
        self.layout = start.get("layout") or self.model.layout
        if self.layout != self.model.layout:
            raise ApiError(422, "wrong layout", "layout", f"model {self.model.name!r} streams layout "
                           f"{self.model.layout!r}; convert client-side or use POST /v1/recognize")
        self.max_frames = max_frames
        self.window = _positive(start, "window", self.model.window)
        if self.window is None:
            raise ApiError(422, "invalid request", "window", f"model {self.model.name!r} classifies whole sequences; "
                           "give a window (frames) for streaming")
        if self.window > max_frames:
            raise ApiError(422, "window too large", "window", f"{self.window} frames; this service holds at most "
                           f"{max_frames} frames of a stream")
        self.stride = _positive(start, "stride", self.model.stride or self.window)
        # invariant: `offset` frames were received before buffer[0]; a non-empty buffer starts at next_start
        self.offset, self.next_start, self.sent = 0, 0, 0
        self.buffer: list = []

    async def push(self, frames) -> list[dict]:
        if not isinstance(frames, list):
            raise ApiError(422, "invalid request", "frames", "expected a list of frames [[V][C], ...]")
        try:
            arr = frames_array(RecognizeRequest(frames=frames).frames, self.layout, self.max_frames) if frames else []
        except ValidationError as err:
            raise validation_error(list(err.errors())) from None
        if len(arr) and arr.shape[-1] != self.model.dims:
            raise ApiError(422, "wrong coordinate count", "frames[0][0]",
                           f"{arr.shape[-1]}D joints; model {self.model.name!r} reads {self.model.dims}D")
        answers = []
        for frame in arr:
            if self.offset < self.next_start:  # before the next window (stride > window): no window needs it
                self.offset += 1
                continue
            self.buffer.append(frame)
            if len(self.buffer) == self.window:
                answers.append(await self.answer())
                drop = min(self.stride, self.window)
                del self.buffer[:drop]
                self.offset += drop
                self.next_start += self.stride
        return answers

    async def answer(self) -> dict:
        win = np.stack(self.buffer)[None]  # [1, N, V, C]
        out = await self.ingress.run_windows(self.model, [win])
        a = aggregate(out, [0], self.window, self.window, self.model.classes)
        self.sent += 1
        return {"type": "window", "model": self.model.name, "start": self.next_start,
                "end": self.next_start + self.window, "label": a["label"], "probabilities": a["probabilities"],
                "joint_weights": a["explanation"]["joint_weights"]}


def _positive(msg: dict, key: str, default):
    value = msg.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000):
        raise ApiError(422, "invalid request", key, f"{value!r}: expected an integer from 1 to 10000")
    return value


def error(err: ApiError) -> dict:
    return err.body() | {"type": "error"}


async def serve_stream(ws: WebSocket, ingress, max_frames: int, max_message_bytes: int,
                       idle_timeout_s: float) -> None:
    """The accepted stream's messages until `{end: true}`, a disconnect, an idle timeout or too many bad messages."""
    session: StreamSession | None = None
    bad = 0
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout=idle_timeout_s or None)
        except asyncio.TimeoutError:
            await ws.send_json(error(ApiError(408, "idle timeout", None, f"no message for {idle_timeout_s:g} s")))
            await ws.close(code=1000, reason="idle timeout")
            return
        if message["type"] == "websocket.disconnect":
            return
        try:
            text = message.get("text")
            if text is None:
                raise ApiError(415, "binary message", "message", f"{len(message.get('bytes') or b'')} bytes; "
                               "send JSON text messages")
            size = len(text) if text.isascii() else len(text.encode())
            if size > max_message_bytes:  # before parsing: a huge message costs no JSON tree
                raise ApiError(413, "message too large", "message", f"{size} bytes; this service takes at most "
                               f"{max_message_bytes} bytes per message")
            try:
                msg = json.loads(text)
            except json.JSONDecodeError as err:
                raise ApiError(400, "malformed JSON", "message", str(err)) from None
            if not isinstance(msg, dict):
                raise ApiError(422, "invalid message", "message", "expected a JSON object")
            if session is None:
                session = StreamSession(ingress, msg, max_frames)
                await ws.send_json({"type": "ready", "model": session.model.name, "window": session.window,
                                    "stride": session.stride})
                bad = 0
                if "frames" not in msg and not msg.get("end"):
                    continue
            if msg.get("end"):
                await ws.send_json({"type": "end", "windows": session.sent, "buffered": len(session.buffer)})
                await ws.close()
                return
            for answer in await session.push(msg.get("frames")):
                await ws.send_json(answer)
            bad = 0
        except ApiError as err:
            bad += 1
            await ws.send_json(error(err))
            if bad >= MAX_BAD_MESSAGES:
                await ws.close(code=1008, reason=f"{bad} bad messages in a row")
                return
