"""Anomaly detection on synthetic lesions: voxel AUPRC, best Dice, volume AUROC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice
from sklearn.metrics import average_precision_score

from vae3d.sample_data.lesions import insert_lesions
from vae3d.seeding import derive_seed

#: how ``volume_auroc_interval`` is made, as results record it
AUROC_INTERVAL = "Newcombe's score interval, 95%"
#: the benchmark's lesions: 1-3 per scan, irregular, hyper- or hypo-intense, of several sizes and contrasts
LESIONS = {"n_range": (1, 3), "radius_range": (1.5, 5.0), "contrast_range": (0.2, 0.6), "irregular": 0.5}
#: lesioned copies of each test scan ``vae3d evaluate`` scores: with one, 14 lesioned scans decide the volume
#: AUROC, and the few lesions one draw puts into them move it by 0.04 a scan; three draws (as the development
#: benchmarks make) leave the healthy test scans as the only small side
COPIES = 3


def lesioned_draws(volumes: torch.Tensor, seeds: Sequence[int], lesions: dict | None = None):
    """Each volume with lesions inside the brain (``LESIONS`` by default; ``insert_lesions``'s
    arguments), once per seed in ``seeds``, each draw's lesions from its own seed. Returns (lesioned
    (len(seeds)*B,1,D,H,W), masks (len(seeds)*B,1,D,H,W) uint8), draw by draw."""
    if not len(seeds):
        raise ValueError("lesioned copies need at least one seed, got none")
    out, masks = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for v in volumes:
            arr = v[0].numpy()
            brain = arr > 0.35
            image, mask, _ = insert_lesions(arr, brain, rng, **(lesions or LESIONS))
            out.append(np.clip(image, 0, 1))
            masks.append(mask)
    return torch.from_numpy(np.stack(out)[:, None]).float(), torch.from_numpy(np.stack(masks)[:, None])


def lesioned_copies(volumes: torch.Tensor, seed: int, lesions: dict | None = None, copies: int = 1):
    """``lesioned_draws`` ``copies`` times under one ``seed``: (lesioned (copies*B,1,D,H,W), masks), copy
    by copy. The first B are the one copy ``copies=1`` draws, so a result with more copies extends one
    with fewer."""
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    return lesioned_draws(volumes, [seed, *(derive_seed(seed, "lesioned-copy", k) for k in range(1, copies))],
                          lesions)


def atlas_deviation(volumes: torch.Tensor, healthy_mean: torch.Tensor, mask_threshold: float = 0.05) -> torch.Tensor:
    """The classical baseline: |x - voxel-wise mean of healthy training volumes| in the head."""
    dev = (volumes - healthy_mean).abs()
    return dev * (volumes > mask_threshold)


def voxel_metrics(maps: torch.Tensor, masks: torch.Tensor, max_voxels: int = 2_000_000) -> dict[str, float]:
    """Voxel AUPRC over the voxels a map scores (nonzero) and every lesion voxel, and the best Dice
    over thresholds. A lesion voxel outside a map's mask counts as a miss (score 0), not as absent."""
    head = (maps > 0) | masks.bool()
    y = masks[head].numpy().astype(np.uint8)
    s = maps[head].numpy()
    if len(y) > max_voxels:
        idx = np.random.default_rng(0).choice(len(y), max_voxels, replace=False)
        y, s = y[idx], s[idx]
    auprc = float(average_precision_score(y, s)) if y.any() else float("nan")
    best = 0.0
    for q in np.linspace(0.80, 0.999, 25):
        thr = float(np.quantile(s, q))
        dice = compute_dice((maps > thr).float(), masks.float(), include_background=True, ignore_empty=True)
        best = max(best, float(torch.nan_to_num(dice).mean()))
    return {"voxel_auprc": auprc, "best_dice": best}


def false_positive_rate(healthy_scores: np.ndarray, threshold: float) -> float:
    """The share of healthy scans whose score is above ``threshold`` (flagged)."""
    return float(np.mean(np.asarray(healthy_scores) > threshold))


def volume_auroc(healthy_scores: np.ndarray, lesion_scores: np.ndarray) -> float:
    """The AUROC of lesioned against healthy scores (Mann-Whitney: the share of (lesioned, healthy)
    pairs in order, ties counting half)."""
    h, les = np.asarray(healthy_scores, dtype=np.float64), np.asarray(lesion_scores, dtype=np.float64)
    if not len(h) or not len(les):
        raise ValueError(f"a volume AUROC needs healthy and lesioned scores, got {len(h)} and {len(les)}")
    return float((les[:, None] > h).mean() + 0.5 * (les[:, None] == h).mean())


def volume_auroc_interval(healthy_scores: np.ndarray, lesion_scores: np.ndarray,
                          confidence: float = 0.95, n_lesioned: int | None = None) -> tuple[float, float]:
    """A ``confidence`` interval of ``volume_auroc``: Newcombe's score interval (Stat. Med. 2006, 25:559,
    method 5), the AUROCs ``t`` whose distance from the measured one is within ``z`` standard errors
    at ``t`` itself, with the Hanley-McNeil variance at ``t`` and ``N* = (m + n) / 2 - 1`` for both
    sample sizes. Unlike a bootstrap, it does not collapse when every lesioned scan ranks above every
    healthy one: 14 + 14 scans so ordered give about [0.86, 1], 3 + 3 about [0.50, 1]. With a dozen
    scans of each, one lesioned scan that ranks among the healthy ones moves the AUROC by about 0.04.
    NaN, NaN with no scan of either kind. ``n_lesioned``: how many independent lesioned scans the
    scores count as (default: one each); lesioned copies of the same scans share their anatomy, so
    ``vae3d evaluate`` counts ``COPIES`` copies of 14 scans as 14, a wider interval than 42 would give.
    Hand-written: neither SciPy nor scikit-learn has an AUROC interval."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    m, n = len(healthy_scores), len(lesion_scores) if n_lesioned is None else min(n_lesioned, len(lesion_scores))
    if not m or not n:
        return float("nan"), float("nan")
    value = volume_auroc(healthy_scores, lesion_scores)
    z2, n_star = norm.ppf(0.5 + confidence / 2) ** 2, (m + n) / 2 - 1

    def gap(t: float) -> float:  # (t - value)^2 - z^2 var(t): negative inside the interval
        var = t * (1 - t) * (1 + n_star * ((1 - t) / (2 - t) + t / (1 + t))) / (m * n)
        return (t - value) ** 2 - z2 * var

    eps = 1e-12  # inside (0, 1): at 0 and 1 the variance, and so the gap at the measured value, is 0
    low = brentq(gap, 0.0, min(value, 1 - eps)) if value > 0 else 0.0
    high = brentq(gap, max(value, eps), 1.0) if value < 1 else 1.0
    return float(low), float(high)
