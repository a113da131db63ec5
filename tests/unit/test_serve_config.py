"""Serving config and request validation without a cluster: deploy/serve.yaml, the CLI's config sources,
and the refusals of services/schemas.py."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from services.launch import serve_config
from services.schemas import ApiError, ModelInfo, RecognizeRequest, request_sequence

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelInfo(name="m", recipe="joints-llm", layout="coco17", dims=2, window=12, stride=6, classes=["a", "b"],
                  joint_names=[], bones=[])


def test_deploy_yaml_and_training_config_are_serve_configs(tiny_recognizers, tmp_path):
    conf = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    conf["applications"][0]["args"]["models"][0]["path"] = str(tiny_recognizers["alpha"])
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(conf))
    cfg = serve_config([], path, max_replicas=3, max_models=2)
    assert cfg.models[0].name == "demo" and cfg.autoscaling.max_replicas == 3 and cfg.max_models_per_replica == 2
    assert cfg.autoscaling.min_replicas == conf["applications"][0]["args"]["autoscaling"]["min_replicas"]
    # a training config (tune's best.yaml) serves the recognizer it trained
    run = tmp_path / "best-run"
    run.mkdir()
    (run / "recognizer").symlink_to(tiny_recognizers["beta"], target_is_directory=True)
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"recipe": "joints-llm", "recipe_config": {}, "output": str(run)}))
    assert serve_config([], best).models[0].name == "best-run"
    with pytest.raises(ValueError, match="min_replicas 3 > max_replicas 2"):
        serve_config([str(tiny_recognizers["alpha"])], None, min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="unique"):
        serve_config([f"x={tiny_recognizers['alpha']}", f"x={tiny_recognizers['beta']}"])


@pytest.mark.parametrize("body, field", [
    ({"frames": [[[1.0, 2.0]] * 16]}, "frames[0]"),
    ({"frames": [[[1.0, 2.0]] * 17, [[1.0, 2.0]] * 16]}, "frames[1]"),
    ({"frames": [[[1.0, 2.0, 3.0]] * 17]}, "frames[0][0]"),  # 3D for a 2D model
    ({"frames": []}, "frames"),
    ({"model": "k", "frames": [[[1.0, 2.0]] * 17]}, "layout"),  # coco17 frames for a kinect20 model
    ({"format": "coco-keypoints"}, "data"),
    ({"format": "openpose", "data": [{"people": [{"pose_keypoints_2d": [1.0] * 7}]}]}, "data"),
    ({"format": "openpose", "data": []}, "data"),
])
def test_request_refusals_name_the_field(body, field):
    model = MODEL.model_copy(update={"name": "k", "layout": "kinect20", "dims": 3}) if body.get("model") else MODEL
    body = {**body, "layout": "coco17"} if body.get("model") else body
    with pytest.raises(ApiError) as err:
        request_sequence(RecognizeRequest.model_validate(body), model, max_frames=100)
    assert err.value.status == 422 and err.value.field == field and err.value.detail


def test_openpose_body25_maps_to_a_coco_model():
    frames = [{"people": [{"pose_keypoints_2d": list(np.arange(75, dtype=float) / 75 + 0.1)}]}] * 3
    seq = request_sequence(RecognizeRequest(format="openpose", data=frames), MODEL, max_frames=100)
    assert seq.layout == "coco17" and seq.num_frames == 3 and seq.dims == 2


LIMITS = ("rate_limit_rps", "rate_limit_burst", "max_streams_per_client", "stream_idle_timeout_s")


def test_per_client_limits_defaults_yaml_flags_and_refusals(tiny_recognizers, tmp_path):
    """The limits' defaults are those of services/limits.py, deploy/serve.yaml and the RayService say the same,
    flags override them, nonsense is refused, and build_app hands them to the ingress as its user_config."""
    from services.app import ServeConfig, build_app
    from services.limits import LimitSettings

    alpha = str(tiny_recognizers["alpha"])
    cfg = serve_config([alpha])
    defaults = LimitSettings()
    assert {k: getattr(cfg, k) for k in LIMITS} == {k: getattr(defaults, k) for k in LIMITS}
    assert (cfg.rate_limit_rps, cfg.rate_limit_burst, cfg.max_streams_per_client) == (200, 400, 8)
    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    for doc in (yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text()),
                yaml.safe_load(service["spec"]["serveConfigV2"])):
        args = doc["applications"][0]["args"]
        assert {k: args[k] for k in LIMITS} == {k: getattr(defaults, k) for k in LIMITS}
    cfg = serve_config([alpha], rate_limit_rps=0, rate_limit_burst=5, max_streams_per_client=1,
                       stream_idle_timeout_s=2.5)
    assert (cfg.rate_limit_rps, cfg.rate_limit_burst, cfg.max_streams_per_client, cfg.stream_idle_timeout_s) == (
        0, 5, 1, 2.5)
    for bad in ({"rate_limit_rps": -1}, {"rate_limit_burst": 0}, {"max_streams_per_client": -2},
                {"stream_idle_timeout_s": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeConfig.model_validate({"models": [{"name": "a", "path": alpha}], **bad})
    app = build_app(cfg)
    ingress = app._bound_deployment  # the application's ingress deployment, with its options
    assert ingress.name == "Ingress"
    assert ingress.user_config == {"rate_limit_rps": 0, "rate_limit_burst": 5,
                                                       "max_streams_per_client": 1, "stream_idle_timeout_s": 2.5}


def test_serve_cli_has_the_limit_flags():
    from typer.testing import CliRunner

    from cli.common import app

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--rate-limit", "--rate-burst", "--max-streams", "--stream-idle-s"):
        assert flag in out


MALLINFO = """
import ctypes, sys
sys.path.insert(0, {root!r})
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if {fix}:
    from services.deployments import fix_malloc_thresholds
    assert fix_malloc_thresholds()
libc.free(libc.malloc(24 << 20))  # glibc's default raises its mmap threshold to 24 MiB here
block = libc.malloc(16 << 20)
print(libc.mallinfo2().hblkhd >= 16 << 20)  # is the 16 MiB block mmapped (given back to the system when freed)?
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_recognizer_replica_keeps_a_fixed_mmap_threshold():
    """services.deployments.fix_malloc_thresholds (called first in a recognizer replica): after a large block is
    freed, glibc's default keeps the next large block in the heap; with the fixed threshold it is still mmapped."""
    import subprocess
    import sys

    def mmapped(fix: bool) -> str:
        code = MALLINFO.format(root=str(ROOT), fix=fix)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    assert mmapped(False) == "False" and mmapped(True) == "True"
