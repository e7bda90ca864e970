"""Restoration corruptions: seeded, input only, and their settings validated with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flows.settings import load_settings
from vae3d.config import RestorationConfig
from vae3d.corruption import corrupt, degrade_resolution
from vae3d.sample_data import phantom


def _vol(seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(phantom((24, 24, 24), seed=seed)[0][None] / 1.2).float().clamp(0, 1)


def test_corrupt_is_seeded_and_leaves_its_input_untouched():
    x = _vol()
    before = x.clone()
    cfg = RestorationConfig(prob=1.0, noise_prob=1.0, noise_std=(0.05, 0.1), bias_prob=1.0, gibbs_prob=1.0,
                            lowres_prob=1.0, coarse_prob=1.0)
    a, b, c = corrupt(x, cfg, seed=5), corrupt(x, cfg, seed=5), corrupt(x, cfg, seed=6)
    assert torch.equal(x, before)  # the clean volume (the loss target) is never modified
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a - x).abs().mean()) > 0.02
    # prob 0: a clean copy, not the same tensor
    clean = corrupt(x, RestorationConfig(prob=0.0), seed=5)
    assert torch.equal(clean, x) and clean.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("kind", ["noise", "bias", "gibbs", "lowres", "coarse"])
def test_each_corruption_alone_changes_the_volume(kind):
    x = _vol(1)
    probs = {f"{k}_prob": float(k == kind) for k in ("noise", "bias", "gibbs", "lowres", "coarse")}
    out = corrupt(x, RestorationConfig(prob=1.0, noise_std=(0.08, 0.1), **probs), seed=3)
    assert float((out - x).abs().max()) > 0.01, kind


def test_thick_slice_degradation_blurs_one_axis_only():
    x = torch.zeros(1, 16, 16, 16)
    x[:, 8, 8, 8] = 1.0
    out = degrade_resolution(x, (1.0, 1.0, 4.0))
    assert float(out[0, 8, 8].sum()) > 0 and torch.count_nonzero(out[0, 8, :, 8]) == 1
    assert torch.count_nonzero(out[0, 8, 8, :]) > 1


def test_restoration_settings_give_clear_errors(monkeypatch):
    with pytest.raises(ValidationError, match=r"noise_std=\[0.2, 0.1\].*0 <= low <= high"):
        RestorationConfig(noise_std=(0.2, 0.1))
    with pytest.raises(ValidationError, match="factors below 1 would upsample"):
        RestorationConfig(lowres_factor=(0.5, 2.0))
    with pytest.raises(ValidationError, match="prob"):
        RestorationConfig(prob=1.5)
    monkeypatch.setenv("VAE3D_TRAIN__RESTORATION__NOISE_STD", "[0.0, 0.3]")
    monkeypatch.setenv("VAE3D_TRAIN__RESTORATION__PROB", "0.9")
    s = load_settings()
    assert s.train.restoration.noise_std == (0.0, 0.3) and s.train.restoration.prob == 0.9
    monkeypatch.setenv("VAE3D_TRAIN__RESTORATION__NOISE_KIND", "salt")
    with pytest.raises(ValidationError, match="noise_kind"):
        load_settings()


def test_corruption_statistics_follow_the_settings():
    x = _vol(2)
    cfg = RestorationConfig(prob=1.0, noise_prob=1.0, noise_kind="gaussian", noise_std=(0.1, 0.1),
                            bias_prob=0, gibbs_prob=0, lowres_prob=0, coarse_prob=0)
    diffs = [(corrupt(x, cfg, seed=s) - x)[x > 0.2] for s in range(3)]
    std = float(np.mean([d.std() for d in diffs]))
    assert 0.08 < std < 0.11, std
