"""The Serve application on a real local Ray, over real HTTP on 127.0.0.1: answers, refusals, batching,
multiplexing with eviction, the WebSocket stream, autoscaling 1 -> 2 -> 1, an API key, and schemathesis."""

import json
import pickle
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import chromium, free_port, msr_request, wait_healthy  # noqa: E402

pytestmark = pytest.mark.ray
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def metric(text: str, name: str, **labels) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.fixture(scope="module")
def service(ray_local, tiny_recognizers, tiny_llm_ar, tiny_sugar, tiny_ensemble, monkeypatch_module):
    from ray import serve

    from services.app import ServeConfig, build_app

    monkeypatch_module.setenv("ACTIONLLM_API_KEY", KEY)  # read by build_app (its digest goes to the ingress)
    port = free_port()
    cfg = ServeConfig.model_validate({
        "models": [*({"name": n, "path": str(p)} for n, p in tiny_recognizers.items()),
                   {"name": "llmar", "path": str(tiny_llm_ar)}, {"name": "sugar", "path": str(tiny_sugar)},
                   {"name": "streams", "path": str(tiny_ensemble)}],
        "max_models_per_replica": 2, "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "num_cpus": 0.5,
        "max_frames": 500, "max_body_bytes": 1 << 20,
        "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1,
                        "downscale_delay_s": 4, "look_back_period_s": 2, "metrics_interval_s": 0.5}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="actionllm", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url, cfg
    serve.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def body(data_root):
    return msr_request(data_root, 0)


def post(url, payload, **kw):
    headers = {**AUTH, **kw.pop("headers", {})}
    return httpx.post(f"{url}/v1/recognize", json=payload, headers=headers, timeout=120, **kw)


def test_valid_request_every_field_and_same_answer_as_in_process(service, body, tiny_recognizers):
    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer

    url, _ = service
    payload, seq = body
    r = post(url, {**payload, "model": "alpha"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert set(a) == {"model", "label", "probabilities", "windows", "explanation", "latency_ms"}
    assert a["model"] == "alpha" and a["latency_ms"] > 0
    assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) and len(a["probabilities"]) == 20
    t = seq.num_frames
    assert [w["start"] for w in a["windows"]] == list(range(0, t - 12 + 1, 6))  # N=12, stride 6, as evaluation
    assert all(w["end"] - w["start"] == 12 and set(w) == {"start", "end", "label", "probabilities"} for w in a["windows"])
    ex = a["explanation"]
    assert len(ex["frame_weights"]) == t and sum(ex["frame_weights"]) == pytest.approx(1.0, abs=1e-4)
    assert len(ex["joint_weights"]) == len(ex["joint_names"]) > 0
    local = recognize(load_recognizer(tiny_recognizers["alpha"]), seq)  # the evaluation path, no Serve
    assert a["label"] == local["label"]
    np.testing.assert_allclose([a["probabilities"][c] for c in local["probabilities"]],
                               list(local["probabilities"].values()), atol=1e-4)
    # the model can also be chosen by Serve's multiplexing header; default = the first model
    h = post(url, payload, headers={"serve_multiplexed_model_id": "beta"})
    assert h.status_code == 200 and h.json()["model"] == "beta"
    assert post(url, payload).json()["model"] == "alpha"


def test_models_healthz_docs(service):
    url, _ = service
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()
    assert [m["name"] for m in models] == ["alpha", "beta", "gamma", "llmar", "sugar", "streams"]
    assert [m["open_vocabulary"] for m in models] == [False] * 4 + [True, False]
    assert models[0]["window"] == 12 and models[0]["stride"] == 6 and models[0]["layout"] == "kinect20"
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/v1/recognize" in httpx.get(f"{url}/openapi.json").json()["paths"]


def bad_requests(payload):
    frames = payload["frames"]
    nan_frames = json.loads(json.dumps(frames))
    nan_frames[3][7][1] = float("nan")
    return [
        # (name, how to send it, expected status, expected field)
        ("wrong joint count", {"json": {**payload, "frames": [f[:19] for f in frames]}}, 422, "frames[0]"),
        ("NaN", {"content": json.dumps({**payload, "frames": nan_frames}), "headers": {"content-type": "application/json"}},
         422, "frames[3][7][1]"),
        ("empty", {"json": {**payload, "frames": []}}, 422, "frames"),
        ("too many frames", {"json": {**payload, "frames": frames[:1] * 501}}, 422, "frames"),
        ("wrong type", {"json": {**payload, "frames": "abc"}}, 422, "frames"),
        ("wrong coordinate", {"json": {**payload, "frames": [[[1.0, "x", 2.0]] * 20]}}, 422, "frames[0][0][1]"),
        ("ragged coordinates", {"json": {**payload, "frames": [[[1.0, 2.0, 3.0]] * 19 + [[1.0, 2.0]]]}}, 422,
         "frames[0][19]"),
        ("2D for a 3D model", {"json": {**payload, "frames": [[[1.0, 2.0]] * 20] * 4}}, 422, "frames[0][0]"),
        ("unknown model", {"json": {**payload, "model": "nope"}}, 404, "model"),
        ("unknown layout", {"json": {**payload, "layout": "nope"}}, 422, "layout"),
        ("other layout", {"json": {"layout": "coco17", "frames": [[[1.0, 2.0]] * 17] * 4}}, 422, "layout"),
        ("unknown field", {"json": {**payload, "extra": 1}}, 422, "extra"),
        ("oversized body", {"content": b"[" + b" " * (2 << 20) + b"]", "headers": {"content-type": "application/json"}},
         413, "body"),
        ("oversized chunked body", {"content": (b" " * (64 << 10) for _ in range(20)),  # no Content-Length
                                    "headers": {"content-type": "application/json"}}, 413, "body"),
        ("malformed JSON", {"content": b'{"frames": [[[1, 2', "headers": {"content-type": "application/json"}}, 400, "body"),
        ("bad coco document", {"json": {"format": "coco-keypoints", "data": {"images": 3}}}, 422, "data"),
        ("no key", {"json": payload, "headers": {"Authorization": "Bearer wrong"}}, 401, "Authorization"),
    ]


def test_bad_requests_are_4xx_naming_the_field_and_service_stays_up(service, body):
    url, _ = service
    payload, _ = body
    for name, kw, status, field in bad_requests(payload):
        headers = {**AUTH, **kw.pop("headers", {})}
        r = httpx.post(f"{url}/v1/recognize", headers=headers, timeout=60, **kw)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        err = r.json()
        assert set(err) == {"error", "field", "detail"} and err["field"] == field, (name, err)
        assert err["detail"], name
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert post(url, payload).status_code == 200  # still serving
    data = json.dumps(payload).encode()
    pieces = (data[i:i + 4096] for i in range(0, len(data), 4096))  # a valid body sent chunked: read and answered
    r = httpx.post(f"{url}/v1/recognize", content=pieces, headers={**AUTH, "content-type": "application/json"},
                   timeout=120)
    assert r.status_code == 200, r.text[:300]


def test_named_formats(service, data_root):
    """A COCO-keypoints / OpenPose document is accepted; its layout (coco17 / openpose) is not this 3D model's."""
    url, _ = service
    coco = {"images": [{"id": i, "frame_id": i} for i in range(3)],
            "annotations": [{"image_id": i, "keypoints": [10.0, 20.0, 2] * 17} for i in range(3)]}
    r = post(url, {"format": "coco-keypoints", "data": coco})
    assert r.status_code == 422 and r.json()["field"] == "format" and "coco17" in r.json()["detail"]
    op = [{"people": [{"pose_keypoints_2d": [1.0, 2.0, 0.9] * 25}]}] * 3
    r = post(url, {"format": "openpose", "data": op})
    assert r.status_code == 422 and "body25" in r.json()["detail"]


def test_concurrent_requests_are_batched(service, body):
    url, _ = service
    payload, _ = body
    before = httpx.get(f"{url}/metrics", headers=AUTH).text
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: post(url, {**payload, "model": "alpha"}).status_code, range(32)))
    assert codes == [200] * 32
    time.sleep(0.5)
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    batches = metric(text, "actionllm_batch_size_requests_count") - metric(before, "actionllm_batch_size_requests_count")
    ones = (metric(text, "actionllm_batch_size_requests_bucket", le="1.0")
            - metric(before, "actionllm_batch_size_requests_bucket", le="1.0"))
    assert batches > ones  # at least one batch held more than one request
    assert metric(text, "actionllm_batch_size_requests_sum") - metric(before, "actionllm_batch_size_requests_sum") >= 32
    assert metric(text, "actionllm_requests_total", route="/v1/recognize", model="alpha", status="200") >= 32
    assert metric(text, "actionllm_request_latency_seconds_count", model="alpha") >= 32
    assert metric(text, "actionllm_windows_total", model="alpha") > 0
    assert metric(text, "actionllm_tokens_total", model="alpha") > 0
    assert metric(text, "actionllm_requests_total", status="422") >= 1  # the refusals of the previous test


