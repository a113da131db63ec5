"""Synthetic gait walker: the embedded demo dataset ("synth-gait", COCO-17, 2D pixels).

A STAND-IN FOR DEMOS AND TESTS ON A FRESH MACHINE. It is NOT clinical data, it was not fitted to or
validated against any patient recording, and nothing learned on it says anything about Parkinson's disease.
Real clinical gait data cannot be redistributed, so this module draws a kinematic stick walker whose
parameters caricature the parkinsonian gait signs commonly described in the literature (e.g. Morris et al.,
Brain 1994, "gait hypokinesia"; Mirelman et al., Lancet Neurol 2019; Deuschl et al., Mov Disord 1998 for the
4-6 Hz rest tremor). Each sign is one named `GaitParams` field:

- reduced arm swing ....................... arm_swing_deg (peak-to-peak shoulder swing)
- shorter steps / reduced stride length ... step_length (fraction of body height)
- stooped (flexed) trunk posture .......... trunk_flex_deg (forward tilt of hip-mid -> shoulder-mid)
- 4-6 Hz rest tremor at the wrists ........ tremor_hz, tremor_amp (fraction of body height; elbows 0.3x)
- lower cadence ........................... cadence_steps_per_min
- reduced knee flexion range in swing ..... knee_flex_deg

Simplification to keep in mind: the literature reports mainly slower speed through shorter strides, with
cadence often preserved or even raised (Morris 1994); the lower cadence here is a design choice of the demo.
Ranges overlap a little so the two classes are separable on average but not trivially per sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

from .layouts import COCO17
from .sequence import SkeletonSequence

CLASS_NAMES = ["normal", "parkinsonian"]
DATASET = "synth-gait"
IMAGE_W, IMAGE_H = 1920, 1080

# Segment lengths as fractions of body height (Winter's anthropometric proportions).
THIGH, SHANK, ANKLE_H = 0.245, 0.246, 0.039
TRUNK, NECK_HEAD, UPPER_ARM, FOREARM = 0.288, 0.11, 0.188, 0.145
HIP_HALF, SHOULDER_HALF = 0.095, 0.13  # lateral half-widths (left = +lat)

J = {name: i for i, name in enumerate(COCO17.joints)}

# Per-subject uniform ranges: (normal, parkinsonian). Edges overlap slightly on purpose.
_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "cadence_steps_per_min": ((98.0, 122.0), (80.0, 104.0)),
    "step_length": ((0.33, 0.42), (0.22, 0.34)),
    "arm_swing_deg": ((22.0, 40.0), (5.0, 18.0)),
    "trunk_flex_deg": ((0.0, 7.0), (6.0, 25.0)),
    "knee_flex_deg": ((52.0, 65.0), (40.0, 56.0)),
    "tremor_hz": ((0.0, 0.0), (4.0, 6.0)),
    "tremor_amp": ((0.0, 0.0), (0.004, 0.012)),
}


@dataclass
class GaitParams:
    cadence_steps_per_min: float = 110.0
    step_length: float = 0.38  # heel-to-heel step, in body heights
    arm_swing_deg: float = 32.0  # peak-to-peak shoulder flexion/extension
    trunk_flex_deg: float = 2.0  # forward tilt of the trunk from vertical
    tremor_hz: float = 0.0
    tremor_amp: float = 0.0  # wrist tremor displacement amplitude, in body heights
    knee_flex_deg: float = 60.0  # peak knee flexion in swing
    height_px: float = 320.0  # body height on the image
    tremor_left: float = 1.0  # left/right tremor ratio (tremor is often asymmetric)
    ground_y: float = 0.85 * IMAGE_H  # image row of the floor (side view)
    jitter_px: float = 1.0  # pose-estimator noise, Gaussian sigma

    @classmethod
    def sample(cls, kind: str, rng: np.random.Generator) -> GaitParams:
        """Draw one subject of class `kind` ("normal" or "parkinsonian")."""
        if kind not in CLASS_NAMES:
            raise ValueError(f"unknown gait kind {kind!r}; expected one of {CLASS_NAMES}")
        k = CLASS_NAMES.index(kind)
        vals = {name: float(rng.uniform(*r[k])) for name, r in _RANGES.items()}
        if k == 1 and rng.random() < 0.2:  # not every patient shows rest tremor
            vals["tremor_amp"] = 0.0
        return cls(**vals, height_px=float(rng.uniform(260, 360)), tremor_left=float(rng.uniform(0.3, 1.0)),
                   ground_y=float(rng.uniform(0.8, 0.9) * IMAGE_H))

    def vary(self, rng: np.random.Generator) -> GaitParams:
        """The same subject on another recording: small trial-to-trial variation."""
        u = rng.uniform
        return replace(
            self,
            cadence_steps_per_min=self.cadence_steps_per_min * u(0.97, 1.03),
            step_length=self.step_length * u(0.96, 1.04),
            arm_swing_deg=self.arm_swing_deg * u(0.85, 1.15),
            trunk_flex_deg=max(0.0, self.trunk_flex_deg + u(-1.5, 1.5)),
            knee_flex_deg=self.knee_flex_deg + u(-3.0, 3.0),
            tremor_hz=float(np.clip(self.tremor_hz + u(-0.2, 0.2), 4.0, 6.0)) if self.tremor_hz else 0.0,
            tremor_amp=self.tremor_amp * u(0.8, 1.2),
            height_px=self.height_px * u(0.95, 1.05),
            ground_y=self.ground_y + u(-15.0, 15.0),
        )


def _bump(phase: np.ndarray, centre: float, kappa: float) -> np.ndarray:
    """Periodic bump (von Mises shape): 1 at `centre` of the cycle, ~0 half a cycle away."""
    return np.exp(kappa * (np.cos(2 * np.pi * (phase - centre)) - 1.0))


def _rot(fwd, up, angle):
    """Tilt a (forward, up) offset forward by `angle` rad: the up vector (0, 1) goes to (sin a, cos a)."""
    return fwd * np.cos(angle) + up * np.sin(angle), -fwd * np.sin(angle) + up * np.cos(angle)


def _leg(p: GaitParams, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knee and ankle offsets (fwd, up) from the hip for one leg; phase 0 = heel strike (hip most flexed)."""
    # At heel strike the legs sit at +-amp, so the ankles are 2 * leg * sin(amp) = one step apart.
    amp = np.arcsin(np.clip(p.step_length / (2 * (THIGH + SHANK)), 0.0, 0.9))
    hip = amp * np.cos(2 * np.pi * phase)
    # Knee: big flexion peak in swing (~72% of the cycle) plus a small loading-response flexion (~12%).
    knee = np.radians(p.knee_flex_deg) * (_bump(phase, 0.72, 6.0) + 0.25 * _bump(phase, 0.12, 12.0))
    knee_pt = THIGH * np.stack([np.sin(hip), -np.cos(hip)], -1)
    ankle_pt = knee_pt + SHANK * np.stack([np.sin(hip - knee), -np.cos(hip - knee)], -1)
    return knee_pt, ankle_pt


