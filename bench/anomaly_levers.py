"""Levers for the anomaly map with the shipped restorer and head (#19), side by side on the
development data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train / 16 healthy
reference / 24 held out, lesioned copies of the held-out scans; the test split is never used).

Every row makes the product's map (``vae3d.anomaly``: calibrated leave-one-out on the reference
scans, the envelope subtracted) from one change:

- how the head weighs the normalised residual: its logits divided by a temperature ``T`` before
  the sigmoid (untempered it saturates at 1 on healthy scans' hard places too), and the residual's
  smoothing ``sigma``;
- more healthy reference scans: 16 of the training scans added (the shipped restorer never saw
  them, so their residuals are out of sample as the validation scans' are);
- the restoration: averaged with the restoration of the left-right mirrored scan; averaged over
  the 8 offsets of the stem's patch (``vae3d.inference.reconstruct_shift_averaged``); restored a
  second time after the voxels the first map finds unusual (normalised residual against all 16
  reference scans 1-2, a linear ramp) were replaced by the first restoration (a lesion the
  restorer gave back in part is given back less the second time);
- affine registration: every scan and its restoration resampled onto a template (the reference
  scans' mean, registered to it twice) by a 12-parameter affine fitted by gradient descent on the
  squared difference, so the voxel-wise statistics and the envelope compare like with like.

Columns: the share of an inserted lesion the restoration gives back, the healthy held-out scans'
mean absolute restoration error, the normalised residual alone and the map with the head (voxel
AUPRC / best Dice / volume AUROC at the stored top fraction), the share of lesioned and of healthy
held-out scans flagged at the calibrated threshold.

    python -m bench.anomaly_levers
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import anomaly_dev_data, anomaly_restorer, dev_meta, held_out_overlay, lesion_kept, write_result

#: (row, restoration, extra reference scans, head temperature, head sigma)
ROWS = (
    ("before (T 1, sigma 1.5)", "posterior mean", 0, 1.0, 1.5),
    ("T 2, sigma 1.5", "posterior mean", 0, 2.0, 1.5),
    ("T 4, sigma 1.5", "posterior mean", 0, 4.0, 1.5),
    ("T 8, sigma 1.5", "posterior mean", 0, 8.0, 1.5),
    ("T 1, sigma 1", "posterior mean", 0, 1.0, 1.0),
    ("T 4, sigma 1 (adopted)", "posterior mean", 0, 4.0, 1.0),
    ("T 4, sigma 2", "posterior mean", 0, 4.0, 2.0),
    ("+16 reference scans", "posterior mean", 16, 4.0, 1.0),
    ("mirror-averaged restoration", "mirror-averaged", 0, 4.0, 1.0),
    ("shift-averaged restoration (x8)", "shift-averaged", 0, 4.0, 1.0),
    ("re-restored where unusual", "re-restored", 0, 4.0, 1.0),
    ("affine-registered to a template", "registered", 0, 4.0, 1.0),
)
CHOSEN = "T 4, sigma 1 (adopted)"


def affine_fit(x: torch.Tensor, template: torch.Tensor, steps: int = 150, lr: float = 0.01) -> torch.Tensor:
    """(B, 3, 4) affines that resample ``x`` (B, 1, S, S, S) onto ``template`` (1, 1, S, S, S): least
    squares by Adam, the first half of the steps at half resolution. Hand-written: 64^3 volumes, one
    modality, a dozen parameters; a registration toolkit (ANTs, SimpleITK) is not a dependency."""
    eye = torch.eye(3, 4).expand(len(x), 3, 4)
    delta = torch.zeros(len(x), 3, 4, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    coarse = (F.avg_pool3d(x, 2), F.avg_pool3d(template, 2).expand(len(x), -1, -1, -1, -1))
    for step in range(steps):
        src, tgt = coarse if step < steps // 2 else (x, template.expand_as(x))
        loss = (warp(src, eye + delta) - tgt).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (eye + delta).detach()


def warp(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(v.shape), align_corners=False)
    return F.grid_sample(v.float(), grid, align_corners=False)


def _registered(sets: dict[str, torch.Tensor], first: dict[str, torch.Tensor], masks: torch.Tensor) -> tuple:
    """The scans, their restorations and the lesion masks resampled onto a template: the reference
    scans' mean, each time registered to it, twice."""
    template = sets["val"].mean(0, keepdim=True)
    for _ in range(2):
        template = warp(sets["val"], affine_fit(sets["val"], template)).mean(0, keepdim=True)
    theta = {k: affine_fit(x, template) for k, x in sets.items()}
    return ({k: warp(x, theta[k]) for k, x in sets.items()}, {k: warp(first[k], theta[k]) for k in sets},
            (warp(masks.float(), theta["lesioned"]) > 0.5).to(torch.uint8))