def running_replicas() -> int:
    from ray import serve

    dep = serve.status().applications["actionllm"].deployments["RecognizerServer"]
    return dep.replica_states.get("RUNNING", 0)


def wait_for_replicas(n: int, seconds: float = 90) -> int:
    deadline = time.time() + seconds
    while time.time() < deadline and running_replicas() != n:
        time.sleep(1)
    return running_replicas()


def test_two_recognizers_on_one_base_and_lru_eviction(service, body):
    url, cfg = service
    payload, _ = body
    # the load of the previous test may have scaled up: with 2 replicas x K=2 slots, 3 models never evict
    assert wait_for_replicas(1) == 1
    a = post(url, {**payload, "model": "alpha"}).json()
    b = post(url, {**payload, "model": "beta"}).json()
    assert a["model"] == "alpha" and b["model"] == "beta"
    assert a["probabilities"] != b["probabilities"]  # distinct adapters/heads answered
    before = httpx.get(f"{url}/metrics", headers=AUTH).text
    for name in ("gamma", "alpha", "beta", "gamma"):  # K=2: each of these needs a load and evicts one
        assert post(url, {**payload, "model": name}).status_code == 200
    time.sleep(0.5)
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    evicted = metric(text, "actionllm_model_evictions_total") - metric(before, "actionllm_model_evictions_total")
    loads = metric(text, "actionllm_model_cache_total", result="load") - metric(before, "actionllm_model_cache_total",
                                                                              result="load")
    assert loads >= 1 and evicted >= 1
    assert post(url, {**payload, "model": "alpha"}).json()["probabilities"] == pytest.approx(a["probabilities"], abs=1e-5)


