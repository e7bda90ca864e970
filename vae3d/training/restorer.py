"""Training the anomaly restorer beside the main model (``train.anomaly``).

The main model trains on the faithful restoration mix (``train.restoration``); the restorer,
the same architecture, then trains on coarse noise over every input (``train.anomaly.restoration``;
Kascenas et al. 2022) and serves the anomaly map alone. It starts from the shipped pretrained
restorer with ``train.init == "pretrained"``, else from the main model's best weights (a
fine-tune: far cheaper than a second training from scratch). The two share the training budget:
the restorer takes ``budget_share`` of ``max_time_s`` and ``ceil(budget_share * epochs)`` epochs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vae3d.config import TrainConfig
from vae3d.model import VAE3D, load_model
from vae3d.training.trainer import Callback, TrainResult, fit

#: the restorer's checkpoint folder, inside the main model's
RESTORER_DIR = "anomaly_restorer"


def main_config(config: TrainConfig) -> TrainConfig:
    """The main model's settings: its share of the time budget (all of it without a restorer)."""
    if not config.anomaly.separate or config.max_time_s is None:
        return config
    return config.model_copy(update={"max_time_s": config.max_time_s * (1 - config.anomaly.budget_share)})


def restorer_config(config: TrainConfig) -> TrainConfig:
    """The restorer's settings: the coarse-noise mix, its share of epochs and time, the rest as ``config``."""
    share = config.anomaly.budget_share
    return config.model_copy(update={
        "restoration": config.anomaly.restoration, "epochs": max(1, math.ceil(share * config.epochs)),
        "max_time_s": None if config.max_time_s is None else config.max_time_s * share})


def build_restorer(config: TrainConfig, main: VAE3D) -> VAE3D:
    """The restorer's starting weights: the shipped pretrained restorer with ``config.init ==
    "pretrained"``, else a copy of ``main``."""
    restorer = copy.deepcopy(main)
    if config.init == "pretrained":
        from vae3d.pretrained import load_pretrained  # it imports the training package

        load_pretrained(restorer, "anomaly")
    return restorer


def uses_pretrained_head(config: TrainConfig) -> bool:
    """Whether the anomaly map uses the shipped head (``vae3d.anomaly_head``): ``train.anomaly.head``
    on and a separate restorer started from the shipped one (``train.init == "pretrained"``), whose
    restorations the head was trained to read."""
    return config.anomaly.head and config.anomaly.separate and config.init == "pretrained"


def pretrained_head(config: TrainConfig) -> torch.nn.Module | None:
    """The shipped anomaly head when ``uses_pretrained_head(config)``, else None."""
    if not uses_pretrained_head(config):
        return None
    from vae3d.pretrained import load_head  # it imports the training package

    return load_head()


@dataclass
class Trained:
    """What ``fit_with_restorer`` returns: the main model's result and the restorer's (None
    with ``train.anomaly.separate`` off)."""

    main: TrainResult
    restorer: TrainResult | None


def fit_with_restorer(model: VAE3D, train: torch.Tensor, val: torch.Tensor, config: TrainConfig,
                      checkpoint_dir: Path, callbacks: Sequence[Callback] = (),
                      restorer_callbacks: Sequence[Callback] = (), resume: bool = True,
                      progress: bool = True) -> Trained:
    """``fit`` the main model into ``checkpoint_dir``, then the restorer from its best weights (or
    the pretrained restorer) into ``checkpoint_dir / RESTORER_DIR``. Both resume after a kill."""
    main = fit(model, train, val, main_config(config), checkpoint_dir, callbacks, resume, progress)
    if not config.anomaly.separate:
        return Trained(main, None)
    restorer = build_restorer(config, load_model(main.best_checkpoint))
    cfg = restorer_config(config)
    return Trained(main, fit(restorer, train, val, cfg, Path(checkpoint_dir) / RESTORER_DIR, restorer_callbacks,
                             resume, progress))
