"""Atomic checkpoints that load with ``weights_only=True`` (no pickled code)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from vae3d.files import atomic_write_bytes


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write ``state`` (tensors and primitives only) atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint; refuses anything but tensors and primitive containers.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        RuntimeError: the file is damaged (message names the path).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"checkpoint {path} is damaged or not a vae3d checkpoint: {exc}") from exc