def test_websocket_yields_a_prediction_per_completed_window(service, body):
    from websockets.sync.client import connect

    url, _ = service
    payload, seq = body
    frames = payload["frames"]
    got = []
    with connect(url.replace("http", "ws") + "/v1/stream", additional_headers=AUTH) as ws:
        ws.send(json.dumps({"model": "beta"}))
        ready = json.loads(ws.recv(timeout=60))
        assert ready["type"] == "ready" and ready["window"] == 12 and ready["stride"] == 6
        for s in range(0, 30, 5):  # 30 frames in messages of 5: windows end at 12, 18, 24, 30
            ws.send(json.dumps({"frames": frames[s:s + 5]}))
        ws.send(json.dumps({"frames": [[[1.0, 2.0]] * 20]}))  # a bad message: an error, the stream stays open
        ws.send(json.dumps({"end": True}))
        while True:
            msg = json.loads(ws.recv(timeout=60))
            if msg["type"] == "end":
                break
            got.append(msg)
    windows = [m for m in got if m["type"] == "window"]
    errors = [m for m in got if m["type"] == "error"]
    assert [(w["start"], w["end"]) for w in windows] == [(0, 12), (6, 18), (12, 24), (18, 30)]
    assert len(errors) == 1 and errors[0]["field"] == "frames[0][0]"
    full = post(url, {**payload, "frames": frames[:30], "model": "beta"}).json()["windows"]
    for w, f in zip(windows, full, strict=True):  # the same windows as the whole-sequence request
        assert w["label"] == f["label"]
        assert w["probabilities"] == pytest.approx(f["probabilities"], abs=1e-4)


