"""Request/response schemas of the HTTP API (they are its OpenAPI document) and request validation.

Every refusal is an `ApiError` -> a JSON body `{error, field, detail}` with a 4xx status; `field` names the
offending part of the request (`frames[3][7]`, `model`, `layout`, `data[2].people`, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from actionllm.recognizer_folder import MAX_CANDIDATE_CHARS, MAX_CANDIDATE_TEXTS, MAX_CANDIDATES
from actionllm.skeleton.formats.base import FormatError
from actionllm.skeleton.layouts import LAYOUTS, get_layout
from actionllm.skeleton.sequence import SkeletonSequence
from actionllm.skeleton.transforms import to_coco17

Finite = Annotated[float, Field(allow_inf_nan=False)]


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None, detail: str = ""):
        super().__init__(f"{status} {error}: {field}: {detail}")
        self.status, self.error, self.field, self.detail = status, error, field, detail

    def body(self) -> dict:
        return {"error": self.error, "field": self.field, "detail": self.detail}


class ErrorBody(BaseModel):
    error: str = Field(description="what kind of refusal")
    field: str | None = Field(description="the part of the request at fault, e.g. frames[3][7] or model")
    detail: str = Field(description="what is wrong, in words")


class Candidate(BaseModel):
    """A class named at request time (open-vocabulary recognizers: GET /v1/models says `open_vocabulary`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_CANDIDATE_CHARS, description="the class's name")
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_CANDIDATE_CHARS)]] | None = Field(
        None, max_length=MAX_CANDIDATE_TEXTS, description="sentences describing the action (sugar's align stage "
        "compares the skeleton with them; default: a known class's knowledge, else the name)")


class RecognizeRequest(BaseModel):
    """One skeleton sequence to recognise: raw frames [T][V][C] in a registered layout, or a named format."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "demo", "layout": "coco17", "fps": 30, "frames": [[[0.1, 0.2]] * 17] * 2}]})
    model: str | None = Field(None, max_length=200, description="recognizer name (GET /v1/models); default: the "
                              "serve_multiplexed_model_id header, else the first model")
    format: Literal["array", "coco-keypoints", "openpose"] = Field(
        "array", description="array: `frames` [T][V][C]; coco-keypoints: `data` is a COCO keypoints object or an "
        "MMPose prediction list; openpose: `data` is the list of per-frame OpenPose objects {people: [...]}")
    layout: str | None = Field(None, max_length=64, description="joint layout of `frames` (default: the model's)")
    fps: Finite | None = Field(None, gt=0, le=1000, description="frames per second (informational)")
    frames: list[list[list[Finite]]] | None = Field(None, description="[T][V][C] joint coordinates (format array)")
    data: dict[str, Any] | list[Any] | None = Field(None, description="the named format's document")
    candidates: list[Candidate] | None = Field(
        None, min_length=2, max_length=MAX_CANDIDATES, description="open-vocabulary recognizers only: answer among "
        "these classes instead of the trained ones (a user adds an action by naming it, without retraining)")
    video_uri: str | None = Field(
        None, max_length=4096, description="video recognizers (GET /v1/models: input `video`): a video file the "
        "service reads, under a directory (or s3:// / gs:// prefix) its operator allows (`actionllm serve "
        "--video-root`); or upload the file instead as multipart/form-data field `video`")


class RecognizeUpload(BaseModel):
    """A video to recognise, as multipart/form-data (video recognizers: GET /v1/models says input `video`)."""

    model_config = ConfigDict(extra="forbid")
    video: bytes = Field(json_schema_extra={"format": "binary"}, description="the video file (MP4/MOV, "
                         "Matroska/WebM or AVI); the service's size and frame limits apply")
    model: str | None = Field(None, max_length=200, description="recognizer name (GET /v1/models); default: the "
                              "serve_multiplexed_model_id header, else the first model")
    candidates: str | None = Field(None, description="open-vocabulary recognizers only: a JSON list of "
                                   "{name, texts?} (as the JSON body's `candidates`)")


class WindowAnswer(BaseModel):
    start: int
    end: int
    label: str
    probabilities: dict[str, float]
    generated: str | None = Field(None, description="generative recognizers (llm-ar, sugar, lvlm-var): the LLM's own words for "
                                  "the window (display only; `label` comes from the class scores)")


class Explanation(BaseModel):
    frame_weights: list[float] = Field(description="weight of each frame of the sequence (sums to 1); for a "
                                       "video, of each frame the model sampled (`video.sampled_frames`)")
    joint_weights: list[float] = Field(description="weight of each joint in `joint_names` (mean over windows; "
                                       "empty for a video)")
    joint_names: list[str] = Field(description="the joints the model reads (its bridge may drop or add some)")
    text: str | None = Field(None, description="generative recognizers (llm-ar, sugar, lvlm-var): the LLM's own "
                             "words, \"{class}. {why}\" (skeletons: those of the window most sure of `label`; "
                             "display only: `label` comes from the class scores)")


class VideoInfo(BaseModel):
    """What the service read of a video."""

    num_frames: int
    fps: float
    width: int
    height: int
    codec: str
    duration_s: float
    sampled_frames: list[int] = Field(description="the frames the model saw (one per equal segment)")


class RecognizeResponse(BaseModel):
    model: str
    label: str
    probabilities: dict[str, float]
    windows: list[WindowAnswer]
    explanation: Explanation
    semantic_tokens: list[int] | None = Field(None, description="lvlm-var: the video's semantic tokens (codebook "
                                              "entries, repeats collapsed) that the LLM read")
    video: VideoInfo | None = Field(None, description="video requests: the file as the service read it")
    latency_ms: float


class ModelInfo(BaseModel):
    name: str
    recipe: str
    layout: str
    dims: int
    window: int | None
    stride: int | None
    classes: list[str]
    joint_names: list[str] = Field(description="the joints of `layout`, in the order requests send them")
    bones: list[tuple[int, int]] = Field(description="joint index pairs of the layout (for drawing)")
    sample: bool = Field(False, description="GET /v1/models/{name}/sample has a real sequence of its data")
    open_vocabulary: bool = Field(False, description="POST /v1/recognize takes `candidates` for this model")
    input: Literal["skeleton", "video"] = Field("skeleton", description="what POST /v1/recognize takes for this "
                                                "model: skeleton frames (JSON), or a video (multipart `video`, or "
                                                "`video_uri`)")
    frames: int | None = Field(None, description="video models: the frames sampled from each video")
    image_size: int | None = Field(None, description="video models: the side the sampled frames are resized to")


def _field(loc: tuple) -> str:
    """pydantic's location tuple -> `frames[3][2]` style."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_error(errors: list[dict]) -> ApiError:
    """FastAPI's RequestValidationError -> one ApiError naming the first problem's field."""
    e = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    loc = tuple(e.get("loc", ()))
    if e.get("type") == "json_invalid":
        return ApiError(400, "malformed JSON", "body", str(e.get("ctx", {}).get("error", e.get("msg"))))
    loc = loc[1:] if loc and loc[0] == "body" else loc
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ApiError(422, "invalid request", _field(loc) or "body", f"{e.get('msg')}{more}")


