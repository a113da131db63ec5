"""Synthetic gait walker: determinism, shapes, split protocol, and class separation measured on the joints."""

from __future__ import annotations

import numpy as np
import pytest

from actionllm.skeleton.layouts import COCO17
from actionllm.skeleton.synth_gait import (
    CLASS_NAMES,
    PROTOCOLS,
    GaitParams,
    cross_subject,
    generate,
    walk,
)

J = {name: i for i, name in enumerate(COCO17.joints)}


@pytest.fixture(scope="module")
def dataset():
    return list(generate(subjects=12, per_subject=3, seed=0))


# --- features measured from the joints only ------------------------------------------------------------
def _peak_hz(x: np.ndarray, fps: float, lo: float, hi: float) -> float:
    """Frequency of the largest spectral peak in [lo, hi] Hz (Hann window, zero-padded FFT)."""
    x = (x - x.mean()) * np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x, n=8192))
    freqs = np.fft.rfftfreq(8192, 1.0 / fps)
    band = (freqs >= lo) & (freqs <= hi)
    return float(freqs[band][np.argmax(spec[band])])


def arm_swing_px(j: np.ndarray, h: float) -> float:
    """Wrist horizontal excursion relative to its shoulder (5-95 percentile), in body heights."""
    out = []
    for side in ("left", "right"):
        rel = j[:, J[f"{side}_wrist"], 0] - j[:, J[f"{side}_shoulder"], 0]
        out.append(np.percentile(rel, 95) - np.percentile(rel, 5))
    return float(np.mean(out)) / h


def cadence(j: np.ndarray, fps: float) -> float:
    """Steps/min from the left-minus-right ankle x, which oscillates once per stride (two steps)."""
    return 120.0 * _peak_hz(j[:, J["left_ankle"], 0] - j[:, J["right_ankle"], 0], fps, 0.4, 1.5)


def trunk_deg(j: np.ndarray) -> float:
    """Mean angle of hip-mid -> shoulder-mid from vertical (image y down; + = leaning in walking direction)."""
    hip = j[:, [J["left_hip"], J["right_hip"]]].mean(1)
    sh = j[:, [J["left_shoulder"], J["right_shoulder"]]].mean(1)
    v = sh - hip
    return float(np.degrees(np.arctan2(v[:, 0], -v[:, 1])).mean())


def tremor_power(j: np.ndarray, fps: float) -> float:
    """Mean 4-6 Hz spectral power of the wrists relative to their shoulders (walking motion is < 3 Hz)."""
    total = 0.0
    for side in ("left", "right"):
        rel = j[:, J[f"{side}_wrist"]] - j[:, J[f"{side}_shoulder"]]
        for c in range(2):
            x = rel[:, c] - np.polyval(np.polyfit(np.arange(len(rel)), rel[:, c], 1), np.arange(len(rel)))
            spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2 / len(x)
            freqs = np.fft.rfftfreq(len(x), 1.0 / fps)
            total += spec[(freqs >= 4.0) & (freqs <= 6.0)].mean()
    return float(total)


def class_means(dataset) -> dict[str, tuple[float, float]]:
    feats = {"arm": [], "cadence": [], "trunk": [], "tremor": []}
    labels = []
    for s in dataset:
        j = s.joints[0]
        h = s.meta["gait_params"]["height_px"]
        feats["arm"].append(arm_swing_px(j, h))
        feats["cadence"].append(cadence(j, s.fps))
        feats["trunk"].append(trunk_deg(j))
        feats["tremor"].append(tremor_power(j, s.fps))
        labels.append(s.label)
    labels = np.array(labels)
    return {k: (float(np.mean(np.array(v)[labels == 0])), float(np.mean(np.array(v)[labels == 1])))
            for k, v in feats.items()}