def test_autoscaling_up_under_load_and_back(service, body):

    url, _ = service
    payload, _ = body

    replicas = running_replicas
    assert wait_for_replicas(1) == 1
    stop = threading.Event()

    def load():
        while not stop.is_set():
            post(url, {**payload, "model": "alpha"})

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        deadline, peak = time.time() + 90, 1
        while time.time() < deadline and peak < 2:
            time.sleep(1)
            peak = max(peak, replicas())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert peak == 2, "the deployment did not scale to 2 replicas under load"
    deadline = time.time() + 90
    while time.time() < deadline and replicas() != 1:
        time.sleep(1)
    assert replicas() == 1, "the deployment did not scale back to 1 replica"
    assert post(url, payload).status_code == 200


def test_schemathesis_finds_no_server_error(service, tmp_path):
    """A bad crowd over HTTP (issue 19): >= 1000 cases generated from /openapi.json, every one answered below 500
    (the HAR report holds each request and its answer), and the service healthy after."""
    url, _ = service
    har = tmp_path / "cases.har"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--checks",
         "not_a_server_error", "--max-examples", "150", "--header", f"Authorization: Bearer {KEY}",
         "--seed", "1", "--report", "junit,har", "--report-dir", str(tmp_path), "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    import xml.etree.ElementTree as ET

    suites = [ET.parse(f).getroot() for f in tmp_path.rglob("*.xml")]
    cases = [c for root in suites for c in root.iter("testcase")]
    assert len(cases) >= 4  # the operations of /openapi.json were exercised
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert "/v1/recognize" in " ".join(c.get("name", "") for c in cases)
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [e["response"]["status"] for e in entries]
    print(f"schemathesis: {len(entries)} requests, statuses {sorted(set(statuses))}")
    assert len(entries) >= 1000 and max(statuses) < 500
    assert sum(e["request"]["url"].endswith("/v1/recognize") for e in entries) >= 150
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_web_page_in_headless_chromium(service, body, tmp_path):
    """Open a skeleton file on the page: the label and probabilities appear, and the skeleton is drawn with joints
    coloured by weight; a file that is not JSON is refused on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, _ = service
    payload, _ = body
    good = tmp_path / "walk.json"
    good.write_text(json.dumps(payload))
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    expected = post(url, {**payload, "model": "beta"}).json()
    browser = chromium()
    try:
        browser.get(url + "/")
        browser.find_element(By.ID, "key").send_keys(KEY + "\t")  # the service has a key: the page sends it
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 6)
        Select(browser.find_element(By.ID, "model")).select_by_value("beta")
        browser.find_element(By.ID, "file").send_keys(str(good))
        result = wait.until(lambda b: b.execute_script("return window.lastResult"))
        assert result["model"] == "beta" and result["label"] == expected["label"]
        assert browser.find_element(By.ID, "label").text == expected["label"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#probs li")) == 20
        colours = browser.execute_script("""
            const c = document.getElementById('skeleton'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
            return seen.size;""")
        assert colours > 5  # bones and joints of several weights were drawn
        browser.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(lambda b: "error" in b.find_element(By.ID, "status").get_attribute("class"))
        assert "not JSON" in browser.find_element(By.ID, "status").text
    finally:
        browser.quit()


def test_sample_endpoint_serves_the_folders_real_sequence(service):
    url, _ = service
    models = {m["name"]: m for m in httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30).json()}
    assert models["alpha"]["sample"] is True and models["beta"]["sample"] is False
    r = httpx.get(f"{url}/v1/models/alpha/sample", headers=AUTH, timeout=30)
    sample = r.json()
    assert r.status_code == 200 and sample["layout"] == "kinect20" and len(sample["frames"][0]) == 20
    assert sample["label"] in models["alpha"]["classes"]
    answer = post(url, {"model": "alpha", "layout": sample["layout"], "frames": sample["frames"]})
    assert answer.status_code == 200
    for name, field in (("beta", "model"), ("nope", "model")):
        r = httpx.get(f"{url}/v1/models/{name}/sample", headers=AUTH, timeout=30)
        assert r.status_code == 404 and r.json()["field"] == field
    assert httpx.get(f"{url}/v1/models/alpha/sample", timeout=30).status_code == 401  # behind the key too


def test_web_page_sample_shows_the_answer_over_time(service):
    """A new user's first click: 'Try a sample' recognises a real sequence of the model's data, shows the true
    label beside the answer and the label of each window along a timeline; a model without a sample disables it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, _ = service
    browser = chromium()
    try:
        browser.set_window_size(1280, 900)
        browser.get(url + "/")
        browser.find_element(By.ID, "key").send_keys(KEY + "\t")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) == 6)
        Select(browser.find_element(By.ID, "model")).select_by_value("beta")
        assert not browser.find_element(By.ID, "sample").is_enabled()
        Select(browser.find_element(By.ID, "model")).select_by_value("alpha")
        wait.until(lambda b: b.find_element(By.ID, "sample").is_enabled())
        browser.find_element(By.ID, "sample").click()
        result = wait.until(lambda b: b.execute_script("return window.lastResult"))
        assert result["model"] == "alpha"
        assert browser.find_element(By.ID, "truth").text.startswith("true label: ")
        segments = browser.find_elements(By.CSS_SELECTOR, "#timeline .seg")
        assert len(segments) >= 2 and segments[0].text == result["windows"][0]["label"]
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#timeline .seg.now"))  # playback marks a window
    finally:
        browser.quit()


