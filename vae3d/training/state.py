"""What a training run must keep to resume where it stopped, and ``last.pt``/``best.pt``.

``last.pt`` holds the model, optimiser, scheduler, the reparameterization noise generators
(one per rank) and the ``TrainState``; ``best.pt`` the model at the best validation SSIM.
Both are written atomically and load with ``weights_only=True``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vae3d.checkpoint import load_checkpoint, save_checkpoint
from vae3d.config import TrainConfig
from vae3d.model import VAE3D

LAST, BEST = "last.pt", "best.pt"


@dataclass
class TrainState:
    """The loop's own progress: epochs and steps done, the metrics of each epoch, the best
    epoch so far, how many epochs since it improved, and whether it stopped (patience or time
    budget: a resumed run then trains no further)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=lambda: {"epoch": 0, "val_ssim": -math.inf})
    bad_epochs: int = 0
    stopped: bool = False


@dataclass
class Optimisation:
    """The objects a resumed run restores besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    noise: torch.Generator


def save_state(path: Path, model: VAE3D, opt: Optimisation, noise_states, state: TrainState,
               config: TrainConfig) -> None:
    """``last.pt``: everything ``load_state`` needs. ``noise_states``: every rank's noise state."""
    save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
        "noise_rng": noise_states, **asdict(state), "hparams": model.hparams(), "config": config.to_dict(),
    })


def save_best(path: Path, model: VAE3D, config: TrainConfig, metrics: dict[str, float]) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "hparams": model.hparams(), "config": config.to_dict(),
                           "metrics": metrics})


def load_state(path: Path, model: VAE3D, opt: Optimisation, rank: int, device: torch.device) -> TrainState:
    """Restore ``model`` and ``opt`` from ``last.pt`` and return the loop's progress.

    Raises:
        ValueError: the checkpoint holds another architecture.
    """
    saved = load_checkpoint(path, map_location=device)
    if saved["hparams"] != model.hparams():
        raise ValueError(f"{path} holds a model with {saved['hparams']}, not {model.hparams()}; "
                         "use another checkpoint folder or resume=False")
    model.load_state_dict(saved["model"])
    opt.optimizer.load_state_dict(saved["optimizer"])
    opt.scheduler.load_state_dict(saved["scheduler"])
    noise = saved["noise_rng"]
    opt.noise.set_state(noise[rank] if isinstance(noise, list) else noise)
    return TrainState(epoch=saved["epoch"], step=saved["step"], history=list(saved["history"]),
                      best=dict(saved["best"]), bad_epochs=saved["bad_epochs"],
                      stopped=bool(saved.get("stopped", False)))