# --- tests -------------------------------------------------------------------------------------------
def test_shapes_dtype_layout(dataset):
    assert len(dataset) == 36
    for s in dataset:
        assert s.layout == "coco17" and s.dataset == "synth-gait" and s.view == "side"
        assert s.joints.shape == (1, 180, 17, 2) and s.joints.dtype == np.float32
        assert s.scores.shape == (1, 180, 17) and s.scores.dtype == np.float32
        assert np.isfinite(s.joints).all() and np.isfinite(s.scores).all()
        assert s.problem() is None
        assert ((s.scores > 0) & (s.scores <= 1)).all()
        assert s.label_name == CLASS_NAMES[s.label]
        assert s.sample_id.startswith(f"synth_s{int(s.subject):02d}_r")
    assert len({s.sample_id for s in dataset}) == len(dataset)
    low = np.mean([(s.scores < 0.5).mean() for s in dataset])
    assert 0 < low < 0.02


def test_deterministic_per_seed(dataset):
    again = list(generate(subjects=12, per_subject=3, seed=0))
    assert all(a.equals(b) for a, b in zip(dataset, again, strict=True))
    other = list(generate(subjects=12, per_subject=3, seed=1))
    assert not np.array_equal(dataset[0].joints, other[0].joints)
    # A subject's data does not depend on how many subjects are generated.
    assert all(a.equals(b) for a, b in zip(list(generate(subjects=2, per_subject=3, seed=0)), dataset[:6], strict=True))


def test_subjects_alternate_classes(dataset):
    for s in dataset:
        assert s.label == (int(s.subject) - 1) % 2


def test_cross_subject_protocol(dataset):
    assert PROTOCOLS["cross-subject"] is cross_subject
    split = {"train": set(), "test": set()}
    classes = {"train": set(), "test": set()}
    for s in dataset:
        part = cross_subject(s)
        split[part].add(s.subject)
        classes[part].add(s.label)
    assert not split["train"] & split["test"]
    assert classes["train"] == {0, 1} and classes["test"] == {0, 1}
    assert split["test"] == {"3", "4", "11", "12"}


def test_head_above_ankles(dataset):
    for s in dataset:
        j = s.joints[0]
        ankles = j[:, [J["left_ankle"], J["right_ankle"]], 1].min(1)
        assert (j[:, J["nose"], 1] < ankles).all()
        assert (j[:, J["nose"], 1] < j[:, J["left_hip"], 1]).all()


def test_walks_across_frame(dataset):
    for s in dataset:
        hip_x = s.joints[0, :, J["left_hip"], 0]
        assert hip_x[-1] - hip_x[0] > 0.5 * s.meta["gait_params"]["height_px"]


def test_measured_features_separate_classes(dataset):
    m = class_means(dataset)
    assert m["arm"][1] < 0.6 * m["arm"][0]  # reduced arm swing
    assert m["cadence"][1] < m["cadence"][0] - 8  # lower cadence (steps/min)
    assert m["trunk"][1] > m["trunk"][0] + 5  # more flexed trunk (degrees)
    assert m["tremor"][1] > 2 * m["tremor"][0]  # 4-6 Hz wrist power (normal: jitter only; ~20% of PD lack tremor)


def test_measured_cadence_matches_parameter():
    p = GaitParams(cadence_steps_per_min=96.0, jitter_px=0.0)
    j, _ = walk(p, seconds=10.0, fps=30.0, rng=np.random.default_rng(0))
    assert cadence(j, 30.0) == pytest.approx(96.0, abs=3.0)


def test_front_view_and_bad_inputs():
    j, s = walk(GaitParams(), seconds=2.0, fps=25.0, rng=np.random.default_rng(0), view="front")
    assert j.shape == (50, 17, 2) and s.shape == (50, 17) and np.isfinite(j).all()
    with pytest.raises(ValueError):
        walk(GaitParams(), seconds=1.0, rng=np.random.default_rng(0), view="top")
    with pytest.raises(ValueError):
        GaitParams.sample("ataxic", np.random.default_rng(0))


if __name__ == "__main__":  # print the measured class means (normal, parkinsonian)
    for k, v in class_means(list(generate(subjects=12, per_subject=3, seed=0))).items():
        print(f"{k:8s} normal={v[0]:.3f} parkinsonian={v[1]:.3f}")
