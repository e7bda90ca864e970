"""Training: config, checkpoints, and the loop."""

from vae3d.training.checkpoint import load_checkpoint, save_checkpoint
from vae3d.config import ModelConfig, TrainConfig
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
    "load_checkpoint", "save_checkpoint", "ModelConfig", "TrainConfig", "Callback", "NonFiniteLossError",
    "TrainResult", "build_model", "evaluate", "fit", "load_model",
]
