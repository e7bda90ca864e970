"""Training the anomaly restorer beside the main model (``train.anomaly``).

The main model trains on the faithful restoration mix (``train.restoration``); the restorer,
the same architecture, then trains on coarse noise over every input (``train.anomaly.restoration``;
Kascenas et al. 2022) and serves the anomaly map alone. It starts from the shipped pretrained
restorer with ``train.init == "pretrained"``, else from the main model's best weights (a
fine-tune: far cheaper than a second training from scratch). The two share the training budget:
the restorer takes ``budget_share`` of ``max_time_s`` and ``ceil(budget_share * epochs)`` epochs.
A fine-tune of the shipped restorer is then put beside its start on the validation split, and kept only
if its map finds lesions clearly better (``train.anomaly.choose``; ``vae3d.training.restorer_choice``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vae3d.checkpoint import save_checkpoint
from vae3d.config import TrainConfig
from vae3d.model import VAE3D, load_model
from vae3d.training.restorer_choice import MIN_SCANS, choose_restorer, criteria
from vae3d.training.trainer import Callback, TrainResult, fit

#: the restorer's checkpoint folder, inside the main model's
RESTORER_DIR = "anomaly_restorer"
#: the shipped restorer's weights, in that folder, when the choice keeps them
SHIPPED = "shipped.pt"

log = logging.getLogger(__name__)


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
    with ``train.anomaly.separate`` off); ``choice``, what ``choose_weights`` chose (None when it
    did not choose)."""

    main: TrainResult
    restorer: TrainResult | None
    choice: dict | None = None

    @property
    def restorer_weights(self) -> Path | None:
        """The restorer's weights the anomaly map uses: the chosen ones, else the fine-tune's best."""
        if self.choice is not None:
            return Path(self.choice["weights"])
        return self.restorer.best_checkpoint if self.restorer else None


def choose_weights(config: TrainConfig, result: TrainResult, start: VAE3D, val: torch.Tensor,
                   folder: Path) -> dict | None:
    """With ``train.anomaly.choose`` and a restorer fine-tuned from the shipped one (``train.init:
    pretrained``) on at least ``MIN_SCANS`` validation scans: the weights it started from (``start``), unless
    the fine-tune's best ones find lesions in ``val``'s copies clearly better (``choose_restorer``, with the
    head the map will use); the start's weights are written to ``folder / SHIPPED`` when kept.
    Returns ``{"chosen", "weights", "figures"}``, or None when there was no choice to make (and on every
    rank but 0 under ``torchrun``: rank 0 alone registers)."""
    worker = torch.distributed.is_initialized() and torch.distributed.get_rank() != 0
    if worker or not (config.anomaly.choose and config.init == "pretrained" and len(val) >= MIN_SCANS
                      and result.best_checkpoint is not None):
        return None
    start = start.eval()
    chosen, figures = choose_restorer({"shipped": start, "fine-tuned": load_model(result.best_checkpoint)}, val,
                                      config.seed, pretrained_head(config))
    weights = result.best_checkpoint if chosen == "fine-tuned" else save_checkpoint(
        Path(folder) / SHIPPED, {"model": start.state_dict(), "hparams": start.hparams()})
    log.info("anomaly restorer: the %s weights serve the map (on lesions drawn into copies of the %d validation scans: "
             "criterion %s)", chosen, len(val), criteria(figures))
    return {"chosen": chosen, "weights": str(weights), "figures": figures}


def fit_with_restorer(model: VAE3D, train: torch.Tensor, val: torch.Tensor, config: TrainConfig,
                      checkpoint_dir: Path, callbacks: Sequence[Callback] = (),
                      restorer_callbacks: Sequence[Callback] = (), resume: bool = True,
                      progress: bool = True) -> Trained:
    """``fit`` the main model into ``checkpoint_dir``, then the restorer from its best weights (or
    the pretrained restorer) into ``checkpoint_dir / RESTORER_DIR``, and ``choose_weights`` between
    that fine-tune and the shipped restorer. Both trainings resume after a kill."""
    main = fit(model, train, val, main_config(config), checkpoint_dir, callbacks, resume, progress)
    if not config.anomaly.separate:
        return Trained(main, None)
    restorer = build_restorer(config, load_model(main.best_checkpoint))
    start = copy.deepcopy(restorer)  # the fine-tune's start, which the choice weighs it against
    folder = Path(checkpoint_dir) / RESTORER_DIR
    result = fit(restorer, train, val, restorer_config(config), folder, restorer_callbacks, resume, progress)
    return Trained(main, result, choose_weights(config, result, start, val, folder))
