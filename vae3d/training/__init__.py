"""Training: config, checkpoints, and the loop."""

from vae3d.config import ModelConfig, TrainConfig
from vae3d.training.trainer import (
    Callback,
    NonFiniteLossError,
    TrainResult,
    build_model,
    fit,
    validate,
)

__all__ = [
    "Callback",
    "ModelConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "fit",
    "validate",
]
