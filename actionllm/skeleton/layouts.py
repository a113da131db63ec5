"""Joint layouts: ordered joint names, bones, left/right pairs and face joints, and a registry.

A layout is pure data. Every reader yields sequences in a registered layout (reordering the source's
joints by name when its order differs), so everything downstream indexes joints by name, never by a
dataset's private numbering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[str, str], ...]
    face: frozenset[str] = field(default_factory=frozenset)
    description: str = ""

    def __post_init__(self) -> None:
        known = set(self.joints)
        if len(known) != len(self.joints):
            raise ValueError(f"layout {self.name!r}: duplicate joint names")
        for a, b in self.bones:
            if a not in known or b not in known:
                raise ValueError(f"layout {self.name!r}: bone ({a}, {b}) names an unknown joint")
        if not self.face <= known:
            raise ValueError(f"layout {self.name!r}: face joints {sorted(self.face - known)} unknown")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        try:
            return self.joints.index(joint)
        except ValueError:
            raise KeyError(f"layout {self.name!r} has no joint {joint!r}; it has {list(self.joints)}") from None

    def indices(self, joints: list[str] | tuple[str, ...]) -> list[int]:
        return [self.index(j) for j in joints]

    @property
    def left_right(self) -> tuple[tuple[str, str], ...]:
        """Pairs (left_x, right_x) found by name: what a horizontal flip swaps."""
        pairs = []
        for j in self.joints:
            if j.startswith("left_") and ("right_" + j[5:]) in self.joints:
                pairs.append((j, "right_" + j[5:]))
        return tuple(pairs)

    def flip_permutation(self) -> np.ndarray:
        """Index permutation that swaps every left joint with its right twin."""
        perm = np.arange(self.num_joints)
        for left, right in self.left_right:
            i, k = self.index(left), self.index(right)
            perm[i], perm[k] = k, i
        return perm

    @property
    def bone_index(self) -> np.ndarray:
        """Bones as an int array [E, 2] of joint indices (for graph builders)."""
        return np.array([(self.index(a), self.index(b)) for a, b in self.bones], dtype=np.int64).reshape(-1, 2)


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown layout {name!r}; registered: {sorted(LAYOUTS)}") from None


def _limbs(prefix_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mirror a list of limb bones written for the left side onto the right side."""
    out = []
    for a, b in prefix_pairs:
        out.append((a, b))
        out.append((a.replace("left_", "right_"), b.replace("left_", "right_")))
    return out


_FACE5 = frozenset({"nose", "left_eye", "right_eye", "left_ear", "right_ear"})

COCO17 = register_layout(Layout(
    name="coco17",
    joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
            "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
            "left_knee", "right_knee", "left_ankle", "right_ankle"),
    # PYSKL's coco graph (a tree: shoulders hang from the nose; no shoulder-shoulder or hip-hip edge)
    bones=(("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
           ("nose", "left_shoulder"), ("nose", "right_shoulder"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_shoulder", "left_hip"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle")])),
    face=_FACE5,
    description="COCO keypoints (17), 2D image coordinates; MMPose/PYSKL/HRNet order",
))

# Kinect v1 SDK order (NUI_SKELETON_POSITION_INDEX): UTKinect and NW-UCLA store it as is; the MSR Action3D
# and UTD-MHAD readers reorder their files' own orders into it by joint name.
KINECT20 = register_layout(Layout(
    name="kinect20",
    joints=("hip_center", "spine", "shoulder_center", "head",
            "left_shoulder", "left_elbow", "left_wrist", "left_hand",
            "right_shoulder", "right_elbow", "right_wrist", "right_hand",
            "left_hip", "left_knee", "left_ankle", "left_foot",
            "right_hip", "right_knee", "right_ankle", "right_foot"),
    bones=(("hip_center", "spine"), ("spine", "shoulder_center"), ("shoulder_center", "head"),
           ("shoulder_center", "left_shoulder"), ("shoulder_center", "right_shoulder"),
           ("hip_center", "left_hip"), ("hip_center", "right_hip"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_wrist", "left_hand"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_foot")])),
    face=frozenset(),
    description="Kinect v1 (20 joints, 3D metres), SDK order: MSR Action3D, UTKinect, UTD-MHAD, NW-UCLA",
))

