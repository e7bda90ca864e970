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


def _bumps_one_side_and_both(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scans, restorations, labels): phantoms with two bright bumps placed symmetrically left and right
    (anatomy that the restorer does not give back on either side) and one bump on one side only (an
    anomaly, labelled); the restoration is the phantom without any bump, so every bump's residual is alike."""
    from vae3d.inference import LEFT_RIGHT

    g = torch.Generator().manual_seed(seed)
    base = _phantoms(n, seed, size)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    bump = lambda c: torch.exp(-((grid - c.view(3, 1, 1, 1)) ** 2).sum(0) / (2 * 1.5 ** 2))
    scans, labels = base.clone(), torch.zeros_like(base)

    def place(right: bool) -> torch.Tensor:  # every bump alike in where it may lie, apart from its mirror image
        c = torch.randint(8, size - 8, (3,), generator=g).float()
        c[LEFT_RIGHT - 2] = float(torch.randint(5, size // 2 - 4, (1,), generator=g))
        c[LEFT_RIGHT - 2] = size - 1 - c[LEFT_RIGHT - 2] if right else c[LEFT_RIGHT - 2]
        return c

    for i in range(n):
        pair = bump(place(False))
        scans[i, 0] += 0.3 * (pair + pair.flip(LEFT_RIGHT - 2))
        one = bump(place(bool(torch.rand(1, generator=g) < 0.5)))
        scans[i, 0] += 0.3 * one
        labels[i, 0] = (one > 0.5).float()
    return scans.clamp(0, 1), base, labels


STEPS = 200  # the mirror heads' training: a few seconds


def test_a_head_that_reads_the_mirrored_residual_tells_a_one_sided_change_from_a_symmetric_one():
    """Bumps alike in the scan and the residual, labelled only where one has no mirror image: a head
    given the mirrored residual (``mirror``) learns to mark those; a head without it cannot."""
    from sklearn.metrics import roc_auc_score

    x, recon, labels = _bumps_one_side_and_both(12, seed=5)
    test_x, test_recon, test_labels = _bumps_one_side_and_both(4, seed=6)
    inputs = anomaly_head.head_inputs(x, recon, mirror=True)
    assert inputs.shape[1] == 3 and torch.equal(inputs[:, 2:], (x - recon).flip(2))
    auroc = {}
    for mirror in (False, True):
        torch.manual_seed(0)
        head = anomaly_head.build_head(features=(4, 8, 8, 16, 16, 4), mirror=mirror)
        anomaly_head.fit_head(head, anomaly_head.head_inputs(x, recon, mirror=mirror), labels, steps=STEPS, seed=0,
                              crop=32, batch=2, lr=1e-2, hard_share=0.0)
        p = anomaly_head.head_map(head, test_x, test_recon)  # head_map reads head.mirror
        bumps = (test_x - test_recon > 0.15).flatten().numpy()  # every bump's core, one-sided or not
        auroc[mirror] = roc_auc_score(test_labels.flatten().numpy()[bumps] > 0, p.flatten().numpy()[bumps])
    assert auroc[True] > 0.9 and auroc[True] > auroc[False] + 0.3, auroc  # 1.00 and 0.43 with this training
