"""The shipped starting point: default-architecture weights pretrained on a sample cohort.

``vae3d train --init pretrained`` (``train.init``) starts from these weights instead of a
random initialisation. They were made by one command, reproducibly (same seed, same
weights on the same machine and torch build)::

    python -m vae3d.pretrained.build --epochs 60

from a sample cohort whose seed (``PRETRAIN_SEED``) no demo or benchmark cohort uses, so
no demo test scan was ever seen in pretraining. Benchmarks always train from scratch.
The weights are stored as float16 (half the bytes; they are cast back to float32 on load).
"""

from __future__ import annotations

import json
from pathlib import Path

from vae3d.checkpoint import load_checkpoint
from vae3d.model import VAE3D

WEIGHTS = Path(__file__).parent / "vae3d_64cube_3mm.pt"
PRETRAIN_SEED = 90_210


class PretrainedUnavailable(ValueError):
    """No shipped weights fit this model."""


def describe() -> dict:
    """What the shipped weights are (hparams, cohort, budget, metrics), from their own file."""
    if not WEIGHTS.exists():
        raise PretrainedUnavailable(
            f"{WEIGHTS} is missing: reinstall the package, build it with 'python -m vae3d.pretrained.build', "
            "or train with --init scratch")
    return json.loads(load_checkpoint(WEIGHTS)["info"])


def load_pretrained(model: VAE3D) -> VAE3D:
    """Copy the shipped weights into ``model`` (same architecture and input size), in place.

    Raises:
        PretrainedUnavailable: the file is missing, or ``model`` is another architecture.
    """
    info = describe()
    arch = lambda h: {k: v for k, v in h.items() if k != "logvar_init"}
    if arch(info["hparams"]) != arch(model.hparams()):
        raise PretrainedUnavailable(
            f"the shipped pretrained weights are for {info['hparams']}, not this model's {model.hparams()}; "
            "use the default train.model settings and a 64^3 preprocess.target_shape, or --init scratch")
    state = load_checkpoint(WEIGHTS)["model"]
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model