def test_llm_ar_recognizer_is_served_with_no_code_of_its_own(service, body, tiny_llm_ar):
    """A generative recognizer (llm-ar) through the same endpoint: scores from the names' likelihoods, the
    LLM's own words per window, and the same answer as in-process."""
    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer

    url, _ = service
    payload, seq = body
    r = post(url, {**payload, "model": "llmar"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["model"] == "llmar" and len(a["windows"]) == 1  # the whole sequence is one clip
    assert isinstance(a["windows"][0]["generated"], str)
    local = recognize(load_recognizer(tiny_llm_ar), seq)
    assert a["label"] == local["label"] and a["windows"][0]["generated"] == local["windows"][0]["generated"]
    assert a["explanation"]["text"] == local["explanation"]["text"] == a["windows"][0]["generated"]  # the page's line
    np.testing.assert_allclose([a["probabilities"][c] for c in local["probabilities"]],
                               list(local["probabilities"].values()), atol=1e-4)


def test_an_ensemble_folder_is_served_like_any_recognizer(service, body, tiny_ensemble):
    """Two GCN streams joined by `actionllm ensemble`: one model of the service, whose answer is the mean of its
    members' probabilities, equal to the in-process one; it answers among its trained classes only."""
    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer

    url, _ = service
    payload, seq = body
    info = {m["name"]: m for m in httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30).json()}["streams"]
    assert info["recipe"] == "ensemble" and info["window"] is None and not info["open_vocabulary"]
    r = post(url, {**payload, "model": "streams"})
    assert r.status_code == 200, r.text
    served = r.json()
    ens = load_recognizer(tiny_ensemble)
    local = recognize(ens, seq)
    members = [recognize(m, seq)["probabilities"] for m in ens.members]
    assert served["label"] == local["label"] and len(served["windows"]) == 1
    for c in local["probabilities"]:
        mean = (members[0][c] + members[1][c]) / 2
        assert served["probabilities"][c] == pytest.approx(local["probabilities"][c], abs=1e-5)
        assert local["probabilities"][c] == pytest.approx(mean, abs=1e-5)
    r = post(url, {**payload, "model": "streams", "candidates": [{"name": "jump"}, {"name": "bow"}]})
    assert r.status_code == 422 and r.json()["field"] == "candidates"


def test_open_vocabulary_candidates_over_http(service, body, tiny_sugar):
    """A sugar model answers among classes the request names (issue 16, item 6): known names keep their knowledge
    (the answer equals the in-process one), a new name with a sentence changes the answer, bad lists are 4xx."""
    from actionllm.inference import recognize
    from actionllm.methods import load_recognizer

    url, _ = service
    payload, seq = body
    own = post(url, {**payload, "model": "sugar"})
    assert own.status_code == 200 and len(own.json()["probabilities"]) == 20
    cands = [{"name": "high arm wave"}, {"name": "bend"}, {"name": "side kick"}]
    r = post(url, {**payload, "model": "sugar", "candidates": cands})
    assert r.status_code == 200, r.text
    a = r.json()
    assert list(a["probabilities"]) == ["high arm wave", "bend", "side kick"] and a["label"] in a["probabilities"]
    local = recognize(load_recognizer(tiny_sugar), seq, candidates=[{**c, "texts": []} for c in cands])
    np.testing.assert_allclose(list(a["probabilities"].values()), list(local["probabilities"].values()), atol=1e-4)
    added = [*cands, {"name": "salute", "texts": ["the right hand rises to the brow and holds there"]}]
    b = post(url, {**payload, "model": "sugar", "candidates": added}).json()
    assert list(b["probabilities"]) == [c["name"] for c in added]
    assert b["probabilities"]["bend"] != pytest.approx(a["probabilities"]["bend"], abs=1e-6)  # the new name counts
    for bad, field in [([{"name": "bend"}], "candidates"), ([{"name": "bend"}, {"name": "bend"}], "candidates[1].name"),
                       ([{"name": "bend"}, {"name": ""}], "candidates[1].name"),
                       ([{"name": "bend"}, {"name": "x", "texts": ["t"] * 9}], "candidates[1].texts"),
                       ([{"name": "bend"}, {"name": "x", "colour": "red"}], "candidates[1].colour"),
                       ([{"name": f"c{i}"} for i in range(201)], "candidates")]:
        r = post(url, {**payload, "model": "sugar", "candidates": bad})
        assert r.status_code == 422 and r.json()["field"] == field, (field, r.text)
    r = post(url, {**payload, "model": "alpha", "candidates": cands})  # a closed-vocabulary model refuses them
    assert r.status_code == 422 and r.json()["error"] == "candidates not supported"
    assert httpx.get(f"{url}/healthz").status_code == 200


# --- a bad crowd, per-client limits, security (issue 19, items 5 and 6) -------------------------------------------
LIMIT_FIELDS = ("rate_limit_rps", "rate_limit_burst", "max_streams_per_client", "stream_idle_timeout_s")


def ws_url(url: str, query: str = "") -> str:
    return url.replace("http", "ws") + "/v1/stream" + query


def until_closed(ws, seconds: float = 60) -> tuple[list[dict], int | None]:
    """Every message up to the server's close, and the close code."""
    from websockets.exceptions import ConnectionClosed

    got = []
    try:
        while True:
            got.append(json.loads(ws.recv(timeout=seconds)))
    except ConnectionClosed as closed:
        return got, closed.rcvd.code if closed.rcvd else None


def random_json(rng, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 10**30, 1.5e308, -0.0])
    if kind == 2:
        return rng.uniform(-1e6, 1e6)
    if kind == 3:
        return "".join(rng.choice('ab"\\\u00e9\u2603\x00{}[]') for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.randrange(-5, 20_000)
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(6))]
    keys = ["model", "layout", "window", "stride", "frames", "data", "x", "candidates"]  # never "end"
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def server_errors(text: str) -> float:
    return sum(metric(text, "actionllm_requests_total", status=str(code)) for code in range(500, 600))


