"""Synthesis quality: intensity histograms, tissue volumes, diversity (SSIM and MONAI's
multi-scale SSIM), MONAI's MMD, and the memorisation audit. The classifier two-sample test is in
``vae3d.evaluation.c2st``."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from vae3d.metrics import ssim_per_volume

TISSUE_BANDS = {"csf_like": (0.1, 0.4), "gm_like": (0.4, 0.7), "wm_like": (0.7, 1.01)}


def brain_values(volumes: torch.Tensor, threshold: float = 0.1) -> np.ndarray:
    v = volumes.numpy().ravel()
    return v[v > threshold]


def histogram_distance(real: torch.Tensor, synthetic: torch.Tensor) -> float:
    """Wasserstein-1 distance between in-brain intensity distributions."""
    return float(wasserstein_distance(brain_values(real), brain_values(synthetic)))


def tissue_fractions(volumes: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per band of intensity: (mean, std) over volumes of the fraction of brain voxels in it."""
    out = {}
    for name, (lo, hi) in TISSUE_BANDS.items():
        fr = []
        for v in volumes:
            vals = brain_values(v[None])
            fr.append(float(((vals >= lo) & (vals < hi)).mean()) if vals.size else 0.0)
        out[name] = (float(np.mean(fr)), float(np.std(fr)))
    return out


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """MONAI's SSIM of two (1, D, H, W) volumes, through the separable form (the audit makes
    thousands of these; ``ssim_per_volume`` gives the same numbers)."""
    return float(ssim_per_volume(a[None].clamp(0, 1), b[None].clamp(0, 1))[0])


def diversity(synthetic: torch.Tensor, max_pairs: int = 45) -> float:
    """Mean pairwise SSIM among synthetic volumes (lower = more diverse)."""
    pairs = list(itertools.combinations(range(len(synthetic)), 2))[:max_pairs]
    return float(np.mean([_ssim(synthetic[i], synthetic[j]) for i, j in pairs])) if pairs else float("nan")


def ms_ssim_diversity(volumes: torch.Tensor, max_pairs: int = 45) -> float:
    """Mean pairwise multi-scale SSIM (MONAI's ``MultiScaleSSIMMetric``) among ``volumes`` (lower =
    more diverse). The defaults (5 scales, an 11-voxel kernel) need 176 voxels an edge: here 3
    scales and a 7-voxel kernel (more than 24 voxels an edge), fewer on smaller volumes."""
    from monai.metrics import MultiScaleSSIMMetric

    size = min(volumes.shape[2:])
    weights = {3: (0.3, 0.4, 0.3), 2: (0.5, 0.5), 1: (1.0,)}
    scales, kernel = next(((n, k) for n in (3, 2, 1) for k in (7, 5, 3) if size > (k - 1) * 2 ** (n - 1)), (1, 3))
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel, weights=weights[scales])
    pairs = list(itertools.combinations(range(len(volumes)), 2))[:max_pairs]
    if not pairs:
        return float("nan")
    a = torch.stack([volumes[i] for i, _ in pairs]).clamp(0, 1).float()
    b = torch.stack([volumes[j] for _, j in pairs]).clamp(0, 1).float()
    return float(metric(a, b).mean())


def mmd(real: torch.Tensor, synthetic: torch.Tensor, size: int = 16) -> float:
    """MONAI's ``MMDMetric`` (linear kernel) between equal numbers of real and synthetic volumes,
    each average-pooled to ``size``^3 (the distribution of coarse anatomy, not of voxel noise)."""
    from monai.metrics import MMDMetric

    n = min(len(real), len(synthetic))
    pool = lambda v: torch.nn.functional.adaptive_avg_pool3d(v[:n].float(), size)
    return float(MMDMetric()(pool(synthetic), pool(real)))


def nearest_ssim(queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    return np.array([max(_ssim(q, r) for r in references) for q in queries])


def memorisation_audit(synthetic: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor) -> dict:
    """Flag samples closer (SSIM) to a training scan than any held-out real scan is.

    A held-out scan's nearest training scan tells how close an unseen real brain gets to the
    training set; a synthetic volume that gets closer than all of them may copy a scan.
    """
    syn_nn = nearest_ssim(synthetic, train)
    real_nn = nearest_ssim(heldout, train)
    limit = float(real_nn.max())
    flagged = [int(i) for i in np.flatnonzero(syn_nn > limit)]
    return {"synthetic_nn_ssim_mean": float(syn_nn.mean()), "synthetic_nn_ssim_max": float(syn_nn.max()),
            "heldout_nn_ssim_max": limit, "flagged": flagged, "n_flagged": len(flagged)}
