"""The compact Joint2Text format (beyond the paper, issue 18): the same window in ~4x fewer tokens.

The paper's text repeats every joint name in every frame and writes each coordinate with 2 decimals and a
sign: ~14.5 SmolLM2 tokens per joint and frame, ~3,385 tokens for an N=18 COCO-13 2D window. Here the names
are written once in a header, and each normalised coordinate (eqs. 2-4) becomes one cell of a `grid`-level
grid over [-clip, clip], written as a zero-padded integer; a joint is its axes' digits run together, joints are
separated by one space:

    Joints, xy on a 0-9 grid over -3.0..3.0: left shoulder, right shoulder, ..., body centre
    Frame 1: 35 27 19 ... 45
    Frame 2: ...
    Question: Which action is this person performing?

With grid=10 every value is one digit. Measured with the real tokenizers (bench/joint2text_tokens.py):
SmolLM2 and Qwen2.5 split digits one by one (`\\p{N}`) and keep ' ' apart, so a 2D joint costs 2 + 1 tokens
and the N=18 2D window 871 tokens (3,385 in the paper format); Llama-3 groups up to 3 digits, so '35' is one
token. A 0-99 grid would be 2 tokens per value with SmolLM2 (1,340 tokens: 2.5x, not 3x), letters (' a'..' z')
are one token each but carry no order an LLM knows and merge into words when written together ('ab' is one token).

Pure numpy; the (frame, joint, start, end) character spans cover the digits of each joint, so the offset
mapping of `joint2text._token_joints` gives every value token its frame and joint, as in the paper format.
"""

from __future__ import annotations

import re

import numpy as np


def digits(grid: int) -> int:
    """Characters per value: 1 for grid <= 10, 2 for grid <= 100."""
    return len(str(grid - 1))


def quantise(z: np.ndarray, grid: int, clip: float) -> np.ndarray:
    """Normalised coordinates -> grid cells 0..grid-1: cell k holds [-clip + k*s, -clip + (k+1)*s), s = 2*clip/grid;
    values beyond +-clip go to the end cells (clipped)."""
    z = np.asarray(z, np.float64)
    bad = np.argwhere(~np.isfinite(z))
    if len(bad):
        raise ValueError(f"compact Joint2Text: coordinate at index {tuple(int(i) for i in bad[0])} is "
                         f"{z[tuple(bad[0])]}; the grid needs finite coordinates")
    return np.clip(np.floor((z + clip) * grid / (2 * clip)), 0, grid - 1).astype(np.int64)


def dequantise(q: np.ndarray, grid: int, clip: float) -> np.ndarray:
    """Grid cells -> the centres of their cells (within half a cell, s/2 = clip/grid, of any unclipped value)."""
    return (np.asarray(q, np.float64) + 0.5) * (2 * clip / grid) - clip


def header(labels: tuple[str, ...], dims: int, grid: int, clip: float) -> str:
    axes = "xyz"[:dims]
    top = f"{grid - 1:0{digits(grid)}d}"
    return f"Joints, {axes} on a 0-{top} grid over {-clip:.1f}..{clip:.1f}: {', '.join(labels)}\n"


def frame_line(f: int, cells: np.ndarray, grid: int, offset: int = 0, spans: list | None = None) -> str:
    """'Frame {f + 1}: 35 27 ...\\n' from one frame's grid cells [V, C]; appends (f, j, start, end) of each joint's
    digits (at character `offset` of the whole text) to `spans`."""
    w = digits(grid)
    line = f"Frame {f + 1}:"
    for j, joint in enumerate(cells):
        cell = "".join(f"{int(v):0{w}d}" for v in joint)
        line += " "
        if spans is not None:
            spans.append((f, j, offset + len(line), offset + len(line) + len(cell)))
        line += cell
    return line + "\n"


def build(labels: tuple[str, ...], coords: np.ndarray, grid: int, clip: float, prompt: str) -> tuple[str, list]:
    """coords [T, V, C] (normalised) -> (header + one line per frame + prompt, [(frame, joint, start, end)])
    where [start, end) is the joint's run of digits."""
    coords = np.asarray(coords)
    q = quantise(coords, grid, clip)
    parts = [header(labels, coords.shape[-1], grid, clip)]
    pos = len(parts[0])
    spans: list[tuple[int, int, int, int]] = []
    for f in range(len(q)):
        parts.append(frame_line(f, q[f], grid, pos, spans))
        pos += len(parts[-1])
    parts.append(prompt)
    return "".join(parts), spans


_FRAME = re.compile(r"^Frame (\d+):((?: \d+)+)$", re.M)


def parse(text: str, num_joints: int, dims: int, grid: int) -> np.ndarray:
    """The inverse of `build` for the frame lines: text -> grid cells [T, V, C] (int)."""
    w = digits(grid)
    rows = []
    for k, m in enumerate(_FRAME.finditer(text)):
        if int(m.group(1)) != k + 1:
            raise ValueError(f"compact text: frame line {m.group(1)} out of order (expected {k + 1})")
        cells = m.group(2).split()
        if len(cells) != num_joints or any(len(c) != w * dims for c in cells):
            raise ValueError(f"compact text: frame {k + 1} has cells {cells}; expected {num_joints} cells of "
                             f"{w * dims} digits")
        rows.append([[int(c[i * w:(i + 1) * w]) for i in range(dims)] for c in cells])
    return np.asarray(rows, np.int64).reshape(len(rows), num_joints, dims)
