"""The shipped starting points: default-architecture weights pretrained on a sample cohort.

``vae3d train --init pretrained`` (``train.init``) starts from these weights instead of a
random initialisation: the main model from ``vae3d_64cube_3mm.pt`` (the faithful restoration
mix, ``train.restoration``) and the anomaly restorer from ``vae3d_64cube_3mm_anomaly.pt`` (coarse
noise on every input, ``train.anomaly.restoration``); the anomaly map's discriminative head
(``vae3d.anomaly_head``) from ``vae3d_64cube_3mm_anomaly_head.pt``, trained on the shipped
restorer's restorations of scans with synthetic anomalies. Each was made by one command,
reproducibly (same seed, same weights on the same machine and torch build)::

    python -m vae3d.pretrained.build --which main --epochs 60
    python -m vae3d.pretrained.build --which anomaly --epochs 160
    python -m vae3d.pretrained.build --which anomaly --epochs 150 --from-shipped
    python -m vae3d.pretrained.build --which head --steps 3000
    python -m vae3d.pretrained.build --which head --steps 1000 --from-shipped

from a sample cohort whose seed (``PRETRAIN_SEED``) no demo or benchmark cohort uses, so
no demo test scan was ever seen in pretraining. The weights are stored as float16 (half the
bytes; they are cast back to float32 on load).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from vae3d.checkpoint import load_checkpoint
from vae3d.model import VAE3D

WEIGHTS = Path(__file__).parent / "vae3d_64cube_3mm.pt"
ANOMALY_WEIGHTS = Path(__file__).parent / "vae3d_64cube_3mm_anomaly.pt"
HEAD_WEIGHTS = Path(__file__).parent / "vae3d_64cube_3mm_anomaly_head.pt"
PRETRAIN_SEED = 90_210
Which = Literal["main", "anomaly", "head"]


class PretrainedUnavailable(ValueError):
    """No shipped weights fit this model."""


def weights_path(which: Which = "main") -> Path:
    """The file of the shipped main model, anomaly restorer or anomaly head."""
    return {"anomaly": ANOMALY_WEIGHTS, "head": HEAD_WEIGHTS}.get(which, WEIGHTS)


def _checkpoint(which: Which, path: Path | None = None) -> dict:
    """The shipped file of ``which`` (or ``path``, a file the build wrote), loaded (``weights_only``):
    its ``model`` tensors and ``info``."""
    path = path or weights_path(which)
    if not path.exists():
        raise PretrainedUnavailable(
            f"{path} is missing: reinstall the package, build it with 'python -m vae3d.pretrained.build "
            f"--which {which}', or train with --init scratch")
    return load_checkpoint(path)


def describe(which: Which = "main", path: Path | None = None) -> dict:
    """What the shipped weights are (hparams, cohort, budget, metrics), from their own file (or from
    ``path``, a file the build wrote)."""
    return json.loads(_checkpoint(which, path)["info"])


def load_pretrained(model: VAE3D, which: Which = "main", path: Path | None = None) -> VAE3D:
    """Copy the shipped weights (``which``: the main model or the anomaly restorer) into ``model``
    (same architecture and input size), in place; ``path``: a file ``python -m vae3d.pretrained.build
    --which WHICH --out`` wrote instead (a candidate, before it is shipped).

    Raises:
        PretrainedUnavailable: the file is missing, or ``model`` is another architecture.
    """
    checkpoint = _checkpoint(which, path)
    info = json.loads(checkpoint["info"])
    arch = lambda h: {k: v for k, v in h.items() if k != "logvar_init"}
    if arch(info["hparams"]) != arch(model.hparams()):
        raise PretrainedUnavailable(
            f"the {'shipped pretrained weights' if path is None else path} are for {info['hparams']}, not this "
            f"model's {model.hparams()}; use the default train.model settings and a 64^3 preprocess.target_shape, "
            "or --init scratch")
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model


def load_head(path: Path | None = None):
    """The shipped anomaly head (``vae3d.anomaly_head``), or the one in ``path`` (a file
    ``python -m vae3d.pretrained.build --which head --out`` wrote), in eval mode; it reads the shipped
    restorer's restorations of 64^3 scans. ``head.description`` is its file's description (what
    ``describe("head")`` reads), so a caller need not read the file again.

    Raises:
        PretrainedUnavailable: the file is missing.
    """
    from vae3d.anomaly_head import build_head

    checkpoint = _checkpoint("head", path)
    info = json.loads(checkpoint["info"])
    head = build_head(tuple(info["features"]), info.get("in_channels", 2), info.get("mirror", False))
    head.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    head.description = info
    return head.eval()
