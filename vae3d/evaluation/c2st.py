"""Classifier two-sample test (Lopez-Paz & Oquab, 2017): how well a small 3D CNN tells real scans
from synthetic ones on scans it was not trained on. 0.5 means it cannot; 1.0 means every
synthetic scan gives itself away."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _classifier() -> nn.Module:
    """Three strided conv blocks and a linear head on 32^3 inputs (about 20k parameters): big enough
    to see texture, blur, intensity and shape; small enough to train in seconds on a CPU."""
    block = lambda cin, cout: nn.Sequential(nn.Conv3d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(4, cout),
                                            nn.SiLU())
    return nn.Sequential(block(1, 8), block(8, 16), block(16, 32), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(32, 1))


def classifier_two_sample(real: torch.Tensor, synthetic: torch.Tensor, seed: int = 0, folds: int = 4,
                          steps: int = 150, size: int = 32) -> float:
    """Held-out accuracy of a CNN trained to tell ``real`` from ``synthetic`` (both (N, 1, S, S, S) in
    [0, 1], seen at ``size``^3, or at S^3 when smaller), by stratified ``folds``-fold
    cross-validation over equal numbers of each (the larger set is cut).

    Each fold trains a fresh classifier (``steps`` full-batch Adam steps, seeded) on the other
    folds and scores the held-out one; the accuracy is over every held-out scan.
    """
    n = min(len(real), len(synthetic))
    if n < folds:
        raise ValueError(f"the two-sample test needs at least {folds} scans of each kind, got {n}")
    x = torch.cat([real[:n], synthetic[:n]]).float()
    if x.shape[-1] > size:  # downsampled to ``size``; a smaller grid is kept (upsampling adds nothing but cost)
        x = F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    # stratified folds: each holds as many real as synthetic scans (unbalanced folds push a
    # classifier that learned nothing below 0.5, since training then leans the other way)
    rng = np.random.default_rng(seed)
    real_order, syn_order = rng.permutation(n), n + rng.permutation(n)
    correct = 0
    with torch.random.fork_rng():
        for k in range(folds):
            test = np.concatenate([real_order[k::folds], syn_order[k::folds]])
            train = np.setdiff1d(np.arange(2 * n), test)
            torch.manual_seed(seed + k)
            net = _classifier()
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            for _ in range(steps):
                loss = F.binary_cross_entropy_with_logits(net(x[train])[:, 0], y[train])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                correct += int(((net(x[test])[:, 0] > 0).float() == y[test]).sum())
    return correct / (2 * n)