def _restorations(restorer, sets: dict[str, torch.Tensor], kind: str, first: dict, stats) -> dict:
    from vae3d import anomaly
    from vae3d.inference import reconstruct, reconstruct_all, reconstruct_shift_averaged

    def one(x: torch.Tensor) -> torch.Tensor:
        if kind == "mirror-averaged":
            return torch.cat([(reconstruct(restorer, c) + reconstruct(restorer, c.flip(2)).flip(2)) / 2
                              for c in x.split(4)])
        return torch.cat([reconstruct_shift_averaged(restorer, c) for c in x.split(4)])

    if kind in ("mirror-averaged", "shift-averaged"):
        return {k: one(x) for k, x in sets.items()}
    out = {}  # re-restored
    for k, x in sets.items():
        unusual = ((anomaly.anomaly_map(x, first[k], stats) - 1.0) / 1.0).clamp(0, 1)
        out[k] = reconstruct_all(restorer, x * (1 - unusual) + first[k] * unusual)
    return out


def _row(name, sets, rec, masks, head, temperature, sigma, **how) -> dict:
    """One row: the normalised residual alone and the map with ``head``, each calibrated on the reference
    scans (``how``: more of ``vae3d.anomaly.calibrate``'s settings, e.g. ``drift_sigma``)."""
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics

    out = {"row": name, "kept": lesion_kept(sets["held"], sets["lesioned"], rec["lesioned"], masks),
           "healthy_mae": float((rec["held"] - sets["held"]).abs().mean())}
    for key, h in (("normalised", None), ("with_head", head)):
        stats, thr = anomaly.calibrate(sets["val"], rec["val"], head=h, head_temperature=temperature,
                                       head_sigma=sigma, **how)
        mh, ml = (anomaly.anomaly_map(sets[k], rec[k], stats) for k in ("held", "lesioned"))
        sh, sl = (anomaly.calibrated_score(m, thr).numpy() for m in (mh, ml))
        out[key] = {**metrics.voxel_metrics(ml, masks), "volume_auroc": metrics.volume_auroc(sh, sl),
                    "flagged": float(np.mean(sl > thr["score_threshold"])),
                    "healthy_flagged": float(np.mean(sh > thr["score_threshold"]))}
        if key == "with_head":
            out["maps"] = (ml, thr["voxel_threshold"])
    return out


def run(n: int = 96, figure: bool = False) -> dict:
    from vae3d import anomaly
    from vae3d.inference import reconstruct_all
    from vae3d.pretrained import load_head

    d = anomaly_dev_data(n)
    masks = d["masks"]
    sets = {k: d[k] for k in ("val", "held", "lesioned")}
    restorer = anomaly_restorer(d["val"].shape[-1])
    head = load_head()
    first = {k: reconstruct_all(restorer, x) for k, x in sets.items()}
    extra, extra_rec = d["train"][:16], reconstruct_all(restorer, d["train"][:16])
    rows, chosen, cache = [], None, {"posterior mean": (sets, first, masks)}  # kind -> (scans, restorations, masks)
    for name, kind, more, temperature, sigma in ROWS:
        t = time.perf_counter()
        if kind not in cache:
            cache[kind] = _registered(sets, first, masks) if kind == "registered" else (
                sets, _restorations(restorer, sets, kind, first, anomaly.fit_healthy(sets["val"], first["val"])), masks)
        s, rec, m = cache[kind]
        if more:
            s, rec = {**s, "val": torch.cat([s["val"], extra])}, {**rec, "val": torch.cat([rec["val"], extra_rec])}
        row = _row(name, s, rec, m, head, temperature, sigma)
        ml, thr = row.pop("maps")
        if name == CHOSEN:
            chosen = (ml, thr)
        rows.append({**row, "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    if figure and chosen is not None:
        held_out_overlay(d, *chosen, "anomaly_levers")
    return {**dev_meta(d), "top_fraction": anomaly.TOP_FRACTION, "chosen": CHOSEN, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figure", action="store_true", help="write bench/results/anomaly_levers.png")
    a = ap.parse_args()
    print(write_result("anomaly_levers", run(figure=a.figure)))


if __name__ == "__main__":
    main()
