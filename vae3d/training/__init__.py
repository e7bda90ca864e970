"""Training: config, checkpoints, and the loop."""

from vae3d.config import ModelConfig, TrainConfig
from vae3d.training.restorer import RESTORER_DIR, Trained, fit_with_restorer
from vae3d.training.trainer import (
    Callback,
    NonFiniteLossError,
    TrainResult,
    build_model,
    fit,
    validate,
)

__all__ = [
    "RESTORER_DIR",
    "Callback",
    "ModelConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trained",
    "build_model",
    "fit",
    "fit_with_restorer",
    "validate",
]
