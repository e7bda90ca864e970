"""Training hyperparameters: one frozen, validated object (also the ``train`` settings section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from data_contracts.schema import Schema
from vae3d.device import DeviceName


class ModelConfig(Schema):
    """Architecture of ``VAE3D`` (the input size comes from the data)."""

    # the best fidelity per CPU-minute of the ablation (BENCHMARKS.md, "Model ablation: stem")
    channels: tuple[int, ...] = (16,)
    latent_channels: int = Field(4, ge=1)
    num_res_blocks: int = Field(2, ge=1)
    norm_num_groups: int = Field(8, ge=1)
    flat_latent: int | None = Field(None, ge=1)
    patch_size: int = Field(2, description="stride of the patchify stem: 2 (finer, the default) or 4 (faster)")
    logvar_init: float = Field(-6.0, ge=-20, le=5, description="initial posterior log-variance bias: a narrow "
                               "posterior (sigma 0.05) learns faster than the prior's sigma 1 (BENCHMARKS.md)")


class RestorationConfig(Schema):
    """Corruptions of the encoder's input during training (``vae3d.corruption``); the loss
    compares with the clean volume. Strengths are fractions of the [0, 1] range."""

    # the main model's mix: faithful reconstruction, denoising and super-resolution. The anomaly
    # restorer trains on a coarse-noise mix instead (``AnomalyRestorerConfig``)
    prob: float = Field(0.6, ge=0, le=1, description="share of training inputs corrupted at all (0 disables)")
    noise_prob: float = Field(0.8, ge=0, le=1)
    noise_kind: Literal["rician", "gaussian"] = "rician"
    noise_std: tuple[float, float] = Field((0.0, 0.15), description="range of the noise std, drawn uniformly")
    bias_prob: float = Field(0.3, ge=0, le=1)
    bias_max: float = Field(0.2, ge=0, le=1, description="largest bias-field polynomial coefficient")
    gibbs_prob: float = Field(0.15, ge=0, le=1)
    gibbs_max: float = Field(0.5, ge=0, le=1, description="largest k-space truncation (MONAI GibbsNoise alpha)")
    lowres_prob: float = Field(0.3, ge=0, le=1)
    lowres_factor: tuple[float, float] = Field((1.5, 3.0), description="range of the downsampling factor")
    thick_slice_fraction: float = Field(0.5, ge=0, le=1, description="of low-resolution draws, share on one axis only")
    coarse_prob: float = Field(0.2, ge=0, le=1)
    coarse_std: float = Field(0.2, ge=0, le=1, description="largest std of the coarse noise, drawn uniformly")
    coarse_grid: int = Field(16, ge=2, le=64, description="lattice of the coarse noise (Kascenas et al. 2022)")

    @model_validator(mode="after")
    def _ranges(self) -> RestorationConfig:
        for name in ("noise_std", "lowres_factor"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"restoration.{name}={[lo, hi]}: give [low, high] with 0 <= low <= high")
        if self.noise_std[1] > 1:
            raise ValueError(f"restoration.noise_std={list(self.noise_std)}: a std above 1 (the whole range) "
                             "leaves nothing to restore; use e.g. [0.0, 0.15]")
        if self.lowres_factor[0] < 1:
            raise ValueError(f"restoration.lowres_factor={list(self.lowres_factor)}: factors below 1 would "
                             "upsample; use e.g. [1.5, 3.0]")
        return self


#: the anomaly restorer's mix: every input corrupted, coarse noise on each (Kascenas et al. 2022). A model
#: that learns to repair blobs of tissue gives a lesion back less (0.38 of it, against 0.87), so the anomaly
#: map sees it (AUPRC 0.50 on the development data, counting lesion voxels outside the map as misses;
#: BENCHMARKS.md, "Anomaly detection")
COARSE_NOISE = RestorationConfig(prob=1.0, coarse_prob=1.0, coarse_std=0.3)
#: the anomaly score's threshold flags at most this share of healthy scans, with this probability over the
#: validation scans it is set on (``vae3d.anomaly.score_threshold``; BENCHMARKS.md, "calibrating the threshold")
FALSE_POSITIVE_RATE = 0.05
FPR_CONFIDENCE = 0.9

LEFT_RIGHT = 2  # the left-right axis of a (B, C, D, H, W) batch: preprocessing orients every volume RAS


class AnomalyRestorerConfig(Schema):
    """``train.anomaly``: the anomaly mode's own restorer, a second copy of the model trained with
    coarse noise on every input (``vae3d.training.restorer``), and how the anomaly score's threshold is
    calibrated at registration.

    One network cannot be both: coarse-noise training makes the anomaly map see lesions, but the
    same network then repaints the blur of a synthetic sample as speckle and reconstructs less
    faithfully (BENCHMARKS.md, "Latent priors" and "Anomaly detection"). So the main model keeps
    the faithful mix (``train.restoration``) and the restorer, fine-tuned from it (or from the shipped
    pretrained restorer), serves ``generate anomaly`` alone."""

    separate: bool = Field(True, description="train the restorer (false: the anomaly mode uses the main model)")
    budget_share: float = Field(0.4, gt=0, lt=1, description="share of the training budget the restorer takes: "
                                "of train.max_time_s (the main model gets the rest) and ceil(share x epochs) epochs")
    restoration: RestorationConfig = COARSE_NOISE
    choose: bool = Field(True, description="with train.init: pretrained, keep the shipped restorer the fine-tune "
                         "started from unless the fine-tune finds lesions drawn into copies of the validation scans "
                         "clearly better (vae3d.training.restorer_choice; needs 6 validation scans, else the "
                         "fine-tune is kept)")
    head: bool = Field(True, description="score the map with the shipped discriminative head too (vae3d.anomaly_head;"
                       " it reads the shipped restorer's output: used when the restorer started from it, train.init: "
                       "pretrained)")
    false_positive_rate: float = Field(FALSE_POSITIVE_RATE, gt=0, lt=1, description="the largest share of healthy "
                                       "scans the anomaly score's threshold (set at registration on the validation "
                                       "split) may flag")
    fpr_confidence: float = Field(FPR_CONFIDENCE, gt=0, lt=1, description="how sure the threshold must be of that "
                                  "share, over the validation scans it is set on (a tolerance bound: at 0.9, "
                                  "at most false_positive_rate on 9 validation splits in 10; at 0.5, on half of them)")


class LatentDiffusionConfig(Schema):
    """``train.prior.kind: diffusion``: the latent diffusion model (``vae3d.latent_diffusion``)
    trained at registration on the training scans' posterior means."""

    widths: tuple[int, ...] = Field((48, 96, 96), description="channels of MONAI's DiffusionModelUNet per level")
    train_steps: int = Field(3000, ge=1, description="optimiser steps (batch_size latents each)")
    max_minutes: float | None = Field(15.0, gt=0, description="stop training after this long, whatever the steps")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-4, gt=0)
    sampling_steps: int = Field(25, ge=1, le=1000, description="DDIM steps per sample")


