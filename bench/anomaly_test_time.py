"""Anomaly maps from test-time restorations of one model, side by side (#19), on the development
data of ``bench.anomaly_ablation`` (the seed-0 cohort; lesioned copies of the held-out scans).

The shipped anomaly restorer (``vae3d/pretrained``, ``"anomaly"``), no fine-tuning; the rows in
BENCHMARKS.md were measured before it existed, on the main model's weights. Restorations: the posterior mean (the
default); the restoration iterated 4 and 10 times (each pass gives back less of a lesion);
the posterior mean projected onto the learned prior's principal subspace (``vae3d.prior``,
rank 32, fitted to the training scans' latents: a lesion is not among the directions healthy
scans span), plain and refined 3 times. Maps: the plain residual, the healthy-normalised
residual (``vae3d.anomaly``, per template voxel) and a context-normalised residual (per bin
of reconstructed intensity and gradient magnitude: statistics that need no registration).

    python -m bench.anomaly_test_time
"""

from __future__ import annotations

import time

import torch

from bench.common import anomaly_dev_data, anomaly_restorer, lesion_kept, write_result


def _gradient(v: torch.Tensor) -> torch.Tensor:
    return torch.stack(torch.gradient(v[:, 0], dim=(1, 2, 3))).pow(2).sum(0).sqrt()[:, None]


class ContextResiduals:
    """Residual mean and spread of healthy scans per (reconstructed intensity, gradient) bin."""

    def __init__(self, x: torch.Tensor, r: torch.Tensor, intensity_bins: int = 12, gradient_bins: int = 6):
        grad, head = _gradient(r), (x > 0.05) | (r > 0.05)
        self.gradient_bins = gradient_bins
        self.intensity_edges = torch.linspace(0, 1, intensity_bins + 1)[1:-1]
        self.gradient_edges = torch.quantile(grad[head][::50], torch.linspace(0, 1, gradient_bins + 1)[1:-1])
        idx, res = self._bins(r, grad), x - r
        self.mean, self.std = torch.zeros(intensity_bins * gradient_bins), torch.ones(intensity_bins * gradient_bins)
        for k in range(len(self.mean)):
            m = (idx == k) & head
            if m.sum() > 50:
                self.mean[k], self.std[k] = res[m].mean(), res[m].std().clamp_min(0.005)

    def _bins(self, r: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        intensity = torch.bucketize(r, self.intensity_edges)
        return intensity * self.gradient_bins + torch.bucketize(grad, self.gradient_edges)

    def map(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        from vae3d.anomaly import _smooth

        idx = self._bins(r, _gradient(r))
        return _smooth(((x - r - self.mean[idx]) / self.std[idx]).abs(), 1.0) * ((x > 0.05) | (r > 0.05))


def _restorations(model, prior) -> dict:
    from vae3d.inference import decode_refined

    @torch.no_grad()
    def iterated(x: torch.Tensor, passes: int) -> torch.Tensor:
        return torch.cat([decode_refined(model, model.encode(c)[0], passes - 1) for c in x.split(4)])

    unit = prior.basis / prior.basis.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def projected(x: torch.Tensor, refine: int) -> torch.Tensor:
        out = []
        for c in x.split(4):
            mu = model.encode(c)[0].flatten(1) - prior.mean
            z = (prior.mean + (mu @ unit.T) @ unit).reshape(len(c), *prior.latent_shape)
            out.append(decode_refined(model, z, refine))
        return torch.cat(out)

    return {"posterior mean": lambda x: iterated(x, 1), "iterated x4": lambda x: iterated(x, 4),
            "iterated x10": lambda x: iterated(x, 10), "prior projection": lambda x: projected(x, 0),
            "prior projection, refined x3": lambda x: projected(x, 3)}


def run(n: int = 96) -> dict:
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics
    from vae3d.inference import encode_all
    from vae3d.prior import fit_prior

    d = anomaly_dev_data(n)
    train, val, held, lesioned, masks = d["train"], d["val"], d["held"], d["lesioned"], d["masks"]
    model = anomaly_restorer(train.shape[-1])
    prior = fit_prior("lowrank", encode_all(model, train), 32)
    rows = []
    for name, restore in _restorations(model, prior).items():
        t0 = time.perf_counter()
        rv, rh, rl = restore(val), restore(held), restore(lesioned)
        row = {"restoration": name, "seconds": time.perf_counter() - t0,
               "lesion_kept": lesion_kept(held, lesioned, rl, masks)}
        healthy, context = anomaly.fit_healthy(val, rv), ContextResiduals(val, rv)
        maps = {"residual": (anomaly.anomaly_map(lesioned, rl), anomaly.anomaly_map(held, rh)),
                "healthy-normalised": (anomaly.anomaly_map(lesioned, rl, healthy),
                                       anomaly.anomaly_map(held, rh, healthy)),
                "context-normalised": (context.map(lesioned, rl), context.map(held, rh))}
        for kind, (m_les, m_h) in maps.items():
            row[kind] = {**metrics.voxel_metrics(m_les, masks), "volume_auroc": metrics.volume_auroc(
                anomaly.anomaly_score(m_h).numpy(), anomaly.anomaly_score(m_les).numpy())}
        rows.append(row)
        print(row, flush=True)
    return {"n": n, "split": [len(train), len(val), len(held)], "rows": rows,
            "lesions": d["lesions"],
            "model": "shipped pretrained weights (vae3d/pretrained), default architecture"}


if __name__ == "__main__":
    print(write_result("anomaly_test_time", run()))
