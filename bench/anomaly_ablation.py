"""Anomaly maps side by side on development data (the seed-0 sample cohort, whose subjects the
quality benchmark's default does not use: run that one with ``--seed 1``).

The shipped pretrained weights are fine-tuned for the same wall-clock budget with each
restoration setting, then each test-time restoration is scored on lesioned copies of
held-out scans (``vae3d.evaluation.anomaly.LESIONS``), with the plain residual and with the
healthy-normalised residual (``vae3d.anomaly``) fitted on held-out healthy scans:

    python -m bench.anomaly_ablation --minutes 6

``lesion_kept`` is the share of the inserted lesion the restoration gives back (1: the model
reproduces the lesion, so the residual cannot show it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import anomaly_dev_data, lesion_kept, write_result

#: restoration settings to fine-tune with: the default, and coarse noise (Kascenas et al. 2022) on every input
TRAINING = {
    "default restoration": {},
    "coarse noise on every input (std 0-0.3)": {"restoration": {"prob": 1.0, "coarse_prob": 1.0, "coarse_std": 0.3}},
}


def _test_time(model) -> dict:
    """Restorations of a scan to take the residual from."""
    from vae3d.corruption import coarse_noise
    from vae3d.inference import reconstruct

    def corrupt_restore(x: torch.Tensor) -> torch.Tensor:  # coarse noise at test time, 4 draws averaged
        rng, total = np.random.default_rng(0), 0
        for _ in range(4):
            total = total + reconstruct(model, torch.stack([coarse_noise(v, 0.2, 16, rng) for v in x]).clamp(0, 1))
        return total / 4

    @torch.no_grad()
    def pooled_latent(x: torch.Tensor) -> torch.Tensor:  # a coarser latent grid: less room to copy a lesion
        mu, _ = model.encode(x)
        z = F.interpolate(F.avg_pool3d(mu, 2), size=mu.shape[2:], mode="trilinear", align_corners=False)
        return model.decode(z).float().clamp(0, 1)

    return {"posterior mean": lambda x: reconstruct(model, x), "coarse noise then restore (x4)": corrupt_restore,
            "latent pooled 2x": pooled_latent}


def _scores(restore, val: torch.Tensor, healthy: torch.Tensor, lesioned: torch.Tensor, masks: torch.Tensor) -> dict:
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics

    def batched(x):
        return torch.cat([restore(c) for c in x.split(4)])

    rv, rh, rl = batched(val), batched(healthy), batched(lesioned)
    stats = anomaly.fit_healthy(val, rv)
    out = {"lesion_kept": lesion_kept(healthy, lesioned, rl, masks)}
    for kind, fitted in (("residual", None), ("healthy-normalised", stats)):
        m_les, m_h = anomaly.anomaly_map(lesioned, rl, fitted), anomaly.anomaly_map(healthy, rh, fitted)
        out[kind] = {**metrics.voxel_metrics(m_les, masks),
                     "volume_auroc": metrics.volume_auroc(anomaly.anomaly_score(m_h).numpy(),
                                                          anomaly.anomaly_score(m_les).numpy())}
    return out


def run(minutes: float, n: int = 96, only: str | None = None) -> dict:
    from vae3d.config import TrainConfig
    from vae3d.model import load_model
    from vae3d.training import build_model, fit

    torch.set_num_threads(max(1, torch.get_num_threads()))
    d = anomaly_dev_data(n)
    train, val, held, lesioned, masks = d["train"], d["val"], d["held"], d["lesioned"], d["masks"]
    rows = []
    for name, overrides in TRAINING.items():
        if only and only not in name:
            continue
        cfg = TrainConfig(init="pretrained", epochs=10_000, patience=10_000, max_time_s=minutes * 60, **overrides)
        t0 = time.perf_counter()
        ckpt = Path(f"/tmp/vae3d-anomaly-ablation/{len(rows)}")
        result = fit(build_model(cfg, train.shape[-1]), train, val, cfg, ckpt, resume=False, progress=False)
        model = load_model(result.best_checkpoint)
        for restoration, restore in _test_time(model).items():
            rows.append({"training": name, "test_time": restoration, "epochs": result.epochs_run,
                         "val_ssim": result.best_metrics.get("val_ssim"),
                         **_scores(restore, val, held, lesioned, masks)})
            print(rows[-1], flush=True)
        rows[-1]["train_s"] = time.perf_counter() - t0
    return {"minutes": minutes, "n": n, "split": [len(train), len(val), len(held)],
            "lesions": d["lesions"], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.0, help="fine-tuning budget per training setting")
    ap.add_argument("--only", help="the training settings whose name contains this (e.g. 'coarse')")
    ap.add_argument("--name", default="anomaly_ablation", help="results file (bench/results/NAME.json)")
    a = ap.parse_args()
    print(write_result(a.name, run(a.minutes, only=a.only)))


if __name__ == "__main__":
    main()
