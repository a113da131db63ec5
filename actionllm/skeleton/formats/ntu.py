"""NTU RGB+D 60/120 ``.skeleton`` text files (Shahroudy et al. CVPR 2016; Liu et al. TPAMI 2019).

File names ``SsssCcccPpppRrrrAaaa.skeleton`` carry setup, camera, performer, replication and action.
Layout of a file: line 1 = frame count; per frame a body count b; per body a line of 10 values
(bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence handRightState isRestricted
leanX leanY trackingState), a joint-count line (25), then 25 lines of 12 values (x y z depthX depthY
colorX colorY orientationW..Z trackingState). We keep x y z (metres); the joint's trackingState gives
the score: 2 (tracked) -> 1.0, 1 (inferred) -> 0.5, 0 -> 0.

Bodies are grouped by bodyID across frames. At most ``max_bodies`` (option, default 2) are kept, ranked
by the number of frames they appear in, then by total motion (sum over consecutive appearances of the
joint displacement); output body m is the m-th ranked one, zeros/score 0 in frames where it is absent.
Option ``ignore_list``: a text file of sample names (the official "missing skeletons" list); those
files are yielded as ``Rejection`` without being parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sequence import SkeletonSequence
from .base import FormatError, Reader, Rejection, register_reader, subject_split

_N = """drink water|eat meal/snack|brushing teeth|brushing hair|drop|pickup|throw|sitting down|
standing up (from sitting position)|clapping|reading|writing|tear up paper|wear jacket|take off jacket|
wear a shoe|take off a shoe|wear on glasses|take off glasses|put on a hat/cap|take off a hat/cap|cheer up|
hand waving|kicking something|reach into pocket|hopping (one foot jumping)|jump up|
make a phone call/answer phone|playing with phone/tablet|typing on a keyboard|
pointing to something with finger|taking a selfie|check time (from watch)|rub two hands together|
nod head/bow|shake head|wipe face|salute|put the palms together|cross hands in front (say stop)|
sneeze/cough|staggering|falling|touch head (headache)|touch chest (stomachache/heart pain)|
touch back (backache)|touch neck (neckache)|nausea or vomiting condition|
use a fan (with hand or paper)/feeling warm|punching/slapping other person|kicking other person|
pushing other person|pat on back of other person|point finger at the other person|hugging other person|
giving something to other person|touch other person's pocket|handshaking|walking towards each other|
walking apart from each other|put on headphone|take off headphone|shoot at the basket|bounce ball|
tennis bat swing|juggling table tennis balls|hush (quite)|flick hair|thumb up|thumb down|make ok sign|
make victory sign|staple book|counting money|cutting nails|cutting paper (using scissors)|
snapping fingers|open bottle|sniff (smell)|squat down|toss a coin|fold paper|ball up paper|
play magic cube|apply cream on face|apply cream on hand back|put on bag|take off bag|
put something into a bag|take something out of a bag|open a box|move heavy objects|shake fist|
throw up cap/hat|hands up (both hands)|cross arms|arm circles|arm swings|running on the spot|
butt kicks (kick backward)|cross toe touch|side kick|yawn|stretch oneself|blow nose|
hit other person with something|wield knife towards other person|knock over other person (hit with body)|
grab other person's stuff|shoot at other person with a gun|step on foot|high-five|cheers and drink|
carry something with other person|take a photo of other person|follow other person|
whisper in other person's ear|exchange things with other person|support somebody with hand|
finger-guessing game (playing rock-paper-scissors)"""
NTU120_NAMES = tuple(n.strip() for n in _N.replace("\n", "").split("|"))  # index = A - 1 (the README's list)
assert len(NTU120_NAMES) == 120

NTU60_TRAIN_SUBJECTS = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS | {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78,
                                                 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98,
                                                 100, 103}
NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})", re.IGNORECASE)
SCORE = {0: 0.0, 1: 0.5, 2: 1.0}
NUM_JOINTS = 25


def parse_name(stem: str) -> tuple[int, int, int, int, int] | None:
    """(setup, camera, performer, replication, action) of an NTU sample name, or None."""
    m = NAME_RE.search(stem)
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def cross_view(seq: SkeletonSequence) -> str:
    return "train" if int(seq.view) in (2, 3) else "test"


def cross_setup(seq: SkeletonSequence) -> str:
    """NTU-120 cross-setup: even setup ids train."""
    return "train" if int(seq.meta["setup"]) % 2 == 0 else "test"


class _Lines:
    """Line cursor over a text file whose errors name the file and the 1-based line."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise FormatError(path, f"cannot read: {e}") from None
        self.i = 0

    def numbers(self, count: int, what: str, cast=float) -> list:
        if self.i >= len(self.lines):
            raise FormatError(self.path, f"unexpected end of file: expected {what}", line=self.i + 1)
        self.i += 1
        parts = self.lines[self.i - 1].split()
        if len(parts) != count:
            raise FormatError(self.path, f"expected {count} value(s) for {what}, found {len(parts)}", line=self.i)
        try:
            return [cast(p) for p in parts]
        except ValueError:
            raise FormatError(self.path, f"not a number in {what}: {' '.join(parts)!r}", line=self.i) from None


