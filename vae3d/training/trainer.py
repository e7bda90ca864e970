"""The training loop: seeded, resumable, validated, stoppable; no tracking code inside.

Randomness is keyed, not streamed: the batch order of epoch ``e`` comes from a generator
seeded with (seed, e), each sample's augmentation from (seed, e, index), and the
reparameterization noise from a generator whose state is checkpointed. So a run stopped
after any epoch and resumed ends with the same weights as one that never stopped (CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from vae3d.device import resolve_device
from vae3d.io import remove_stale_temporaries
from vae3d.losses import VAELoss, kl_weight
from vae3d.metrics import psnr_ssim, ssim_per_volume
from vae3d.model import VAE3D
from vae3d.preprocessing.augment import augment, build_augment
from vae3d.corruption import corrupt
from vae3d.training.checkpoint import load_checkpoint, save_checkpoint
from vae3d.config import TrainConfig

LAST, BEST = "last.pt", "best.pt"
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf. The last good checkpoint is left untouched."""

    def __init__(self, epoch: int, step: int, checkpoint: Path | None, values: dict[str, float]):
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"non-finite loss at epoch {epoch}, step {step} ({values}); {kept}. "
            "Check the inputs for NaN/Inf, or lower lr / raise grad_clip; resume continues from it."
        )


class Callback(Protocol):
    """What the flow layer hooks into (MLflow logging lives there, not here)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: VAE3D) -> None: ...


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


def build_model(config: TrainConfig, input_size: int) -> VAE3D:
    """The model of ``config.model``, initialised from ``config.seed``, or from the shipped
    pretrained weights with ``config.init == "pretrained"`` (``vae3d.pretrained``)."""
    torch.manual_seed(config.seed)
    model = VAE3D(input_size=input_size, **config.model.model_dump())
    if config.init == "pretrained":
        from vae3d.pretrained import load_pretrained  # it imports the training package

        load_pretrained(model)
    return model


def _lr_lambda(warmup: int, total: int, budget_used=None):
    """Linear warmup, then cosine decay to 5% over ``total`` steps, or over the time budget
    when ``budget_used()`` (the fraction of ``max_time_s`` spent) gets there first: a
    budgeted run ends at a low learning rate too, instead of being cut off at its peak."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if budget_used is not None:
            progress = max(progress, min(1.0, budget_used()))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


@torch.no_grad()
def evaluate(model: VAE3D, volumes: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
    """Posterior-mean reconstructions scored with MONAI's PSNR and SSIM (data range 1; SSIM
    through ``ssim_per_volume``, the same numbers as MONAI's metric at a fraction of the cost)."""
    psnr, _ = psnr_ssim(volumes.shape[2:])
    l1, ssim, n = 0.0, [], 0
    was_training = model.training
    model.eval()
    for i in range(0, len(volumes), batch_size):
        x = volumes[i : i + batch_size].to(device)
        r = model.reconstruct(x).float().clamp(0, 1)
        psnr(r, x)
        ssim.append(ssim_per_volume(r, x))
        l1 += float((r - x).abs().mean()) * len(x)
        n += len(x)
    model.train(was_training)
    # every rank scores the whole set, so the mean is the same on each (MONAI's PSNR gathers anyway)
    return {"val_psnr": float(psnr.aggregate()), "val_ssim": float(torch.cat(ssim).mean()), "val_l1": l1 / max(n, 1)}


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31 - 1)


def _batch(train: torch.Tensor, idx: torch.Tensor, epoch: int, cfg: TrainConfig, chain) -> torch.Tensor:
    if cfg.augment_prob <= 0:
        return train[idx]
    return torch.stack(
        [augment(chain, train[i], seed=_sample_seed(cfg.seed, epoch, int(i))) for i in idx.tolist()]
    )