def test_websocket_fuzz_bad_crowd(service, body):
    """Random JSON, a binary message, huge messages, too many frames, thousands of tiny messages and a client that
    never reads: every refusal is an error message, no stream ends with 1011 (internal error), memory stays bounded
    (the buffer never holds more than one window), and the service answers as before afterwards."""
    import random

    from websockets.sync.client import connect

    url, cfg = service
    payload, _ = body
    frame = payload["frames"][0]
    rng = random.Random(19)
    sent = Counter()
    # 1. random JSON (start messages included): each answered, never by a crash; 90 per stream (< 100 in a row)
    for _ in range(4):
        with connect(ws_url(url), additional_headers=AUTH, max_size=None) as ws:
            for _ in range(90):
                ws.send(json.dumps(random_json(rng)))
            sent["random"] += 90
            ws.send(json.dumps({"end": True}))
            got, code = until_closed(ws)
        assert code in (1000, None) and got, code
        assert {m["type"] for m in got} <= {"ready", "error", "window", "end"}
    # 2. a binary message, a message over max_body_bytes, too many frames, a window over max_frames: errors, the
    #    stream stays open and then works
    with connect(ws_url(url), additional_headers=AUTH, max_size=None) as ws:
        ws.send(json.dumps({"model": "streams", "window": cfg.max_frames + 1}))
        assert json.loads(ws.recv(timeout=60))["field"] == "window"
        ws.send(json.dumps({"model": "streams", "window": 10, "stride": 400}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        ws.send(b"\x80\x04garbage\xff" * 1000)
        ws.send(json.dumps({"frames": [frame] * ((cfg.max_body_bytes + 1) // len(json.dumps(frame)) + 1)}))
        ws.send(json.dumps({"frames": [frame] * (cfg.max_frames + 1)}))
        for _ in range(10):  # 1000 frames, stride 400 > window 10: windows at 0, 400, 800; no frame left behind
            ws.send(json.dumps({"frames": [frame] * 100}))
        ws.send(json.dumps({"end": True}))
        got, code = until_closed(ws)
        sent["binary"] += 1
        sent["huge"] += 2
    errors = [(m["error"], m["field"]) for m in got if m["type"] == "error"]
    assert errors == [("binary message", "message"), ("message too large", "message"), ("too many frames", "frames")]
    assert [(m["start"], m["end"]) for m in got if m["type"] == "window"] == [(0, 10), (400, 410), (800, 810)]
    assert got[-1] == {"type": "end", "windows": 3, "buffered": 0} and code == 1000
    # 3. thousands of tiny messages (one frame each) on a stream that never completes its last window: it holds
    #    fewer frames than the window
    with connect(ws_url(url), additional_headers=AUTH) as ws:
        ws.send(json.dumps({"model": "streams", "window": cfg.max_frames}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        tiny = json.dumps({"frames": [frame]})
        for _ in range(2 * cfg.max_frames + 123):
            ws.send(tiny)
        sent["tiny"] += 2 * cfg.max_frames + 123
        ws.send(json.dumps({"end": True}))
        got, code = until_closed(ws, 120)
    assert [m["type"] for m in got] == ["window", "window", "end"] and code == 1000
    assert got[-1]["buffered"] == 123 < cfg.max_frames
    # 4. a client that sends garbage and never reads: closed (1008) after 100 bad messages in a row
    from websockets.exceptions import ConnectionClosed

    with connect(ws_url(url), additional_headers=AUTH) as ws:
        try:
            for _ in range(150):
                ws.send("{not json")
                sent["garbage"] += 1
        except ConnectionClosed:  # the server closed first: the rest was not sent
            pass
        time.sleep(1)
        got, code = until_closed(ws)
    assert code == 1008 and len(got) == 100 and all(m["error"] == "malformed JSON" for m in got)
    # 5. a frame over the proxy's 16 MiB message limit: that connection is dropped, nothing else is
    with connect(ws_url(url), additional_headers=AUTH, max_size=None) as ws:
        with pytest.raises(ConnectionClosed):
            ws.send("[" + " " * (17 << 20) + "]")
            ws.recv(timeout=60)
        sent["huge"] += 1
    print("websocket fuzz messages:", dict(sent), "total", sum(sent.values()))
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert post(url, {**payload, "model": "alpha"}).status_code == 200
    assert server_errors(httpx.get(f"{url}/metrics", headers=AUTH).text) == 0  # schemathesis's cases included


def test_per_client_limits_answer_429(service):
    """The request rate (token bucket) and the open-stream count per client (here: the API key), set in place
    through the ingress's reconfigure (Serve's user_config), then put back."""
    from ray import serve
    from websockets.sync.client import connect

    url, cfg = service
    ingress = serve.get_deployment_handle("Ingress", app_name="actionllm")
    try:
        ingress.reconfigure.remote({"rate_limit_rps": 1, "rate_limit_burst": 3, "max_streams_per_client": 0,
                                    "stream_idle_timeout_s": 0}).result()
        answers = [httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30) for _ in range(6)]
        codes = [r.status_code for r in answers]
        assert codes[:3] == [200] * 3 and codes.count(429) >= 2, codes
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"] == "too many requests" and int(refused.headers["Retry-After"]) >= 1
        assert httpx.get(f"{url}/healthz").status_code == 200  # the health probe is never limited
        time.sleep(1.2)
        assert httpx.get(f"{url}/v1/models", headers=AUTH).status_code == 200  # a token came back
        ingress.reconfigure.remote({"rate_limit_rps": 0, "rate_limit_burst": 1, "max_streams_per_client": 2,
                                    "stream_idle_timeout_s": 1.5}).result()
        first, second = (connect(ws_url(url), additional_headers=AUTH) for _ in range(2))
        with connect(ws_url(url), additional_headers=AUTH) as third:
            got, code = until_closed(third)
        assert code == 1008 and got[0]["error"] == "too many streams" and got[0]["type"] == "error"
        first.close()
        time.sleep(0.5)
        with connect(ws_url(url), additional_headers=AUTH) as fourth:  # a closed stream frees its place
            fourth.send(json.dumps({"model": "beta"}))
            assert json.loads(fourth.recv(timeout=60))["type"] == "ready"
            fourth.send(json.dumps({"end": True}))
            assert until_closed(fourth)[1] == 1000
        got, code = until_closed(second)  # silent for 1.5 s: told, then closed
        assert code == 1000 and got == [{"type": "error", "error": "idle timeout", "field": None,
                                         "detail": "no message for 1.5 s"}]
        second.close()
    finally:
        ingress.reconfigure.remote({k: getattr(cfg, k) for k in LIMIT_FIELDS}).result()
    assert httpx.get(f"{url}/v1/models", headers=AUTH).status_code == 200


def test_a_pickle_in_a_request_is_refused_never_loaded(service, tmp_path):
    """A pickle whose unpickling would create a file, sent every way a request can carry bytes: each a 4xx (or a
    stream error), and the file never appears."""
    from websockets.sync.client import connect

    marker = tmp_path / "UNPICKLED"

    class Canary:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps(Canary())
    url, _ = service
    sends = [({"content": blob, "headers": {"content-type": t}}, code) for t, code in
             [("application/octet-stream", 415), ("application/python-pickle", 415), ("application/json", 400)]]
    sends.append(({"files": {"video": ("model.pkl", blob, "application/octet-stream")}}, 422))
    for kw, code in sends:
        r = httpx.post(f"{url}/v1/recognize", headers={**AUTH, **kw.pop("headers", {})}, timeout=60, **kw)
        assert r.status_code == code, (kw, r.text)
    with connect(ws_url(url), additional_headers=AUTH) as ws:
        ws.send(blob)
        got = json.loads(ws.recv(timeout=60))
    assert got["error"] == "binary message"
    assert not marker.exists()


def test_the_api_key_is_never_logged_nor_in_metrics(service, body, ray_local):
    """Requests with the key (header and `?api_key=`) and with a wrong key; then neither key nor its digest is in
    /metrics, nor in any of this Ray session's log files (Serve's access logs, the replicas' and proxy's logs)."""
    import uuid

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from services.api import key_digest

    url, _ = service
    payload, _ = body
    wrong = f"wrong-{uuid.uuid4().hex}"
    assert post(url, {**payload, "model": "alpha"}).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    with connect(ws_url(url, f"?api_key={KEY}")) as ws:
        ws.send(json.dumps({"model": "beta"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
    with pytest.raises(InvalidStatus, match="403"):  # refused before the handshake completes
        connect(ws_url(url, f"?api_key={wrong}"))
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert "actionllm_requests_total" in text
    secrets = [KEY.encode(), wrong.encode(), key_digest(KEY).encode()]
    assert not [s for s in secrets if s in text.encode()]
    time.sleep(1.0)  # log handlers flush
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    files = [f for f in logs.rglob("*") if f.is_file()]
    serve_logs = b"".join(f.read_bytes() for f in files if "serve" in f.parts)
    assert b"/v1/models" in serve_logs and b"401" in serve_logs  # the access logs were written and read here
    leaked = [f.name for f in files if any(s in f.read_bytes() for s in secrets)]
    assert leaked == []
