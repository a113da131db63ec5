"""Videos through the Serve application (issue 17, item 6): a small lvlm-var recognizer beside a skeleton one on a
real local Ray, over real HTTP: multipart uploads and `video_uri`s under an allowed root answer like the in-process
path; paths outside the root, corrupt and oversize files, and the wrong input for a model are 4xx naming the field;
the service stays up and its metrics hold no 5xx. Plus the parts of services/video.py no service is needed for."""

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import chromium, free_port, msr_request, wait_healthy  # noqa: E402

pytestmark = pytest.mark.ray
NAMES = ["high arm wave", "hand clap", "bend"]
CFG = {"backbone": {"name_or_path": "tiny"}, "vst": {"codebook_size": 16, "hidden": 32, "heads": 2},
       "lora": {"r": 4, "alpha": 8}, "max_new_tokens": 4, "video": {"frames": 8},
       "encoder": {"name_or_path": "efficientnet-lite0", "image_size": 32}}
MAX_VIDEO = 48 << 10  # the service's upload limit in this test (bytes): the rendered clips are ~10 KB


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_root):
    """A tiny lvlm-var recognizer (EfficientNet-Lite0 at 32 px, 8 frames, random VST and LoRA on the tiny
    backbone), an ST-GCN skeleton recognizer for MSR Action3D, two rendered MSR clips, and the video roots."""
    import torch

    from actionllm.methods.lvlm_var.model import LVLMVARRecognizer, VSTRecognizer
    from actionllm.methods.stgcn.model import STGCNRecognizer
    from actionllm.skeleton.formats import get_reader
    from actionllm.video.render import render_sequence, write_mp4

    root = tmp_path_factory.mktemp("serve-video")
    torch.manual_seed(0)
    vst = VSTRecognizer(CFG, NAMES, "video", 3, seed=1)
    rec = LVLMVARRecognizer(CFG, NAMES, "video", 3, vst=vst.vst, seed=2,
                            descriptions={"high arm wave": "An arm swings overhead.", "hand clap": "", "bend": ""})
    video = rec.save(root / "lvlm")
    classes = get_reader("msr-action3d")(data_root / "msr_action3d").class_names
    skel = STGCNRecognizer({"clip": {"frames": 16}}, classes, "kinect20", 3, seed=6).save(root / "stgcn")
    allowed, outside = root / "videos", root / "elsewhere"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    clips = []
    for i, where in ((0, allowed / "sub" / "a.mp4"), (3, allowed / "b.mp4")):
        _, seq = msr_request(data_root, i)
        clips.append(write_mp4(render_sequence(seq, size=48), where, 15))
    (outside / "secret.mp4").write_bytes(clips[0].read_bytes())
    (allowed / "escape.mp4").symlink_to(outside / "secret.mp4")
    big = allowed / "big.mp4"  # a real clip padded past the limit (an MP4 may carry trailing bytes)
    big.write_bytes(clips[1].read_bytes() + b"\0" * MAX_VIDEO)
    return {"video": video, "skel": skel, "allowed": allowed, "outside": outside, "clips": clips, "big": big}


