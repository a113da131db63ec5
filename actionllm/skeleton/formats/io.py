"""File helpers shared by the readers: every failure becomes a FormatError naming the file (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import FormatError


def parse_rows(path: Path, ncols: int) -> tuple[np.ndarray, list[int]]:
    """Parse a whitespace-separated numeric text file with `ncols` values per non-blank line.

    Returns (float64 array [N, ncols], 1-based source line number of each row); FormatError names the line.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read: {e}") from None
    rows, lines = [], []
    for no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != ncols:
            raise FormatError(path, f"expected {ncols} numbers, found {len(parts)}", line=no)
        rows.append(parts)
        lines.append(no)
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, ncols), lines
    except ValueError:
        for row, no in zip(rows, lines, strict=True):
            for tok in row:
                try:
                    float(tok)
                except ValueError:
                    raise FormatError(path, f"not a number: {tok!r}", line=no) from None
        raise


def load_json(path: Path):
    """json.load with errors turned into FormatError (JSON syntax errors name the line)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None


def load_mat(path: Path, var: str):
    """scipy.io.loadmat(path)[var]; every failure becomes a FormatError naming the file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds for a bad file
        raise FormatError(path, f"cannot read as a MATLAB .mat file: {type(e).__name__}: {e}") from None
    if var not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise FormatError(path, f"no variable {var!r} (variables: {found})")
    return mat[var]


def mat_strings(path: Path, var: str) -> list[str]:
    """A MATLAB cell array of strings (e.g. `action_names`) as a list of str."""
    cell = np.asarray(load_mat(path, var), dtype=object).ravel()
    return [str(np.asarray(c).ravel()[0]) for c in cell]
