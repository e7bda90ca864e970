"""The anomaly map with the shipped head (#19): what to subtract from it and how to score a scan,
side by side on the development data of ``bench.anomaly_ablation`` (the seed-0 cohort: 56 train /
16 healthy reference / 24 held out, lesioned copies of the held-out scans; the test split is never
used).

The shipped restorer and the shipped head (``vae3d/pretrained``) make one set of restorations and
head probabilities; each row combines them differently:

- ``normalised residual``: the healthy-normalised residual alone (the map without a head);
- ``head x normalised``: the geometric mean of the head's probability and that (the product's map
  until 2026-12-04); ``product`` rows use ``p x z`` (the same voxel ranking, other scores);
- ``- envelope (KIND, sigma S)``: less an envelope of the healthy reference scans' maps (their
  mean, mean + sd, voxel-wise maximum or 75th percentile, Gaussian-smoothed by S voxels), floored
  at zero. The head fires at the same places of every brain; an envelope takes those out.

Each reference scan's map uses statistics (and an envelope) fitted on the other 15, as
``vae3d.anomaly.calibrate`` does. Columns: voxel AUPRC and best Dice, then per top fraction of
voxels (a scan's score) the volume AUROC and the share of lesioned copies flagged at the threshold
calibrated on the reference scans (no healthy held-out scan is flagged in any row unless noted).
``--figure`` writes overlays of four held-out lesioned scans for the chosen row.

    python -m bench.anomaly_envelope
"""

from __future__ import annotations

import argparse

import torch

from bench.common import RESULTS, anomaly_dev_data, anomaly_restorer, map_scores, write_result

TOPS = (0.0005, 0.0002, 0.0001)
ENVELOPES = ((None, 0.0), ("mean", 0.0), ("mean", 1.0), ("mean", 2.0), ("mean + sd", 1.0), ("max", 1.0),
             ("q75", 1.0))
CHOSEN = "head x normalised - envelope (mean, sigma 1)"


def _envelope(maps: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    from vae3d.anomaly import _smooth

    e = {"mean": lambda: maps.mean(0, keepdim=True),
         "mean + sd": lambda: maps.mean(0, keepdim=True) + maps.std(0, keepdim=True),
         "max": lambda: maps.max(0, keepdim=True).values,
         "q75": lambda: torch.quantile(maps, 0.75, dim=0, keepdim=True)}[kind]()
    return _smooth(e, sigma)


def less_envelope(ref: torch.Tensor, maps: tuple[torch.Tensor, ...], kind: str, sigma: float):
    """The reference maps, each less the others' envelope; ``maps`` less all of theirs."""
    out = [(ref[i : i + 1] - _envelope(torch.cat([ref[:i], ref[i + 1 :]]), kind, sigma)).clamp_min(0)
           for i in range(len(ref))]
    e = _envelope(ref, kind, sigma)
    return torch.cat(out), *((m - e).clamp_min(0) for m in maps)


def run(n: int = 96, figure: bool = False) -> dict:
    from vae3d import anomaly
    from vae3d.anomaly_head import head_map
    from vae3d.inference import reconstruct_all
    from vae3d.pretrained import load_head

    d = anomaly_dev_data(n)
    val, held, lesioned, masks = d["val"], d["held"], d["lesioned"], d["masks"]
    restorer = anomaly_restorer(val.shape[-1])
    head = load_head()
    rv, rh, rl = (reconstruct_all(restorer, v) for v in (val, held, lesioned))
    stats = anomaly.fit_healthy(val, rv)
    keep = torch.ones(len(val), dtype=torch.bool)
    z_ref = []
    for i in range(len(val)):  # each reference scan's map from the others' statistics
        keep[i] = False
        z_ref.append(anomaly.anomaly_map(val[i : i + 1], rv[i : i + 1], anomaly.fit_healthy(val[keep], rv[keep])))
        keep[i] = True
    z = (torch.cat(z_ref), anomaly.anomaly_map(held, rh, stats), anomaly.anomaly_map(lesioned, rl, stats))
    p = tuple(head_map(head, x, r) * stats.brain for x, r in ((val, rv), (held, rh), (lesioned, rl)))
    bases = {"normalised residual": z,
             "head x normalised": tuple((a * b).sqrt() for a, b in zip(p, z, strict=True)),
             "product": tuple(a * b for a, b in zip(p, z, strict=True))}
    rows, chosen = [], None
    for base, maps in bases.items():
        for kind, sigma in ENVELOPES if base != "normalised residual" else ((None, 0.0), ("mean", 1.0)):
            name = base if kind is None else f"{base} - envelope ({kind}, sigma {sigma:g})"
            ref, h, les = maps if kind is None else less_envelope(maps[0], maps[1:], kind, sigma)
            rows.append({"map": name, **map_scores(h, les, masks, TOPS, calibration=ref)})
            print(rows[-1], flush=True)
            if name == CHOSEN:
                chosen = (ref, les)
    if figure and chosen is not None:
        from vae3d.figures import anomaly_overlay

        ref, les = chosen
        thr = float(torch.quantile(ref[:, 0][:, stats.brain].flatten()[::4].float(), 0.999))
        cases = [{"label": f"held-out {i}", "image": lesioned[i, 0].numpy(), "map": les[i, 0].numpy(),
                  "mask": masks[i, 0].numpy()} for i in range(4)]
        anomaly_overlay(cases, thr).savefig(RESULTS / "anomaly_envelope.png", dpi=80)
    return {"n": n, "split": [len(d["train"]), len(val), len(held)], "lesions": d["lesions"], "tops": list(TOPS),
            "chosen": CHOSEN, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figure", action="store_true", help="write bench/results/anomaly_envelope.png")
    a = ap.parse_args()
    print(write_result("anomaly_envelope", run(figure=a.figure)))


if __name__ == "__main__":
    main()