@pytest.fixture(scope="module")
def service(ray_local, folders):
    from ray import serve

    from services.app import ServeConfig, build_app

    port = free_port()
    cfg = ServeConfig.model_validate({
        "models": [{"name": "vid", "path": str(folders["video"])}, {"name": "skel", "path": str(folders["skel"])}],
        "num_cpus": 0.5, "max_batch_size": 4, "video_roots": [str(folders["allowed"])],
        "max_video_bytes": MAX_VIDEO, "max_video_frames": 500, "api_key_env": "ACTIONLLM_TEST_VIDEO_NO_KEY",
        "autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="actionllm", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url
    serve.shutdown()


def upload(url, path: Path, model: str | None = "vid", name: str | None = None, **fields):
    data = {**({"model": model} if model else {}), **fields}
    with open(path, "rb") as f:
        return httpx.post(f"{url}/v1/recognize", data=data, files={"video": (name or path.name, f, "video/mp4")},
                          timeout=120)


def post(url, body):
    return httpx.post(f"{url}/v1/recognize", json=body, timeout=120)


def refused(r, status: int, field: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:400])
    err = r.json()
    assert set(err) == {"error", "field", "detail"} and err["field"] == field and err["detail"], err
    return err


def test_models_say_their_input(service):
    models = {m["name"]: m for m in httpx.get(f"{service}/v1/models", timeout=30).json()}
    assert models["vid"]["input"] == "video" and models["vid"]["frames"] == 8 and models["vid"]["image_size"] == 32
    assert models["vid"]["classes"] == NAMES and models["vid"]["joint_names"] == []
    assert models["skel"]["input"] == "skeleton" and models["skel"]["frames"] is None
    doc = httpx.get(f"{service}/openapi.json", timeout=30).json()
    body = doc["paths"]["/v1/recognize"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    schemas = doc["components"]["schemas"]
    assert "video" in schemas["RecognizeUpload"]["required"] and "video_uri" in schemas["RecognizeRequest"]["properties"]
    assert {"text"} <= set(schemas["Explanation"]["properties"]) and "video" in schemas["RecognizeResponse"]["properties"]


def test_upload_answers_as_in_process(service, folders):
    """A multipart upload: label among the classes, the generated explanation, attention over the sampled frames,
    the semantic tokens; the same answer as recognize_clip on the same file without Serve."""
    from actionllm.inference import recognize_clip
    from actionllm.methods import load_recognizer
    from actionllm.video.decode import read_frames

    clip_path = folders["clips"][0]
    r = upload(service, clip_path)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["model"] == "vid" and a["label"] in NAMES and set(a["probabilities"]) == set(NAMES)
    assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    ex = a["explanation"]
    assert isinstance(ex["text"], str) and ex["joint_weights"] == [] and len(ex["frame_weights"]) == 8
    assert len(a["video"]["sampled_frames"]) == 8 and a["video"]["codec"] and a["video"]["num_frames"] > 8
    assert a["windows"] == [{"start": 0, "end": a["video"]["num_frames"], "label": a["label"],
                             "probabilities": a["probabilities"], "generated": ex["text"]}]
    assert all(isinstance(t, int) for t in a["semantic_tokens"]) and a["semantic_tokens"]
    assert "model;dur=" in r.headers["server-timing"]
    rec = load_recognizer(folders["video"])
    local = recognize_clip(rec, read_frames(clip_path, rec.cfg.video.frames, rec.encoder.image_size))
    assert a["label"] == local["label"] and ex["text"] == local["explanation"]["text"]
    assert a["semantic_tokens"] == local["semantic_tokens"]
    np.testing.assert_allclose([a["probabilities"][c] for c in NAMES], [local["probabilities"][c] for c in NAMES],
                               atol=1e-4)
    # no model field: the default (first) model, the video one; a file name without an extension is fine
    assert upload(service, folders["clips"][1], model=None, name="blob").status_code == 200


def test_video_uri_under_the_root_answers_and_outside_is_refused(service, folders):
    allowed = folders["allowed"]
    for uri in ("sub/a.mp4", str(allowed / "sub" / "a.mp4"), f"file://{allowed}/b.mp4"):
        r = post(service, {"model": "vid", "video_uri": uri})
        assert r.status_code == 200, (uri, r.text)
        assert r.json()["label"] in NAMES and r.json()["explanation"]["text"] is not None
    same = post(service, {"model": "vid", "video_uri": "sub/a.mp4"}).json()
    assert same["probabilities"] == pytest.approx(upload(service, folders["clips"][0]).json()["probabilities"],
                                                  abs=1e-5)
    secret = folders["outside"] / "secret.mp4"
    for uri in ("../elsewhere/secret.mp4", "sub/../../elsewhere/secret.mp4", str(secret), f"file://{secret}",
                "escape.mp4", "/etc/passwd", "s3://bucket/x.mp4", "http://127.0.0.1/x.mp4"):
        refused(post(service, {"model": "vid", "video_uri": uri}), 403, "video_uri")
    refused(post(service, {"model": "vid", "video_uri": "sub/none.mp4"}), 422, "video_uri")
    refused(post(service, {"model": "vid", "video_uri": "big.mp4"}), 413, "video_uri")


def test_bad_files_and_wrong_inputs_are_4xx_naming_the_field(service, folders, data_root, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are the minutes of the meeting, not a video\n" * 20)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")  # an MP4's first bytes, then text
    refused(upload(service, text), 415, "video")
    err = refused(upload(service, fake), 415, "video")
    assert "cannot open" in err["detail"]  # VideoError's reason
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    refused(upload(service, empty), 422, "video")
    # too large: refused while streaming (over the limit, under the form's allowance) and from Content-Length
    for size in (MAX_VIDEO + 1000, MAX_VIDEO + (1 << 20)):
        big = tmp_path / f"big{size}.mp4"
        big.write_bytes(folders["clips"][0].read_bytes() + b"\0" * size)
        refused(upload(service, big), 413, "video")
    # the wrong input for the model, either way round
    payload, _ = msr_request(data_root, 0)
    refused(post(service, {**payload, "model": "vid"}), 422, "frames")
    refused(post(service, {"model": "vid"}), 422, "video_uri")
    refused(upload(service, folders["clips"][0], model="skel"), 422, "video")
    refused(post(service, {"model": "skel", "video_uri": "sub/a.mp4"}), 422, "video_uri")
    refused(post(service, {"model": "vid", "video_uri": "sub/a.mp4", "frames": [[[0.0, 0.0, 0.0]] * 20]}), 422,
            "frames")
    # the form itself
    refused(upload(service, folders["clips"][0], model="nope"), 404, "model")
    refused(upload(service, folders["clips"][0], colour="red"), 422, "colour")
    refused(upload(service, folders["clips"][0], candidates='[{"name": "a"}, {"name": "b"}]'), 422, "candidates")
    r = httpx.post(f"{service}/v1/recognize", data={"model": "vid"}, files={"other": ("x.mp4", b"123")}, timeout=60)
    refused(r, 422, "other")
    r = httpx.post(f"{service}/v1/recognize", content=b"--nope\r\nbroken", timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=xyz"})
    refused(r, 400, "body")
    r = httpx.post(f"{service}/v1/recognize", content=b"frames", timeout=60, headers={"content-type": "text/plain"})
    refused(r, 415, "body")
    # the WebSocket stream takes skeleton frames only
    from websockets.sync.client import connect

    with connect(service.replace("http", "ws") + "/v1/stream") as ws:
        ws.send('{"model": "vid"}')
        msg = json.loads(ws.recv(timeout=60))
        assert msg["type"] == "error" and msg["field"] == "model" and "videos" in msg["detail"]
    # the skeleton model still answers skeleton frames beside the video model
    assert post(service, {**payload, "model": "skel"}).status_code == 200


def test_web_page_uploads_a_video_for_a_video_model(service, folders):
    """The page shows a video file input for a video model (the skeleton inputs hidden), uploads the file as
    multipart and shows the label, the probabilities and the explanation text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = chromium()
    try:
        browser.get(service + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
        Select(browser.find_element(By.ID, "model")).select_by_value("skel")
        assert browser.find_element(By.ID, "file").is_displayed()
        assert not browser.find_element(By.ID, "video-file").is_displayed()
        Select(browser.find_element(By.ID, "model")).select_by_value("vid")
        assert not browser.find_element(By.ID, "file").is_displayed()
        browser.find_element(By.ID, "video-file").send_keys(str(folders["clips"][0]))
        result = wait.until(lambda b: b.execute_script("return window.lastResult"))
        assert result["model"] == "vid" and result["label"] in NAMES
        assert browser.find_element(By.ID, "label").text == result["label"]
        assert browser.find_element(By.ID, "explanation").text == result["explanation"]["text"].strip()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#probs li")) == len(NAMES)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#frameweights span")) == 8
    finally:
        browser.quit()


def test_service_stays_up_and_no_5xx(service):
    assert httpx.get(f"{service}/healthz", timeout=30).json()["status"] == "ok"
    text = httpx.get(f"{service}/metrics", timeout=30).text
    codes = {}
    for m in re.finditer(r'^actionllm_requests_total\{([^}]*)\} ([0-9.e+-]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels["route"] == "/v1/recognize":
            codes[labels["status"]] = codes.get(labels["status"], 0) + float(m.group(2))
    assert codes.get("200", 0) >= 6 and {"403", "413", "415", "422"} <= set(codes), codes
    assert not [c for c in codes if c.startswith("5")], codes


# --- services/video.py without a service --------------------------------------------------------------------
def test_no_roots_refuses_every_video_uri_and_roots_are_checked(tmp_path):
    from services.app import ServeConfig
    from services.schemas import ApiError
    from services.video import VideoPolicy, allowed_source, normalise_root

    with pytest.raises(ApiError) as err:
        allowed_source(str(tmp_path / "a.mp4"), VideoPolicy())
    assert err.value.status == 403 and err.value.field == "video_uri" and "--video-root" in err.value.detail
    assert normalise_root(f"{tmp_path}/./") == str(tmp_path) and normalise_root("gs://b/v") == "gs://b/v/"
    for bad in (tmp_path / "missing", "http://x/y", "s3://b/../c"):
        with pytest.raises(ValueError):
            normalise_root(str(bad))
    pol = VideoPolicy(roots=("s3://bucket/videos/",))
    assert allowed_source("s3://bucket/videos/a.mp4", pol) == "s3://bucket/videos/a.mp4"
    for uri in ("s3://bucket/videos2/a.mp4", "s3://bucket/videos/../a.mp4", "gs://bucket/videos/a.mp4", "rel.mp4"):
        with pytest.raises(ApiError) as err:
            allowed_source(uri, pol)
        assert err.value.status == 403, uri
    with pytest.raises(ValueError, match="not a directory"):
        ServeConfig.model_validate({"models": [], "video_roots": [str(tmp_path / "missing")]})


def test_multipart_parser_streams_any_chunking_and_refuses_bad_forms():
    from services.schemas import ApiError
    from services.video import Upload, VideoPolicy, read_upload

    video = os.urandom(30_000) + b"\r\n--not-the-boundary\r\n" + os.urandom(500)
    req = httpx.Request("POST", "http://x/", data={"model": "vid"}, files={"video": ("a.mp4", video)})
    ctype, body = req.headers["content-type"], req.read()

    async def chunks(data: bytes, n: int):
        for i in range(0, len(data), n):
            yield data[i:i + n]

    async def parse(data: bytes, n: int, policy=VideoPolicy()) -> Upload:
        up = Upload()
        try:
            await read_upload(chunks(data, n), ctype, up, policy)
            return up
        except ApiError:
            up.remove()
            raise

    for n in (1, 13, 4096, len(body)):
        up = asyncio.run(parse(body, n))
        assert Path(up.path).read_bytes() == video and up.fields == {"model": "vid"} and up.size == len(video)
        up.remove()
        assert up.path is None
    for data, policy, status, field in ((body, VideoPolicy(max_bytes=10_000), 413, "video"),
                                        (body[:len(body) // 2], VideoPolicy(), 400, "body"),
                                        (b"no boundary here", VideoPolicy(), 400, "body")):
        with pytest.raises(ApiError) as err:
            asyncio.run(parse(data, 1000, policy))
        assert (err.value.status, err.value.field) == (status, field)