def _arm(p: GaitParams, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elbow and wrist offsets (fwd, up) from the shoulder; `phase` is the opposite leg's phase."""
    swing = np.radians(p.arm_swing_deg / 2) * np.cos(2 * np.pi * phase)  # forward with the opposite leg
    shoulder = swing + np.radians(0.4 * p.trunk_flex_deg)  # stooped posture carries the arms forward
    elbow = np.radians(15.0) + 0.6 * np.clip(swing, 0.0, None)  # elbow bends more on the forward swing
    elbow_pt = UPPER_ARM * np.stack([np.sin(shoulder), -np.cos(shoulder)], -1)
    wrist_pt = elbow_pt + FOREARM * np.stack([np.sin(shoulder + elbow), -np.cos(shoulder + elbow)], -1)
    return elbow_pt, wrist_pt


def _body(p: GaitParams, phase: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """World joints [T, 17, 3] in body heights: (forward, up, lateral with left = +)."""
    world = np.zeros((len(phase), len(COCO17.joints), 3))
    legs = {"right": _leg(p, phase), "left": _leg(p, phase + 0.5)}  # opposite legs half a cycle apart
    # Pelvis height: the lower ankle touches the floor, so the pelvis bobs twice per cycle (once per stance).
    pelvis_up = ANKLE_H - np.minimum(legs["right"][1][:, 1], legs["left"][1][:, 1])
    trunk = np.radians(p.trunk_flex_deg) + np.radians(1.0) * np.cos(4 * np.pi * phase)
    sh_f, sh_u = _rot(0.0, TRUNK, trunk)  # hip-mid -> shoulder-mid, tilted forward by trunk_flex
    arms = {"right": _arm(p, phase + 0.5), "left": _arm(p, phase)}  # arm swings with the opposite leg
    for side, sign in (("left", 1.0), ("right", -1.0)):
        knee, ankle = legs[side]
        elbow, wrist = arms[side]
        hip = np.stack([fwd, pelvis_up], -1)
        shoulder = hip + np.stack([sh_f, sh_u], -1)
        for name, pt, half in (("hip", hip, HIP_HALF), ("knee", hip + knee, HIP_HALF),
                               ("ankle", hip + ankle, HIP_HALF), ("shoulder", shoulder, SHOULDER_HALF),
                               ("elbow", shoulder + elbow, SHOULDER_HALF + 0.01),
                               ("wrist", shoulder + wrist, SHOULDER_HALF + 0.02)):
            world[:, J[f"{side}_{name}"], :2] = pt
            world[:, J[f"{side}_{name}"], 2] = sign * half
    # Head: the neck tilts forward with the trunk (a bit more for a stooped posture).
    neck = trunk + np.radians(0.3 * p.trunk_flex_deg)
    head_f, head_u = fwd + sh_f + NECK_HEAD * np.sin(neck), pelvis_up + sh_u + NECK_HEAD * np.cos(neck)
    face = {"nose": (0.055, -0.01, 0.0), "left_eye": (0.04, 0.015, 0.03), "right_eye": (0.04, 0.015, -0.03),
            "left_ear": (-0.01, 0.005, 0.07), "right_ear": (-0.01, 0.005, -0.07)}
    for name, (f, u, lat) in face.items():
        df, du = _rot(f, u, neck)
        world[:, J[name]] = np.stack([head_f + df, head_u + du, np.full_like(fwd, lat)], -1)
    return world


def _tremor(p: GaitParams, t: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Rest-tremor displacement [T, 17, 3] (body heights) at the wrists, 0.3x at the elbows."""
    out = np.zeros((len(t), len(COCO17.joints), 3))
    if p.tremor_amp <= 0 or p.tremor_hz <= 0:
        return out
    for side, gain in (("right", 1.0), ("left", p.tremor_left)):
        drift = 0.1 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 2 * np.pi))  # frequency wanders +-0.1 Hz
        ph = 2 * np.pi * np.cumsum(p.tremor_hz + drift) / fps  # phase = 2 pi * integral of frequency dt
        wax = 1.0 + 0.3 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))  # amplitude waxes and wanes
        a = rng.uniform(0, np.pi)  # oscillation direction in the sagittal plane
        d = p.tremor_amp * gain * wax * np.sin(ph + rng.uniform(0, 2 * np.pi))
        for joint, k in (("wrist", 1.0), ("elbow", 0.3)):
            out[:, J[f"{side}_{joint}"], 0] += k * d * np.cos(a)
            out[:, J[f"{side}_{joint}"], 1] += k * d * np.sin(a)
    return out


def _project(world: np.ndarray, p: GaitParams, view: str, travel: float) -> np.ndarray:
    """World (body heights) -> image pixels [T, 17, 2], y pointing down."""
    fwd, up, lat = world[..., 0], world[..., 1], world[..., 2]
    h = p.height_px
    if view == "side":  # camera on the walker's right; the far (left) side shows slightly up and right
        x0 = IMAGE_W / 2 - h * travel / 2  # centre the walk across the frame
        return np.stack([x0 + h * (fwd + 0.1 * lat), p.ground_y - h * (up + 0.08 * lat)], -1)
    if view == "front":  # walking towards a camera 0.6 body heights up; pinhole scale grows as it nears
        dist = 4.0 + travel - fwd  # body heights to the camera
        scale = h * (4.0 + travel / 2) / dist  # = height_px mid-walk
        return np.stack([IMAGE_W / 2 + scale * lat, 0.45 * IMAGE_H + scale * (0.6 - up)], -1)
    raise ValueError(f"unknown view {view!r}; expected 'side' or 'front'")


def walk(params: GaitParams, seconds: float = 6.0, fps: float = 30.0, rng: np.random.Generator | None = None,
         view: str = "side") -> tuple[np.ndarray, np.ndarray]:
    """One walk: joints [T, 17, 2] float32 (pixels, y down) and scores [T, 17] float32."""
    rng = np.random.default_rng() if rng is None else rng
    t = np.arange(max(int(round(seconds * fps)), 1)) / fps
    stride_hz = params.cadence_steps_per_min / 120.0  # two steps per gait cycle (stride)
    phase = stride_hz * t + rng.uniform()  # gait-cycle phase in cycles
    speed = params.cadence_steps_per_min / 60.0 * params.step_length  # steps/s * step = body heights/s
    world = _body(params, phase, speed * t) + _tremor(params, t, fps, rng)
    joints = _project(world, params, view, travel=speed * t[-1])
    # Pose-estimator look: ~1 px Gaussian jitter, scores ~U(0.8, 1), ~1.5% low-confidence (and noisier) joints.
    scores = rng.uniform(0.8, 1.0, joints.shape[:2])
    low = rng.random(joints.shape[:2]) < 0.015
    scores[low] = rng.uniform(0.05, 0.4, int(low.sum()))
    sigma = params.jitter_px * np.where(low, 4.0, 1.0)[..., None]
    joints = joints + rng.normal(0.0, 1.0, joints.shape) * sigma
    return joints.astype(np.float32), scores.astype(np.float32)


def generate(subjects: int = 12, per_subject: int = 4, seconds: float = 6.0, fps: float = 30.0,
             seed: int = 0) -> Iterator[SkeletonSequence]:
    """The demo dataset: odd subjects normal, even subjects parkinsonian; deterministic per seed."""
    for subj in range(1, subjects + 1):
        label = (subj - 1) % 2
        base = GaitParams.sample(CLASS_NAMES[label], np.random.default_rng([seed, subj]))
        for rep in range(per_subject):
            rng = np.random.default_rng([seed, subj, rep + 1])
            params = base.vary(rng)
            joints, scores = walk(params, seconds, fps, rng, view="side")
            yield SkeletonSequence(
                sample_id=f"synth_s{subj:02d}_r{rep:02d}", layout="coco17", joints=joints, scores=scores,
                label=label, label_name=CLASS_NAMES[label], dataset=DATASET, subject=str(subj), view="side",
                fps=float(fps), meta={"gait_params": asdict(params)},
            )


def cross_subject(seq: SkeletonSequence) -> str:
    """Cross-subject split. Subjects alternate normal/PD, so `subject % 4 == 0` would put only PD in test;
    instead take k = (subject + 1) // 2, the subject's index within its class, and send k % 4 == 2 to test:
    a quarter of each class in the long run (subjects 3, 4, 11, 12 of the default 12), both classes always."""
    k = (int(seq.subject) + 1) // 2
    return "test" if k % 4 == 2 else "train"


PROTOCOLS = {"cross-subject": cross_subject}
