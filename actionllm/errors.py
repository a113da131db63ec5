"""One-line descriptions of the errors a damaged input raises (a pydantic ValidationError's many lines, a
safetensors header error), for messages that name the file and what is wrong. Nothing here imports ray."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


def validation_line(err: ValidationError, prefix: str = "") -> str:
    """`epochs: Input should be a valid integer, ...; lora.r: ...`: each error's dotted field path (under
    `prefix`, e.g. 'recipe_config') and message, on one line. An error of the whole model (a validator's
    ValueError) is its message alone."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(e.get("loc", ())))
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or str(err).splitlines()[0]


def check_safetensors(path: str | Path) -> None:
    """Refuse a safetensors file that is missing or whose header does not cover it (truncated, not safetensors):
    FileNotFoundError / ValueError naming the file. Reads the header only (no tensor is loaded)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the recognizer folder is incomplete)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