def parse_skeleton(path: Path) -> tuple[int, dict[str, dict[int, np.ndarray]]]:
    """Frame count and {bodyID: {frame: float64 [25, 4] (x, y, z, score)}}."""
    cur = _Lines(path)
    (frames,) = cur.numbers(1, "the frame count", int)
    bodies: dict[str, dict[int, np.ndarray]] = {}
    for t in range(frames):
        (count,) = cur.numbers(1, f"the body count of frame {t + 1}", int)
        for _ in range(count):
            body_line = cur.i + 1
            cur.numbers(10, "a body info line")
            body_id = cur.lines[cur.i - 1].split()[0]
            (nj,) = cur.numbers(1, "the joint count", int)
            if nj != NUM_JOINTS:
                raise FormatError(path, f"body has {nj} joints, expected {NUM_JOINTS}", line=cur.i)
            arr = np.array([cur.numbers(12, "a joint line") for _ in range(NUM_JOINTS)])
            state = arr[:, 11].astype(int)
            if not np.isin(state, list(SCORE)).all():
                raise FormatError(path, f"joint trackingState outside 0..2: {sorted(set(state))}", line=cur.i)
            if t in bodies.setdefault(body_id, {}):
                raise FormatError(path, f"body {body_id} appears twice in frame {t + 1}", line=body_line)
            bodies[body_id][t] = np.column_stack([arr[:, :3], [SCORE[s] for s in state]])
    return frames, bodies


def motion(frames: dict[int, np.ndarray]) -> float:
    ts = sorted(frames)
    steps = zip(ts[:-1], ts[1:], strict=True)
    return float(sum(np.linalg.norm(frames[b][:, :3] - frames[a][:, :3], axis=1).sum() for a, b in steps))


@register_reader
class NTUReader(Reader):
    name = "ntu"
    description = "NTU RGB+D 60/120 .skeleton text files (25 Kinect v2 joints, 3D, up to 2 bodies)"
    layout = "ntu25"

    def __init__(self, input_path, **options):
        super().__init__(input_path, **options)
        self.max_bodies = int(options.get("max_bodies", 2))
        self.ignored: set[str] = set()
        if options.get("ignore_list"):
            text = Path(options["ignore_list"]).read_text()
            self.ignored = {ln.strip().removesuffix(".skeleton") for ln in text.splitlines()
                            if ln.strip() and not ln.lstrip().startswith("#")}

    def files(self) -> list[Path]:
        if not hasattr(self, "_files"):
            self._files = [self.input] if self.input.is_file() else sorted(self.input.rglob("*.skeleton"))
        return self._files

    @property
    def class_names(self) -> list[str]:
        """The 60 NTU-60 names, or all 120 when any file has an action id above 60."""
        ids = [p[4] for p in (parse_name(f.stem) for f in self.files()) if p]
        return list(NTU120_NAMES[: 120 if ids and max(ids) > 60 else 60])

    @property
    def protocols(self):
        return {"cross-subject": subject_split(NTU60_TRAIN_SUBJECTS), "cross-view": cross_view,
                "cross-subject-120": subject_split(NTU120_TRAIN_SUBJECTS), "cross-setup": cross_setup}

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        path = Path(path)
        ids = parse_name(path.stem)
        if ids is None:
            raise FormatError(path, "file name is not of the form SsssCcccPpppRrrrAaaa.skeleton")
        if path.stem in self.ignored:
            yield Rejection(path.stem, str(path), "listed in the ignore file")
            return
        setup, camera, performer, replication, action = ids
        if not 1 <= action <= 120:
            raise FormatError(path, f"action A{action:03d} outside 1..120")
        frames, bodies = parse_skeleton(path)
        ranked = sorted(bodies.values(), key=lambda b: (-len(b), -motion(b)))[: self.max_bodies]
        data = np.zeros((max(1, len(ranked)), frames, NUM_JOINTS, 4), dtype=np.float32)
        for m, body in enumerate(ranked):
            for t, arr in body.items():
                data[m, t] = arr
        yield SkeletonSequence(
            sample_id=path.stem, layout=self.layout, joints=data[..., :3], scores=data[..., 3],
            label=action - 1, label_name=NTU120_NAMES[action - 1], dataset=self.name,
            subject=str(performer), view=str(camera), fps=30.0,
            meta={"source": str(path), "setup": setup, "replication": replication},
        )
