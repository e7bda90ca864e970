"""Training hyperparameters: one frozen, validated object (also the ``train`` settings section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vae3d.device import DeviceName


class ModelConfig(BaseModel):
    """Architecture of ``VAE3D`` (the input size comes from the data)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # measured on 2 CPU cores (BENCHMARKS.md): a 4x4x4 patchify stem with one residual
    # block per level learns more per wall-clock minute than two blocks, wider channels
    # (48, 96) or a 2x2x2 stem
    channels: tuple[int, ...] = (32, 64)
    latent_channels: int = Field(8, ge=1)
    num_res_blocks: int = Field(1, ge=1)
    norm_num_groups: int = Field(8, ge=1)
    flat_latent: int | None = Field(None, ge=1)
    patch_size: int = Field(4, description="stride of the patchify stem: 4 (fast) or 2 (finer)")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    beta: float = Field(0.2, ge=0, description="KL weight (KL is divided by the voxel count)")
    kl_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    kl_warmup_steps: int = Field(200, ge=1)
    kl_cycle_steps: int = Field(400, ge=1)
    free_bits: float = Field(0.0, ge=0, description="nats per latent element")
    recon: Literal["l1", "mse"] = "l1"
    ssim_weight: float = Field(0.0, ge=0)
    augment_prob: float = Field(0.3, ge=0, le=1)
    seed: int = 0
    patience: int = Field(10, ge=1, description="epochs without a better val SSIM before stopping")
    min_delta: float = Field(1e-4, ge=0, description="a val SSIM gain below this is not an improvement")
    max_time_s: float | None = Field(None, gt=0, description="stop after the epoch that passes this")
    # channels_last_3d was 1.67x faster with a trilinear full-resolution head; with the
    # pixel-shuffle head both layouts run within 2% (BENCHMARKS.md), so the plain one
    channels_last: bool = False
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    device: DeviceName = "auto"
    model: ModelConfig = ModelConfig()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")
