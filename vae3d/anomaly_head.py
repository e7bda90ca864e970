"""A discriminative anomaly head: a small 3D U-Net (MONAI's ``BasicUNet``) that reads a scan and
its restoration and segments what the restorer changed because it was abnormal (DRAEM, Zavrtanik
et al. ICCV 2021; synthetic-anomaly training as in the MOOD challenge's winners, e.g. Tan et al.'s
foreign patch interpolation).

The restoration residual alone also lights up healthy anatomy that is hard to restore (cortex,
ventricle borders). The head learns, from scans with synthetic anomalies and their restorations,
which residuals come from an anomaly. Its anomalies are made here, by a generator unlike the
benchmark's lesions (``vae3d.sample_data.lesions``): blobs built from a few overlapping Gaussian
bumps, filled with a shifted patch of another subject's scan, a textured multiplicative intensity
change, or a flat level. The evaluation's lesions (irregular ellipsoids with an additive contrast)
are never seen in training. A head may also read the residual normalised by healthy scans (three
input channels); the shipped head does not, since that was no better (BENCHMARKS.md, "Anomaly
detection: a head that reads the normalised residual"). A head may read the residual mirrored left
to right as well (``mirror``): a lesion lies on one side, while much of what the restorer gets wrong
on healthy anatomy (the frontal poles, the ventricles' horns) it gets wrong on both (BENCHMARKS.md,
"Anomaly detection: training the head", the mirrored residual). Tensors, arrays and primitives in and out.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.nets import BasicUNet
from scipy.ndimage import binary_dilation, gaussian_filter

from vae3d.config import LEFT_RIGHT

FEATURES = (16, 16, 32, 64, 128, 16)  # BasicUNet's widths: 1.4 M parameters
BRAIN = 0.3  # where anomalies are centred: intensity above this (white and grey matter)
# what the head learns to mark and not to mark (BENCHMARKS.md, "Anomaly detection: training the head"):
LABEL_CHANGE = 0.04  # a target: where an anomaly changed the scan by more than this (1-voxel smoothing)
HARD_SHARE = 0.3  # of training crops centred on a scan's largest restoration errors away from any anomaly
HARD_QUANTILE = 0.998  # "largest": above this quantile of the smoothed |residual| in the brain


def build_head(features: tuple[int, ...] = FEATURES, in_channels: int = 2, mirror: bool = False) -> BasicUNet:
    """The head: (B, C, S, S, S) ``head_inputs`` in (``in_channels`` C = 2: the scan and its residual;
    3: and the normalised residual; with ``mirror``, one more: the residual mirrored left to right),
    (B, 1, S, S, S) logits out (S >= 32: four halvings). ``head.features``, ``head.in_channels`` and
    ``head.mirror`` keep what rebuilds it from stored weights."""
    head = BasicUNet(spatial_dims=3, in_channels=in_channels + bool(mirror), out_channels=1,
                     features=tuple(features))
    head.features = tuple(int(f) for f in features)
    head.in_channels = int(in_channels)
    head.mirror = bool(mirror)
    return head


def head_inputs(x: torch.Tensor, recon: torch.Tensor, z: torch.Tensor | None = None,
                mirror: bool = False) -> torch.Tensor:
    """The head's input channels, from whole (B, 1, S, S, S) volumes: the scan, its restoration residual
    ``x - recon``, when given the residual normalised by healthy residuals ``z`` (clipped to +-10), and
    with ``mirror`` the residual mirrored left to right (``vae3d.config.LEFT_RIGHT``; a crop of these
    channels flipped left to right is the mirrored scan's crop at the mirrored place, so training may flip)."""
    residual = x.float() - recon.float()
    parts = [x.float(), residual] + ([] if z is None else [z.float().clamp(-10, 10)])
    return torch.cat(parts + ([residual.flip(LEFT_RIGHT)] if mirror else []), 1)


def _blob(shape: tuple[int, ...], centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A soft blob in [0, 1]: the union of 1-4 Gaussian bumps scattered around ``centre``."""
    grid = np.indices(shape, dtype=np.float32)
    w = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 5))):
        c = centre + rng.normal(0, radius / 2, 3)
        r = radius * rng.uniform(0.5, 1.0, 3)
        w = np.maximum(w, np.exp(-sum(((grid[i] - c[i]) / r[i]) ** 2 for i in range(3))))
    return np.clip((w - 0.3) / 0.4, 0, 1).astype(np.float32)


def synthetic_anomalies(x: np.ndarray, other: np.ndarray, rng: np.random.Generator,
                        radius_range: tuple[float, float] = (1.5, 8.0),
                        label_change: float = LABEL_CHANGE) -> tuple[np.ndarray, np.ndarray]:
    """1-3 synthetic anomalies in ``x`` (S, S, S) in [0, 1]; ``other`` is another subject's scan
    (the source of foreign patches). Returns (image, bool label: where the blob's core changed the
    scan by more than ``label_change`` after 1-voxel smoothing, so an invisible change is not a
    target)."""
    out = x.astype(np.float32, copy=True)
    label = np.zeros(x.shape, dtype=bool)
    brain = np.argwhere(x > BRAIN)
    if len(brain) == 0:
        return out, label
    for _ in range(int(rng.integers(1, 4))):
        w = _blob(x.shape, brain[rng.integers(len(brain))].astype(np.float32), rng.uniform(*radius_range), rng)
        kind = int(rng.integers(3))
        if kind == 0:  # a foreign patch: another subject's scan, shifted, blended in
            src = np.roll(other, tuple(int(s) for s in rng.integers(-12, 13, 3)), axis=(0, 1, 2))
            a = rng.uniform(0.4, 1.0)
            new = (1 - a * w) * out + a * w * src
        elif kind == 1:  # a textured multiplicative change, brighter or darker
            tex = gaussian_filter(rng.standard_normal(x.shape).astype(np.float32), 1.0)
            tex /= tex.std() + 1e-6
            new = out * (1 + w * rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.7) * (1 + 0.3 * tex))
        else:  # a flat level: the tissue's texture gone
            new = (1 - w) * out + w * rng.uniform(0.0, 1.0)
        label |= (w > 0.5) & (gaussian_filter(np.abs(new - out), 1.0) > label_change)
        out = np.clip(new, 0, 1).astype(np.float32)
    return out, label


def training_set(volumes: torch.Tensor, copies: int, seed: int,
                 label_change: float = LABEL_CHANGE) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` anomalous copies of each of ``volumes`` (N, 1, S, S, S), plus the clean volumes
    (label all zero): (images, labels), (N * (copies + 1), 1, S, S, S)."""
    rng = np.random.default_rng(seed)
    n, images, labels = len(volumes), [], []
    for _ in range(copies):
        for i in range(n):
            j = (i + 1 + int(rng.integers(max(1, n - 1)))) % n if n > 1 else i
            image, label = synthetic_anomalies(volumes[i, 0].numpy(), volumes[j, 0].numpy(), rng,
                                               label_change=label_change)
            images.append(image)
            labels.append(label)
    if not images:
        return volumes.float(), torch.zeros_like(volumes, dtype=torch.float32)
    return (torch.cat([torch.from_numpy(np.stack(images))[:, None], volumes.float()]),
            torch.cat([torch.from_numpy(np.stack(labels))[:, None].float(), torch.zeros_like(volumes).float()]))


def hard_negatives(inputs: torch.Tensor, labels: torch.Tensor, quantile: float = HARD_QUANTILE) -> list:
    """Per volume of ``inputs`` (``head_inputs``: the scan, its residual), the voxels (K, 3) where
    the restoration's error (|residual|, 1-voxel smoothing) is above its ``quantile`` in the brain,
    3 voxels or more from any anomaly: the healthy places the restorer gets most wrong, which an
    anomaly map must not mark. None where the brain holds no such voxel."""
    out = []
    for x, label in zip(inputs.numpy(), labels.numpy(), strict=True):
        error = gaussian_filter(np.abs(x[1]), 1.0)
        allowed = (x[0] > BRAIN) & ~binary_dilation(label[0] > 0, iterations=3)
        if not allowed.any():
            out.append(None)
            continue
        out.append(torch.from_numpy(np.argwhere(allowed & (error >= np.quantile(error[allowed], quantile)))))
    return out


def _crops(inputs: torch.Tensor, labels: torch.Tensor, crop: int, batch: int, g: torch.Generator,
           hard: list | None = None, hard_share: float = 0.0):
    """A batch of ``crop``^3 crops: ``hard_share`` around one of a volume's ``hard`` negatives,
    otherwise 70% around an anomaly voxel (when the volume has one) and the rest around a brain
    voxel; a random left-right flip."""
    size = inputs.shape[-1]
    crop = min(crop, size)
    xs, ys = [], []
    for i in torch.randint(len(inputs), (batch,), generator=g).tolist():
        pos = torch.nonzero(labels[i, 0])
        if hard is not None and float(torch.rand(1, generator=g)) < hard_share and hard[i] is not None:
            pos = hard[i]
        elif len(pos) == 0 or float(torch.rand(1, generator=g)) >= 0.7:
            pos = torch.nonzero(inputs[i, 0] > BRAIN)
        if len(pos) == 0:
            pos = torch.nonzero(torch.ones_like(inputs[i, 0]))
        c = pos[int(torch.randint(len(pos), (1,), generator=g))] + torch.randint(-crop // 3, crop // 3 + 1, (3,),
                                                                                  generator=g)
        s = [min(max(int(v) - crop // 2, 0), size - crop) for v in c]
        sl = (slice(None), slice(s[0], s[0] + crop), slice(s[1], s[1] + crop), slice(s[2], s[2] + crop))
        xs.append(inputs[i][sl])
        ys.append(labels[i][sl])
    x, y = torch.stack(xs), torch.stack(ys)
    if float(torch.rand(1, generator=g)) < 0.5:
        x, y = x.flip(2), y.flip(2)
    return x, y


def fit_head(head: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int, seed: int,
             crop: int = 32, batch: int = 8, lr: float = 2e-3, progress=None,
             hard_share: float = HARD_SHARE) -> list[float]:
    """Train ``head`` on crops of ``inputs`` (``head_inputs`` of the anomalous scans and their
    restorations) against ``labels``: binary cross-entropy + Dice, AdamW, ``steps`` steps drawn
    from ``seed``; ``hard_share`` of the crops around the restorer's largest errors away from any
    anomaly (``hard_negatives``). ``progress(step, loss)`` is called every 50 steps. Returns the losses."""
    hard = hard_negatives(inputs, labels) if hard_share > 0 else None
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(1, steps), pct_start=0.05)
    dice = DiceLoss(sigmoid=True)
    head.train()
    losses = []
    for step in range(steps):
        x, y = _crops(inputs, labels, crop, batch, g, hard, hard_share)
        logit = head(x)
        loss = F.binary_cross_entropy_with_logits(logit, y) + dice(logit, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1, float(np.mean(losses[-50:])))
    head.eval()
    return losses


@torch.no_grad()
def head_map(head: torch.nn.Module, x: torch.Tensor, recon: torch.Tensor, z: torch.Tensor | None = None,
             batch_size: int = 4, temperature: float = 1.0) -> torch.Tensor:
    """The head's anomaly probability per voxel, (B, 1, S, S, S) in [0, 1], from its logits divided by
    ``temperature`` (above 1: less saturated); ``z``, the normalised residual, for a head that reads it
    (``in_channels`` 3). A ``mirror`` head is given the mirrored residual (``head_inputs``)."""
    p = next(head.parameters())
    if getattr(head, "in_channels", 2) == 2:
        z = None
    elif z is None:
        raise ValueError("this anomaly head reads the normalised residual: pass z")
    zs = z.split(batch_size) if z is not None else [None] * len(x.split(batch_size))
    mirror = getattr(head, "mirror", False)
    outs = [torch.sigmoid(head(head_inputs(a, b, c, mirror).to(p.device, p.dtype)) / temperature).float().cpu()
            for a, b, c in zip(x.split(batch_size), recon.split(batch_size), zs, strict=True)]
    return torch.cat(outs)
