"""The discriminative anomaly head: its synthetic anomalies, and a tiny head trained on them."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import GaussianSmooth
from sklearn.metrics import roc_auc_score

from vae3d import anomaly_head


def _phantoms(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """(n, 1, S, S, S) head-like volumes: a textured bright ball on a dark background."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij"))
    ball = (grid.pow(2).sum(0) < 0.7).float()
    tex = torch.nn.functional.interpolate(torch.rand(n, 1, 6, 6, 6, generator=g), size=(size,) * 3, mode="trilinear")
    return (ball * (0.45 + 0.4 * tex)).clamp(0, 1)


def test_synthetic_anomalies_are_seeded_leave_the_input_alone_and_label_what_changed():
    x = _phantoms(2, seed=0)
    a, b = x[0, 0].numpy(), x[1, 0].numpy()
    before = a.copy()
    image, label = anomaly_head.synthetic_anomalies(a, b, np.random.default_rng(3))
    again, label_again = anomaly_head.synthetic_anomalies(a, b, np.random.default_rng(3))
    assert np.array_equal(a, before), "the input is not modified"
    assert np.array_equal(image, again) and np.array_equal(label, label_again)
    assert label.any() and image.min() >= 0 and image.max() <= 1
    changed = np.abs(image - a)
    assert changed[label].mean() > 5 * changed[~label].mean()
    images, labels = anomaly_head.training_set(x, copies=2, seed=0)
    assert images.shape == (6, 1, 32, 32, 32) and labels[4:].sum() == 0, "the clean scans come last, unlabelled"
    assert torch.equal(images[4:], x)


def test_a_head_trained_on_synthetic_anomalies_marks_them_in_new_scans():
    train, held = _phantoms(8, seed=1), _phantoms(4, seed=2)
    smooth = GaussianSmooth(sigma=1.5)
    restore = lambda v: torch.stack([smooth(s) for s in v]).as_tensor()
    images, labels = anomaly_head.training_set(train, copies=4, seed=0)
    torch.manual_seed(0)
    head = anomaly_head.build_head(features=(4, 8, 8, 16, 16, 4))
    losses = anomaly_head.fit_head(head, anomaly_head.head_inputs(images, restore(images)), labels, steps=100,
                                   seed=0, crop=32, batch=2, lr=1e-2)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    test, truth = anomaly_head.training_set(held, copies=1, seed=9)
    test, truth = test[:4], truth[:4].bool()
    p = anomaly_head.head_map(head, test, restore(test))
    assert p.shape == test.shape and float(p.min()) >= 0 and float(p.max()) <= 1
    auroc = roc_auc_score(truth.flatten().numpy(), p.flatten().numpy())  # anomaly voxels above the rest
    assert auroc > 0.8, auroc  # 0.88 with this training


def test_hard_negatives_are_the_largest_restoration_errors_away_from_any_anomaly():
    """Where the restorer errs most on healthy tissue (not near a labelled anomaly) the head is shown
    crops labelled healthy: those voxels are found, and no voxel near an anomaly is among them."""
    x = _phantoms(1, seed=4)
    residual = torch.zeros_like(x)
    residual[0, 0, 10:13, 10:13, 10:13] = 0.3  # a restoration error in healthy tissue
    residual[0, 0, 20:23, 20:23, 20:23] = 0.5  # a larger one, inside a labelled anomaly
    label = torch.zeros_like(x)
    label[0, 0, 20:23, 20:23, 20:23] = 1
    (hard,) = anomaly_head.hard_negatives(anomaly_head.head_inputs(x, x - residual), label)
    assert len(hard) > 0
    assert ((hard - 11).abs() <= 3).all(), "every hard negative lies at the healthy error"
    assert ((hard - 21).abs() > 4).any(1).all(), "none lies near the anomaly"
    empty = anomaly_head.hard_negatives(anomaly_head.head_inputs(torch.zeros_like(x), torch.zeros_like(x)), label)
    assert empty == [None], "a volume without brain has none"
