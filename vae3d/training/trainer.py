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

from vae3d.config import TrainConfig
from vae3d.corruption import corrupt
from vae3d.device import resolve_device
from vae3d.files import remove_stale_temporaries
from vae3d.losses import VAELoss, kl_weight
from vae3d.metrics import psnr_ssim, ssim_per_volume
from vae3d.model import VAE3D
from vae3d.preprocessing.augment import augment, build_augment
from vae3d.seeding import derive_seed
from vae3d.training.state import BEST, LAST, Optimisation, TrainState, load_state, save_best, save_state

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
def validate(model: VAE3D, volumes: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
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


def _batch(train: torch.Tensor, idx: torch.Tensor, epoch: int, cfg: TrainConfig, chain) -> torch.Tensor:
    if cfg.augment_prob <= 0:
        return train[idx]
    return torch.stack(
        [augment(chain, train[i], seed=derive_seed(cfg.seed, "augment", epoch, int(i))) for i in idx.tolist()]
    )


def training_pair(train: torch.Tensor, idx: torch.Tensor, epoch: int, cfg: TrainConfig,
                  chain) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder input, loss target) of one batch: the target is the clean (geometrically
    augmented) volume; the input is a copy corrupted with each sample's own seeded draw."""
    target = _batch(train, idx, epoch, cfg, chain)
    if cfg.restoration.prob <= 0:
        return target, target
    seeds = [derive_seed(cfg.seed, "corrupt", epoch, int(i)) for i in idx.tolist()]
    return torch.stack([corrupt(v, cfg.restoration, s) for v, s in zip(target, seeds, strict=True)]), target


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class _Run:
    """What every step of one ``fit`` call shares."""

    model: VAE3D
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: Optimisation
    loss_fn: VAELoss
    chain: object  # the augmentation chain
    config: TrainConfig
    device: torch.device
    fmt: torch.memory_format
    rank: int
    world: int
    checkpoint_dir: Path
    steps_per_epoch: int
    t0: float = 0.0  # when the time budget started

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / LAST


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
    run = _setup(model, config, Path(checkpoint_dir), len(train))
    state = TrainState()
    if resume and run.last.exists():
        state = load_state(run.last, model, run.opt, run.rank, run.device)
        log.info("resuming from %s after epoch %d", run.last, state.epoch)
    result = TrainResult(epochs_run=state.epoch, best_epoch=state.best["epoch"], best_metrics={},
                         history=state.history)
    run.t0 = time.perf_counter()  # the budget counts from here (after any resume's loading)
    run.net.train()
    result.stopped_early = state.stopped  # a run that stopped before it was killed trains no further
    for epoch in range(state.epoch, config.epochs if not state.stopped else state.epoch):
        sums, w = train_epoch(run, train, epoch, state, progress)
        # every rank validates (on the whole set): MONAI's metrics gather across ranks when a
        # process group exists, so a rank-0-only evaluation would deadlock the others
        scores = validate(model, val, config.batch_size, run.device)
        stop = _end_epoch(run, state, epoch, sums, scores, w, callbacks)
        result.epochs_run = epoch + 1
        if stop:
            result.stopped_early = True
            break
    result.best_epoch = state.best["epoch"]
    result.best_metrics = next((h for h in state.history if h["epoch"] == state.best["epoch"]), {})
    result.history = state.history
    result.last_checkpoint = run.last if run.last.exists() else None
    best = run.checkpoint_dir / BEST
    result.best_checkpoint = best if best.exists() else None
    return result


def _setup(model: VAE3D, config: TrainConfig, checkpoint_dir: Path, n_train: int) -> _Run:
    """Device, layout, optimiser, schedule, noise and loss of a run; a killed run's temp files removed."""
    rank, world = _rank_world()
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
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / (config.batch_size * world))
    run = _Run(model, net, None, VAELoss(config.recon, config.ssim_weight, config.free_bits),
               build_augment(prob=config.augment_prob, artifacts=False),  # artifacts: restoration's job
               config, device, fmt, rank, world, checkpoint_dir, steps_per_epoch, time.perf_counter())
    # a time budget shapes the schedule on a single process; under DDP every rank must step
    # the same learning rate, so there the schedule follows the step count alone
    budget_used = ((lambda: (time.perf_counter() - run.t0) / config.max_time_s)
                   if config.max_time_s and world == 1 else None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(config.warmup_steps, config.epochs * steps_per_epoch, budget_used))
    noise = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "noise", rank))
    run.opt = Optimisation(opt, sched, noise)
    return run


