"""The reader contract every source format implements, and the format registry.

A reader lists its source files and turns one file into sequences. Two kinds of trouble, kept apart:

* a *rejection*: the file is well-formed but a sequence in it is unusable (all zeros, NaN bounds, one frame).
  The reader yields `Rejection(sample_id, source, reason)`; `prepare` records it in the manifest.
* a *malformed file* (truncated, garbled, wrong shape): the reader raises `FormatError(path, line, detail)`.
  `prepare` stops with that message, or records it as a rejection under `--skip-bad`.

Content checks that apply to every format (too short, non-finite, all-zero) live in
`SkeletonSequence.problem()` and are applied by `prepare`, so readers yield what the file holds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..sequence import SkeletonSequence


class FormatError(ValueError):
    """A source file that cannot be parsed; names the file and, where known, the line."""

    def __init__(self, path: str | Path, detail: str, line: int | None = None):
        self.path, self.detail, self.line = str(path), detail, line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class Rejection:
    sample_id: str
    source: str
    reason: str


# A protocol assigns each sequence to "train" or "test" (prepare carves "val" out of train).
Protocol = Callable[[SkeletonSequence], str]


class Reader:
    """Base class. Subclasses set the class attributes and implement `files` and `read_file`."""

    name: str = ""  # the --format value
    description: str = ""
    layout: str = ""  # the layout its sequences are in
    trusted_pickle: bool = False  # True when reading runs pickle.load on the user's files
    preferred_protocol: str | None = None  # the default split protocol, when not cross-subject / the first one

    def __init__(self, input_path: str | Path, **options):
        self.input = Path(input_path)
        if not self.input.exists():
            raise FileNotFoundError(f"{self.name}: input {self.input} does not exist")
        self.options = options
        self.notes: list[str] = []  # what the user should know about the conversion (recorded in manifest.json)

    # --- what subclasses provide -----------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The source files, sorted, so that conversion is deterministic."""
        raise NotImplementedError

    def read_file(self, path: Path) -> Iterator[SkeletonSequence | Rejection]:
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        """Class names by label index ([] when the source carries none)."""
        return []

    @property
    def protocols(self) -> dict[str, Protocol]:
        """Split protocols this source supports, by name."""
        return {}

    # --- shared helpers ----------------------------------------------------------------------------------
    def data_dir(self, subfolder: str) -> tuple[Path, Path]:
        """(folder holding the files, dataset root): the input is the dataset folder (with `subfolder`
        inside) or the subfolder itself."""
        sub = self.input / subfolder
        return (sub, self.input) if sub.is_dir() else (self.input, self.input.parent)

    def __iter__(self) -> Iterator[SkeletonSequence | Rejection]:
        for path in self.files():
            yield from self.read_file(path)

    def default_protocol(self) -> str:
        """The protocol `prepare` uses when none is named: the reader's `preferred_protocol`, else
        'cross-subject' where offered (the usual one), else the first the reader offers."""
        offered = list(self.protocols)
        if not offered:
            raise ValueError(f"format {self.name!r} offers no split protocol")
        for name in (self.preferred_protocol, "cross-subject"):
            if name in offered:
                return name
        return offered[0]

    def protocol(self, name: str) -> Protocol:
        if name not in self.protocols:
            raise ValueError(f"format {self.name!r} has no protocol {name!r}; it has {sorted(self.protocols)}")
        return self.protocols[name]


READERS: dict[str, type[Reader]] = {}


def register_reader(cls: type[Reader]) -> type[Reader]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in READERS:
        raise ValueError(f"format {cls.name!r} is already registered")
    READERS[cls.name] = cls
    return cls



def parse_ids(stem: str, keys: str) -> dict[str, int]:
    """Parse names like 'a01_s02_e03' or 'S001C002P003R002A013' into {'a': 1, 's': 2, 'e': 3}.

    `keys` lists the letters to find, in order; every one must be present.
    """
    out = {}
    for key in keys:
        m = re.search(rf"(?:^|[_\W]|(?<=\d)){key}(\d+)", stem, flags=re.IGNORECASE)
        if not m:
            raise FormatError(stem, f"file name does not carry '{key}<number>' (expected letters {list(keys)})")
        out[key.lower()] = int(m.group(1))
    return out


def subject_split(train_subjects: set[int]) -> Protocol:
    """Cross-subject protocol: the listed subjects train, the rest test."""

    def split(seq: SkeletonSequence) -> str:
        return "train" if int(seq.subject) in train_subjects else "test"

    return split


def odd_subjects_train(seq: SkeletonSequence) -> str:
    """The common cross-subject protocol of MSR Action3D / UTD-MHAD: odd subjects train, even test."""
    return "train" if int(seq.subject) % 2 == 1 else "test"


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by `text` (SHA-256): order- and machine-independent splits. crc32 is too
    regular on ids that differ in one digit ('f01', 'f02': odd and even ids fell on opposite sides)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def holdout(seq: SkeletonSequence) -> str:
    """Deterministic 80/20 train/test split by a hash of the sample id, for sources without an official
    split. Samples of one subject can land on both sides."""
    return "test" if unit_hash("holdout:" + seq.sample_id) >= 0.8 else "train"