# Kinect v2 as NTU RGB+D stores it (1-based joint ids 1..25 in the dataset's README).
NTU25 = register_layout(Layout(
    name="ntu25",
    joints=("spine_base", "spine_mid", "neck", "head",
            "left_shoulder", "left_elbow", "left_wrist", "left_hand",
            "right_shoulder", "right_elbow", "right_wrist", "right_hand",
            "left_hip", "left_knee", "left_ankle", "left_foot",
            "right_hip", "right_knee", "right_ankle", "right_foot",
            "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb"),
    bones=(("spine_base", "spine_mid"), ("spine_mid", "spine_shoulder"), ("spine_shoulder", "neck"),
           ("neck", "head"), ("spine_shoulder", "left_shoulder"), ("spine_shoulder", "right_shoulder"),
           ("spine_base", "left_hip"), ("spine_base", "right_hip"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_wrist", "left_hand"),
                    ("left_hand", "left_hand_tip"), ("left_wrist", "left_thumb"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_foot")])),
    face=frozenset(),
    description="Kinect v2 (25 joints, 3D metres), NTU RGB+D 60/120 order",
))

# Florence 3D order, checked against the dataset's body_model.mat (hip indices 10/13, bones 3-2, 2-1, ...).
FLORENCE15 = register_layout(Layout(
    name="florence15",
    joints=("head", "neck", "spine", "left_shoulder", "left_elbow", "left_wrist",
            "right_shoulder", "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle",
            "right_hip", "right_knee", "right_ankle"),
    bones=(("head", "neck"), ("neck", "spine"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
           ("spine", "left_hip"), ("spine", "right_hip"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle")])),
    face=frozenset(),
    description="Florence 3D Actions (15 joints, 3D metres)",
))

# JHMDB puppet order (JHMDB README: neck, belly, face, R/L shoulder, R/L hip, R/L elbow, R/L knee, R/L wrist,
# R/L ankle). Left/right not verified on the data (see the staging notes).
JHMDB15 = register_layout(Layout(
    name="jhmdb15",
    joints=("neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
            "right_elbow", "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist",
            "right_ankle", "left_ankle"),
    bones=(("neck", "face"), ("neck", "belly"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
           ("belly", "left_hip"), ("belly", "right_hip"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle")])),
    face=frozenset({"face"}),
    description="JHMDB puppet joints (15, 2D)",
))

HALPE26 = register_layout(Layout(
    name="halpe26",
    joints=(*COCO17.joints, "head", "neck", "hip", "left_big_toe", "right_big_toe",
            "left_small_toe", "right_small_toe", "left_heel", "right_heel"),
    bones=(("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
           ("head", "neck"), ("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
           ("neck", "hip"), ("hip", "left_hip"), ("hip", "right_hip"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_hip", "left_knee"),
                    ("left_knee", "left_ankle"), ("left_ankle", "left_big_toe"), ("left_ankle", "left_small_toe"),
                    ("left_ankle", "left_heel")])),
    face=_FACE5,
    description="Halpe full-body 26 (AlphaPose), 2D",
))

OPENPOSE18 = register_layout(Layout(
    name="openpose18",
    joints=("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
            "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
            "right_eye", "left_eye", "right_ear", "left_ear"),
    bones=(("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"), ("neck", "left_hip"),
           ("neck", "right_hip"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
           ("right_eye", "right_ear"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
                    ("left_hip", "left_knee"), ("left_knee", "left_ankle")])),
    face=_FACE5,
    description="OpenPose COCO-18 body model, 2D (ST-GCN's Kinetics-skeleton order)",
))

BODY25 = register_layout(Layout(
    name="body25",
    joints=("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
            "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
            "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
            "left_heel", "right_big_toe", "right_small_toe", "right_heel"),
    bones=(("nose", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"), ("neck", "mid_hip"),
           ("mid_hip", "left_hip"), ("mid_hip", "right_hip"), ("nose", "left_eye"), ("nose", "right_eye"),
           ("left_eye", "left_ear"), ("right_eye", "right_ear"),
           *_limbs([("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_hip", "left_knee"),
                    ("left_knee", "left_ankle"), ("left_ankle", "left_big_toe"), ("left_ankle", "left_small_toe"),
                    ("left_ankle", "left_heel")])),
    face=_FACE5,
    description="OpenPose BODY_25 (the OpenPose default), 2D",
))


# --- mapping to coco17 --------------------------------------------------------------------------------------
# The 12 limb joints carry the same name in every layout. COCO's nose has no Kinect/Florence twin: the head
# joint (Kinect, Florence) or the face joint (JHMDB) stands in for it -- a substitution of one measured point
# for another, recorded in `coco17_mapping`, never an invented coordinate. Eyes and ears stay missing (score 0).
COCO17_STAND_INS: dict[str, tuple[str, ...]] = {"nose": ("nose", "face", "head")}


def coco17_mapping(layout: Layout | str) -> dict[str, str | None]:
    """For each coco17 joint, the source joint that fills it (None = missing, written with score 0)."""
    layout = get_layout(layout) if isinstance(layout, str) else layout
    mapping: dict[str, str | None] = {}
    for joint in COCO17.joints:
        candidates = COCO17_STAND_INS.get(joint, (joint,))
        mapping[joint] = next((c for c in candidates if c in layout.joints), None)
    return mapping


def derived_layout(base: Layout | str, joints: list[str] | tuple[str, ...], name: str | None = None,
                   extra_bones: tuple[tuple[str, str], ...] = ()) -> Layout:
    """A registered layout made of some joints of `base` (plus virtual ones), e.g. COCO-17 minus the face
    plus the body centre. Bones are the base bones among the kept joints plus `extra_bones`. Registering the
    same name twice with the same joints returns the existing layout."""
    base = get_layout(base) if isinstance(base, str) else base
    joints = tuple(joints)
    name = name or f"{base.name}[{','.join(joints)}]"
    if name in LAYOUTS:
        if LAYOUTS[name].joints != joints:
            raise ValueError(f"layout {name!r} is registered with other joints")
        return LAYOUTS[name]
    keep = set(joints)
    bones = tuple((a, b) for a, b in base.bones if a in keep and b in keep) + tuple(extra_bones)
    return register_layout(Layout(name=name, joints=joints, bones=bones, face=base.face & keep,
                                  description=f"derived from {base.name}"))