def train_epoch(run: _Run, train: torch.Tensor, epoch: int, state: TrainState,
                progress: bool) -> tuple[dict[str, float], float]:
    """One pass over ``train`` in this epoch's seeded order. Returns (summed losses, last KL weight)."""
    cfg, global_batch = run.config, run.config.batch_size * run.world
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "order", epoch)))
    sums: dict[str, float] = {}
    w = 0.0
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=(not progress or run.rank > 0) or None, leave=False)
    for b in bar:
        chunk = order[b * global_batch : (b + 1) * global_batch]
        idx = chunk[run.rank :: run.world] if len(chunk) >= run.world else chunk
        x_in, target = training_pair(train, idx, epoch, cfg, run.chain)
        w = kl_weight(state.step, cfg.beta, cfg.kl_schedule, cfg.kl_warmup_steps, cfg.kl_cycle_steps)
        losses = train_step(run, x_in, target, w)
        if not math.isfinite(losses["loss"]):
            raise NonFiniteLossError(epoch + 1, b + 1, run.last if run.last.exists() else None, losses)
        state.step += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.4f}", kl=f"{sums['kl'] / (b + 1):.1f}")
    return sums, w


def train_step(run: _Run, x_in: torch.Tensor, target: torch.Tensor, kl_w: float) -> dict[str, float]:
    """One optimiser step on a batch (nothing is stepped when the loss is not finite)."""
    x_in = x_in.to(run.device).contiguous(memory_format=run.fmt)
    x = target.to(run.device).contiguous(memory_format=run.fmt)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.config.amp and run.device.type == "cuda"):
        recon, mu, logvar = run.net(x_in, generator=run.opt.noise)
    losses = run.loss_fn(recon.float(), x, mu, logvar, kl_w)
    if not torch.isfinite(losses["loss"]):
        return {k: float(v.detach()) for k, v in losses.items()}
    run.opt.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.opt.optimizer.step()
    run.opt.scheduler.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def _end_epoch(run: _Run, state: TrainState, epoch: int, sums: dict[str, float], scores: dict[str, float],
               kl_w: float, callbacks: Sequence[Callback]) -> bool:
    """Rank 0 records the epoch, saves ``best.pt``/``last.pt`` and calls the callbacks; every
    rank learns whether to stop (patience or time budget)."""
    cfg, stop = run.config, torch.zeros(1)
    if run.rank == 0:
        metrics = {f"train_{k}": v / run.steps_per_epoch for k, v in sums.items()}
        metrics.update(scores)
        metrics.update(epoch=epoch + 1, kl_weight=kl_w, lr=run.opt.scheduler.get_last_lr()[0],
                       elapsed_s=time.perf_counter() - run.t0)
        state.history.append(metrics)
        log.info("epoch %d/%d: loss %.4f, val SSIM %.3f, val PSNR %.2f dB", epoch + 1, cfg.epochs,
                 metrics["train_loss"], metrics["val_ssim"], metrics["val_psnr"])
        if metrics["val_ssim"] > state.best["val_ssim"] + cfg.min_delta:
            state.best, state.bad_epochs = {"epoch": epoch + 1, "val_ssim": metrics["val_ssim"]}, 0
            save_best(run.checkpoint_dir / BEST, run.model, cfg, metrics)
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        over_time = cfg.max_time_s is not None and time.perf_counter() - run.t0 >= cfg.max_time_s
        state.stopped = state.bad_epochs >= cfg.patience or over_time
        save_state(run.last, run.model, run.opt, _gather_states(run.opt.noise, run.world), state, cfg)
        for cb in callbacks:
            cb.on_epoch_end(epoch + 1, metrics, run.model)
        stop[0] = float(state.stopped)
    elif run.world > 1:
        _gather_states(run.opt.noise, run.world)
    if run.world > 1:
        dist.broadcast(stop, src=0)
    return bool(stop.item())


def _gather_states(noise: torch.Generator, world: int):
    """Every rank's noise-generator state (rank 0 receives them all, for the checkpoint)."""
    state = noise.get_state()
    if world == 1:
        return state
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.empty_like(state, device=on) for _ in range(world)]
    dist.all_gather(gathered, state.to(on))
    return [g.cpu() for g in gathered]