def training_pair(train: torch.Tensor, idx: torch.Tensor, epoch: int, cfg: TrainConfig,
                  chain) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder input, loss target) of one batch: the target is the clean (geometrically
    augmented) volume; the input is a copy corrupted with each sample's own seeded draw."""
    target = _batch(train, idx, epoch, cfg, chain)
    if cfg.restoration.prob <= 0:
        return target, target
    seeds = [_sample_seed(cfg.seed + 7_919, epoch, int(i)) for i in idx.tolist()]
    return torch.stack([corrupt(v, cfg.restoration, s) for v, s in zip(target, seeds)]), target


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit(
    model: VAE3D,
    train: torch.Tensor,
    val: torch.Tensor,
    config: TrainConfig,
    checkpoint_dir: Path,
    callbacks: Sequence[Callback] = (),
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train`` (N, 1, S, S, S) in [0, 1], validating on ``val`` each epoch.

    Writes ``last.pt`` (everything needed to resume) and ``best.pt`` (best val SSIM)
    atomically into ``checkpoint_dir`` after every epoch.

    Under ``torchrun`` (a process group initialised by the caller) the model is wrapped in
    DistributedDataParallel: each rank trains on its share of every global batch of
    ``batch_size * world_size`` volumes; every rank validates, rank 0 alone writes checkpoints and
    calls the callbacks, then tells every rank whether to stop.

    Raises:
        ValueError: empty training or validation data, or a checkpoint of another model.
        NonFiniteLossError: the loss became NaN/Inf (names epoch and step).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"need training and validation volumes, got {len(train)} train and {len(val)} val; "
            "ingest more scans or change the split fractions"
        )
    rank, world = _rank_world()
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        remove_stale_temporaries(checkpoint_dir)  # a killed run's half-written checkpoint
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    fmt = torch.channels_last_3d if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    global_batch = config.batch_size * world
    steps_per_epoch = math.ceil(len(train) / global_batch)
    t0 = time.perf_counter()
    # a time budget shapes the schedule on a single process; under DDP every rank must step
    # the same learning rate, so there the schedule follows the step count alone
    budget_used = (lambda: (time.perf_counter() - t0) / config.max_time_s) if config.max_time_s and world == 1 else None
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(config.warmup_steps, config.epochs * steps_per_epoch, budget_used))
    noise = torch.Generator(device=device).manual_seed(config.seed + 1 + rank)
    loss_fn = VAELoss(config.recon, config.ssim_weight, config.free_bits)
    chain = build_augment(prob=config.augment_prob, artifacts=False)  # artifacts: restoration's job
    use_amp = config.amp and device.type == "cuda"

    start, step, history = 0, 0, []
    best = {"epoch": 0, "val_ssim": -math.inf}
    bad_epochs = 0
    last_path = checkpoint_dir / LAST
    if resume and last_path.exists():
        state = load_checkpoint(last_path, map_location=device)
        if state["hparams"] != model.hparams():
            raise ValueError(
                f"{last_path} holds a model with {state['hparams']}, not {model.hparams()}; "
                "use another checkpoint folder or resume=False"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        noise_states = state["noise_rng"]
        noise.set_state(noise_states[rank] if isinstance(noise_states, list) else noise_states)
        start, step, history = state["epoch"], state["step"], list(state["history"])
        best, bad_epochs = dict(state["best"]), state["bad_epochs"]
        log.info("resuming from %s after epoch %d", last_path, start)
    result = TrainResult(epochs_run=start, best_epoch=best["epoch"], best_metrics={}, history=history)
    t0 = time.perf_counter()  # the budget counts from here (after any resume's loading)
    net.train()
    for epoch in range(start, config.epochs):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=(not progress or rank > 0) or None, leave=False)
        for b in bar:
            chunk = order[b * global_batch : (b + 1) * global_batch]
            idx = chunk[rank::world] if len(chunk) >= world else chunk
            x_in, target = training_pair(train, idx, epoch, config, chain)
            x_in = x_in.to(device).contiguous(memory_format=fmt)
            x = target.to(device).contiguous(memory_format=fmt)
            w = kl_weight(step, config.beta, config.kl_schedule, config.kl_warmup_steps, config.kl_cycle_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                recon, mu, logvar = net(x_in, generator=noise)
            losses = loss_fn(recon.float(), x, mu, logvar, w)
            if not torch.isfinite(losses["loss"]):
                raise NonFiniteLossError(
                    epoch + 1, b + 1, last_path if last_path.exists() else None,
                    {k: float(v.detach()) for k, v in losses.items()},
                )
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.4f}", kl=f"{sums['kl'] / (b + 1):.1f}")
        stop = torch.zeros(1)
        # every rank validates (on the whole set): MONAI's metrics gather across ranks when a
        # process group exists, so a rank-0-only evaluation would deadlock the others
        scores = evaluate(model, val, config.batch_size, device)
        if rank == 0:
            metrics = {f"train_{k}": v / steps_per_epoch for k, v in sums.items()}
            metrics.update(scores)
            metrics.update(epoch=epoch + 1, kl_weight=w, lr=sched.get_last_lr()[0], elapsed_s=time.perf_counter() - t0)
            history.append(metrics)
            log.info("epoch %d/%d: loss %.4f, val SSIM %.3f, val PSNR %.2f dB", epoch + 1, config.epochs,
                     metrics["train_loss"], metrics["val_ssim"], metrics["val_psnr"])
            if metrics["val_ssim"] > best["val_ssim"] + config.min_delta:
                best, bad_epochs = {"epoch": epoch + 1, "val_ssim": metrics["val_ssim"]}, 0
                save_checkpoint(checkpoint_dir / BEST, {"model": model.state_dict(), "hparams": model.hparams(),
                                                        "config": config.to_dict(), "metrics": metrics})
            else:
                bad_epochs += 1
            save_checkpoint(last_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "noise_rng": _gather_states(noise, world), "epoch": epoch + 1, "step": step, "history": history,
                "best": best, "bad_epochs": bad_epochs, "hparams": model.hparams(), "config": config.to_dict(),
            })
            for cb in callbacks:
                cb.on_epoch_end(epoch + 1, metrics, model)
            over_time = config.max_time_s is not None and time.perf_counter() - t0 >= config.max_time_s
            stop[0] = float(bad_epochs >= config.patience or over_time)
        elif world > 1:
            _gather_states(noise, world)
        if world > 1:
            dist.broadcast(stop, src=0)
        result.epochs_run = epoch + 1
        if stop.item():
            result.stopped_early = True
            break
    result.best_epoch = best["epoch"]
    result.best_metrics = next((h for h in history if h["epoch"] == best["epoch"]), {})
    result.history = history
    result.last_checkpoint = last_path if last_path.exists() else None
    result.best_checkpoint = checkpoint_dir / BEST if (checkpoint_dir / BEST).exists() else None
    return result


def _gather_states(noise: torch.Generator, world: int):
    """Every rank's noise-generator state (rank 0 receives them all, for the checkpoint)."""
    state = noise.get_state()
    if world == 1:
        return state
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.empty_like(state, device=on) for _ in range(world)]
    dist.all_gather(gathered, state.to(on))
    return [g.cpu() for g in gathered]


def load_model(path: Path, map_location: str | torch.device = "cpu") -> VAE3D:
    """Rebuild a model from ``best.pt``/``last.pt`` (weights_only loading)."""
    state = load_checkpoint(path, map_location)
    model = VAE3D(**state["hparams"])
    model.load_state_dict(state["model"])
    return model.eval()