def frames_array(frames: list, layout: str, max_frames: int) -> np.ndarray:
    """[T][V][C] lists -> float32 array, refusing empty, too long, ragged and wrong-shaped input by field."""
    lay = get_layout(layout)
    if not frames:
        raise ApiError(422, "invalid request", "frames", "no frames")
    if len(frames) > max_frames:
        raise ApiError(422, "too many frames", "frames", f"{len(frames)} frames; this service takes at most {max_frames}")
    for t, frame in enumerate(frames):
        if len(frame) != lay.num_joints:
            raise ApiError(422, "wrong joint count", f"frames[{t}]",
                           f"{len(frame)} joints; layout {layout!r} has {lay.num_joints}")
        for v, joint in enumerate(frame):
            if len(joint) not in (2, 3) or len(joint) != len(frames[0][0]):
                raise ApiError(422, "wrong coordinate count", f"frames[{t}][{v}]",
                               f"{len(joint)} coordinates; expected {len(frames[0][0])} (2 or 3) like frames[0][0]")
    return np.asarray(frames, dtype=np.float32)


def request_sequence(req: RecognizeRequest, model: ModelInfo, max_frames: int) -> SkeletonSequence:
    """The request's sequence in the model's layout and dims (raw frames or a named format)."""
    scores = None
    try:
        if req.format == "array":
            if req.frames is None:
                raise ApiError(422, "invalid request", "frames", "format 'array' needs frames [T][V][C]")
            layout = req.layout or model.layout
            if layout not in LAYOUTS:
                raise ApiError(422, "unknown layout", "layout", f"{layout!r}; registered: {', '.join(sorted(LAYOUTS))}")
            joints = frames_array(req.frames, layout, max_frames)
        else:
            if req.data is None:
                raise ApiError(422, "invalid request", "data", f"format {req.format!r} needs its document in `data`")
            if req.format == "coco-keypoints":
                from actionllm.skeleton.formats.coco_keypoints import to_arrays

                joints, scores = to_arrays(req.data, "data")
                layout = "coco17"
            else:
                from actionllm.skeleton.formats.openpose import frames_to_arrays

                joints, scores, layout = frames_to_arrays(req.data, where="data")
            if joints.shape[-3] == 0:
                raise ApiError(422, "invalid request", "data", "no frames")
            if joints.shape[-3] > max_frames:
                raise ApiError(422, "too many frames", "data",
                               f"{joints.shape[-3]} frames; this service takes at most {max_frames}")
            if not np.isfinite(joints).all() or (scores is not None and not np.isfinite(scores).all()):
                raise ApiError(422, "not finite", "data", "coordinates and scores must be finite numbers")
    except FormatError as err:
        raise ApiError(422, f"invalid {req.format} document", "data", err.detail) from None
    except (ValueError, TypeError) as err:  # numbers that are not numbers inside a named format's document
        raise ApiError(422, f"invalid {req.format} document", "data", str(err)) from None
    seq = SkeletonSequence(sample_id="request", layout=layout, joints=joints, scores=scores, fps=req.fps or 30.0)
    if seq.layout != model.layout:
        if model.layout == "coco17" and _maps_to_coco(seq.layout):  # e.g. OpenPose output for a COCO model
            seq = to_coco17(seq)
        else:
            raise ApiError(422, "wrong layout", "layout" if req.format == "array" else "format",
                           f"model {model.name!r} reads layout {model.layout!r}; the request is {seq.layout!r}")
    if seq.dims != model.dims:
        raise ApiError(422, "wrong coordinate count", "frames[0][0]" if req.format == "array" else "data",
                       f"{seq.dims}D joints; model {model.name!r} reads {model.dims}D")
    return seq


def _maps_to_coco(layout: str) -> bool:
    """A layout that has at least COCO-17's body joints (the face may be missing: score 0, as in training)."""
    from actionllm.skeleton.layouts import coco17_mapping

    mapping = coco17_mapping(layout)
    return sum(v is not None for v in mapping.values()) >= 13
