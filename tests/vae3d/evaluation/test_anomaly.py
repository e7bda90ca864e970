"""The anomaly benchmark's voxel metrics score every lesion voxel, whatever a map masks out."""

from __future__ import annotations

import torch

from vae3d.evaluation.anomaly import voxel_metrics


def test_a_lesion_voxel_a_map_masks_out_counts_as_a_miss():
    masks = torch.zeros(1, 1, 8, 8, 8, dtype=torch.uint8)
    masks[0, 0, 2:4, 2:4, 2:4] = 1  # 8 lesion voxels
    head = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.01
    found = head.clone()
    found[masks.bool()] = 1.0  # every lesion voxel above every healthy one
    assert voxel_metrics(found, masks)["voxel_auprc"] == 1.0
    half = found.clone()
    half[0, 0, 2, 2:4, 2:4] = 0.0  # the map's mask leaves out half the lesion
    m = voxel_metrics(half, masks)
    assert m["voxel_auprc"] < 0.75  # half the lesion is missed, not dropped from the count
    assert 0.6 < m["best_dice"] < 0.7  # Dice 2*4 / (4 + 8) at best
