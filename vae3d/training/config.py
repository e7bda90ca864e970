"""Training hyperparameters as one frozen dataclass of primitives."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0
    beta: float = 0.05
    kl_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    kl_warmup_steps: int = 200
    kl_cycle_steps: int = 400
    free_bits: float = 0.0
    recon: Literal["l1", "mse"] = "l1"
    ssim_weight: float = 0.0
    augment_prob: float = 0.3
    seed: int = 0
    patience: int = 10
    max_time_s: float | None = None
    channels_last: bool = True
    amp: bool = True  # bf16 autocast on CUDA only
    device: str = "auto"
    model: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.augment_prob <= 1:
            raise ValueError(f"augment_prob must be in [0, 1], got {self.augment_prob}")

    def to_dict(self) -> dict:
        return asdict(self)
