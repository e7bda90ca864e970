"""The generate modes' library side (``vae3d.modes``): here, the anomaly mode's restoration."""

from __future__ import annotations

import numpy as np
import torch

from data_contracts.generation import GenerationRequest
from vae3d import anomaly, inference, modes
from vae3d.model import VAE3D
from vae3d.preprocessing.inputs import PreparedInput
from vae3d.sample_data import phantom


def _scans(n: int, size: int = 16, first_seed: int = 0) -> torch.Tensor:
    vols = [phantom((size,) * 3, seed=first_seed + s, noise=0.02)[0] for s in range(n)]
    return torch.from_numpy(np.stack(vols)[:, None] / 1.2).float().clamp(0, 1)


def test_the_anomaly_mode_restores_a_scan_as_the_versions_statistics_were_fitted():
    """A version calibrated on mirror-averaged restorations maps a new scan from its mirror-averaged
    restoration; one stored before (no record) from a single pass, as then."""
    torch.manual_seed(0)
    model = VAE3D(input_size=16, channels=(8,), latent_channels=2, norm_num_groups=4, patch_size=2).eval()
    val, x = _scans(6), _scans(1, first_seed=10)
    prep = PreparedInput(x, np.eye(4), np.eye(4), (16, 16, 16), "", (0.0, 1.0))
    req = GenerationRequest(mode="anomaly", inputs=("scan.nii.gz",))
    maps = {}
    for mirror in (True, False):
        stats, thresholds = anomaly.calibrate(val, inference.reconstruct_all(model, val, mirror=mirror),
                                              mirror_averaged=mirror)
        back = anomaly.HealthyResiduals.from_state(stats.state())
        assert back.mirror_averaged is mirror
        [product] = modes.anomaly(model, {"healthy": back, "anomaly": thresholds}, prep, 0, req)
        expected = anomaly.anomaly_map(x, inference.reconstruct(model, x, mirror), back)[0, 0].numpy()
        np.testing.assert_allclose(product.array, expected, atol=1e-4)
        maps[mirror] = product.array
    assert not np.allclose(maps[True], maps[False], atol=1e-3)  # the two restorations differ
