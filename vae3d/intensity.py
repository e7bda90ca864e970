"""Intensity calibration of synthetic scans: one piecewise-linear map of intensities, from the
prior's samples onto the training scans (landmarks as in Nyúl & Udupa 1999, "On standardizing
the MR image intensity scale").

A decoded prior sample is blurrier than a real scan, so more of its brain voxels sit between
tissue intensities (partial volume): the samples have too much CSF-like intensity and too little
white matter (BENCHMARKS.md, "Latent priors"). That is a bias of the sampler, the same for every
sample. So the map is fitted once, at registration: the percentiles of the in-brain intensities
of a batch of samples, pooled, against those of the training scans, pooled. Every sample then
goes through the same monotone map: the sampler's bias is removed, while each sample keeps its
own anatomy and its own tissue proportions (a per-scan histogram matching would force every
sample to the same proportions). Background (at or below ``BRAIN``) is left as it is.

Hand-written (a dozen lines of ``np.interp``): TorchIO's ``HistogramStandardization`` matches each
image to a fixed 0-100 scale, per image.
"""

from __future__ import annotations

import numpy as np
import torch

PERCENTILES = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.0)
BRAIN = 0.1  # intensities above this are brain (as the tissue bands of ``vae3d.evaluation.synthesis``)


def landmarks(volumes: torch.Tensor, threshold: float = BRAIN) -> np.ndarray:
    """The pooled in-brain intensity percentiles (``PERCENTILES``) of ``volumes`` (B, 1, S, S, S)."""
    values = volumes.detach().float().cpu().numpy().ravel()
    values = values[values > threshold]
    if values.size == 0:
        raise ValueError(f"no voxel above {threshold}: nothing to fit intensity landmarks to")
    return np.percentile(values, PERCENTILES)


def fit_map(samples: torch.Tensor, real: torch.Tensor, threshold: float = BRAIN) -> torch.Tensor:
    """The map from ``samples``' intensities onto ``real``'s: (2, L + 2) knots, the samples'
    landmarks over the real scans' (``threshold`` and 1 map to themselves)."""
    ends = lambda lm: np.concatenate([[threshold], lm, [1.0]])
    source = ends(landmarks(samples, threshold))
    source = np.maximum.accumulate(source + np.arange(len(source)) * 1e-6)  # strictly increasing knots
    return torch.tensor(np.stack([source, ends(landmarks(real, threshold))]), dtype=torch.float32)


def apply_map(volumes: torch.Tensor, knots: torch.Tensor, threshold: float = BRAIN) -> torch.Tensor:
    """``volumes`` (any shape) with every intensity above ``threshold`` mapped through ``knots``
    (``fit_map``), piecewise-linearly; on ``volumes``' device and dtype."""
    v = volumes.detach().float().cpu().numpy()
    brain = v > threshold
    out = v.copy()
    out[brain] = np.interp(v[brain], knots[0].double().numpy(), knots[1].double().numpy())
    return torch.from_numpy(out).to(volumes.device, volumes.dtype)


def as_state(knots: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """A prior's state entry for its map (none without one)."""
    return {} if knots is None else {"intensity": knots.float()}
