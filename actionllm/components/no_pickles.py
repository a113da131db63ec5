"""No pickle is ever loaded from a recognizer folder: unpickling (torch.load, pickle.load) can run code, and a
recognizer folder (contract.py) holds config.json + safetensors only. `refuse_pickles` is what the loaders
(components/lora.py) and `actionllm serve` call before loading anything, and `actionllm check` reports each file.
Nothing here opens the files it names."""

from __future__ import annotations

from pathlib import Path

# files that torch.load / pickle.load would read (PEFT's adapter_model.bin, transformers' pytorch_model.bin, ...)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def pickle_files(folder: str | Path) -> list[Path]:
    """The pickle files anywhere in a (recognizer) folder, by suffix; none is ever opened."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())


def pickle_problem(path: Path) -> str:
    return (f"{path}: a pickle file ({path.suffix}); recognizer folders hold safetensors only and a pickle is never "
            "loaded (unpickling can run code): remove it")


def refuse_pickles(folder: str | Path) -> None:
    """ValueError naming the first pickle file in the folder (what the loaders and `serve` call before loading)."""
    found = pickle_files(folder)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ValueError(pickle_problem(found[0]) + more)