class PriorConfig(Schema):
    """The latent prior fitted to the training scans' posterior means at registration
    (``vae3d.prior``); ``generate synthetic`` samples it."""

    kind: Literal["normal", "lowrank", "diffusion"] = Field(
        "lowrank", description="normal: N(0, I); lowrank: a Gaussian with the training latents' mean and leading "
        "directions; diffusion: a latent diffusion model (minutes of training; BENCHMARKS.md, 'Latent priors')")
    # rank 32 drawn at temperature 1.2, refined x3, through the intensity map met every target of the
    # ablation (two-sample 0.67, tissue gap 0.014, MS-SSIM among samples 0.653 against 0.556; BENCHMARKS.md,
    # 'Latent priors'); rank 8 scored 0.78 on the two-sample test; at temperature 1 rank 32 was 23% less diverse
    # than real scans (target: within 20%)
    rank: int = Field(32, ge=1, description="lowrank: principal directions kept (at most training scans - 1)")
    spread: float = Field(1.2, gt=0, le=5, description="lowrank: the registered temperature of its draws (a "
                          "request's --temperature multiplies it)")
    refine: int = Field(3, ge=0, le=20, description="passes of each sample through the model after decoding "
                        "(encode, decode): sharper tissue borders and truer tissue fractions, at one encode and "
                        "decode each (BENCHMARKS.md, 'Latent priors')")
    match_intensity: bool = Field(True, description="map the samples' intensities onto the training scans' with "
                                  "one monotone map fitted at registration: removes the excess of partial-volume "
                                  "(CSF-like) intensity a blurrier sample has (vae3d.intensity; BENCHMARKS.md)")
    diffusion: LatentDiffusionConfig = LatentDiffusionConfig()


class TrainConfig(Schema):
    epochs: int = Field(20, ge=1)
    # batch 2 beat batch 4 by 0.09 val SSIM in the same 6 minutes (2.7x the optimiser steps; BENCHMARKS.md)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    beta: float = Field(1e-3, ge=0, description="KL weight (KL is divided by the voxel count)")
    kl_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    kl_warmup_steps: int = Field(200, ge=1)
    kl_cycle_steps: int = Field(400, ge=1)
    free_bits: float = Field(0.0, ge=0, description="nats per latent element")
    recon: Literal["l1", "mse"] = "l1"
    # + 0.3 (1 - SSIM) beat L1 alone at batch 2 by 0.035 val SSIM and 0.2 dB in the same 6 minutes (BENCHMARKS.md)
    ssim_weight: float = Field(0.3, ge=0, description="weight of the (1 - SSIM) term beside the L1/MSE term")
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
    restoration: RestorationConfig = RestorationConfig()
    anomaly: AnomalyRestorerConfig = AnomalyRestorerConfig()
    prior: PriorConfig = PriorConfig()
    init: Literal["scratch", "pretrained"] = Field(
        "scratch", description="starting weights: random ('scratch') or the shipped pretrained ones "
        "(vae3d/pretrained, default architecture at 64^3 only; the anomaly restorer starts from its own)")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")
