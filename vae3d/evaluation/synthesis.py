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


def _ssim_matrix(queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    return np.array([[_ssim(q, r) for r in references] for q in queries])


def _distinctness(sims: np.ndarray, k: int) -> np.ndarray:
    """Per row: the dissimilarity (1 - SSIM) to the nearest reference over the mean dissimilarity
    to the ``k`` next nearest. Near 0: one reference stands out (a copy); near 1: as close to
    several references as to the nearest (a typical or averaged scan)."""
    d = np.sort(1.0 - sims, axis=1)
    k = max(1, min(k, d.shape[1] - 1))
    return d[:, 0] / np.maximum(d[:, 1 : 1 + k].mean(1), 1e-9) if d.shape[1] > 1 else np.zeros(len(d))


def memorisation_audit(synthetic: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor, ratio: float = 0.5,
                       k: int = 5) -> dict:
    """Flag samples that copy a training scan: closer (SSIM) to a training scan than any held-out
    real scan is, *and* that close to one scan alone: its dissimilarity to the nearest is under
    ``ratio`` times the mean to the ``k`` next nearest, and under every held-out scan's such
    ratio (Carlini et al. 2023, "Extracting training data from diffusion models", take such a
    relative distance).

    A held-out scan's nearest training scan tells how close an unseen real brain gets to the
    training set. Closeness alone also flags a smooth average of many scans (it resembles every
    training scan a little more than a sharp real one does, and no one scan more than the
    others): the second test keeps those and flags what one scan explains.
    """
    syn, real = _ssim_matrix(synthetic, train), _ssim_matrix(heldout, train)
    syn_nn, real_nn = syn.max(1), real.max(1)
    limit = float(real_nn.max())
    syn_ratio, real_ratio = _distinctness(syn, k), _distinctness(real, k)
    close, distinct_limit = syn_nn > limit, min(ratio, float(real_ratio.min()))
    flagged = [int(i) for i in np.flatnonzero(close & (syn_ratio < distinct_limit))]
    return {"synthetic_nn_ssim_mean": float(syn_nn.mean()), "synthetic_nn_ssim_max": float(syn_nn.max()),
            "heldout_nn_ssim_max": limit, "closer_than_heldout": int(close.sum()),
            "synthetic_distinctness_min": float(syn_ratio.min()), "heldout_distinctness_min": float(real_ratio.min()),
            "distinctness_limit": distinct_limit, "flagged": flagged, "n_flagged": len(flagged)}
