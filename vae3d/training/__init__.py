"""Training: config, checkpoints, and the loop."""

from vae3d.training.checkpoint import load_checkpoint, save_checkpoint
from vae3d.training.config import TrainConfig
from vae3d.training.trainer import (
    Callback,
    NonFiniteLossError,
    TrainResult,
    build_model,
    evaluate,
    fit,
    load_model,
)

__all__ = [
    "load_checkpoint", "save_checkpoint", "TrainConfig", "Callback", "NonFiniteLossError",
    "TrainResult", "build_model", "evaluate", "fit", "load_model",
]
