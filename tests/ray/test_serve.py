"""The Serve application on a real local Ray, over real HTTP on 127.0.0.1: answers, refusals, batching,
multiplexing with eviction, the WebSocket stream, autoscaling 1 -> 2 -> 1, an API key, and schemathesis."""

import json
import re
import subprocess
import sys
import threading
import time
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
    url, _ = service
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--checks",
         "not_a_server_error", "--max-examples", "40", "--header", f"Authorization: Bearer {KEY}",
         "--seed", "1", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    import xml.etree.ElementTree as ET

    suites = [ET.parse(f).getroot() for f in tmp_path.rglob("*.xml")]
    cases = [c for root in suites for c in root.iter("testcase")]
    assert len(cases) >= 4  # the operations of /openapi.json were exercised
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert "/v1/recognize" in " ".join(c.get("name", "") for c in cases)


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
