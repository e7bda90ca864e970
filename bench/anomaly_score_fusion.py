"""Which per-volume score ranks lesioned scans above healthy ones (#19), side by side on development
data (a cohort none of the shipped networks saw; the test split is never used).

The product's map (the head's probability times the healthy-normalised residual, geometric mean)
finds most lesions and marks little else, but a faint lesion that the head reads as healthy is
muted twice: its voxels score low in the map, so the scan's score comes from the healthiest scan's
hottest spots. The normalised residual alone does not depend on the head, and on some cohorts
ranks volumes better ('Quality, from the pretrained weights': seed 3). Each row here is a per-volume
score; the voxel maps are not changed:

- each map's score alone (the mean of its top ``vae3d.anomaly.TOP_FRACTION`` voxels: 0.02% when its
  table was made), and the product's map with the head's logits averaged with its logits over the
  left-right mirrored scan (flipped back), as the restoration is;
- a bound, not a method: the product's map with each lesioned copy restored as its healthy scan
  was (a restorer that gives back none of a lesion and errs on healthy tissue as this one does);
- the two fused: each map's score standardised by the calibration scans' scores (their mean and
  spread, each calibration scan standardised leave-one-out), then the larger of the two, or their
  sum; on the scores or on their logarithms.

Every scan of the cohort is healthy, so lesioned copies are made of the held-out quarter (seed 1,
as ``anomaly_dev_data``) and of the 72 scans before it (seed 2). Each draw takes ``--calibration``
of the 72 as a validation split (statistics, head envelope, leave-one-out maps), sets each row's
threshold on its calibration scores (``score_threshold``, 5% at 90% confidence), and scores the
other scans: the healthy ones and the lesioned copies of the same scans. Columns, over the draws:
the volume AUROC (its mean and its 10th percentile), the share of subsets of 14 subjects (a quality
run's test split: 14 healthy scans and their 14 lesioned copies) whose AUROC reaches 0.95, the share
of lesioned copies flagged, the share of healthy scans flagged.

    python -m bench.anomaly_score_fusion --draws 40 --seed 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import CachedHead, anomaly_restorer, preprocessed_tensors, write_result

RATE = 0.05
TEST = 14  # subjects in a quality run's test split: its healthy scans and their lesioned copies
SUBSETS = 200  # test-sized subsets drawn per calibration draw
TARGET = 0.95  # #19's volume AUROC


def _standardise(cal: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the calibration scores, each standardised by the others' mean and spread; ``new`` standardised
    by all of theirs)."""
    n = len(cal)
    loo = np.array([(cal[i] - np.delete(cal, i).mean()) / np.delete(cal, i).std(ddof=1) for i in range(n)])
    return loo, (new - cal.mean()) / cal.std(ddof=1)


class _MirroredHead(torch.nn.Module):
    """The head's logits averaged with its logits over the left-right mirrored input, flipped back."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head, self.in_channels = head, getattr(head, "in_channels", 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vae3d.inference import LEFT_RIGHT

        return (self.head(x) + self.head(x.flip(LEFT_RIGHT)).flip(LEFT_RIGHT)) / 2


def _rows(product: tuple, normalised: tuple, mirrored: tuple, oracle: tuple) -> dict:
    """Each row's (calibration scores, new scans' scores) from each map's (calibration, new) scores."""
    out = {"product map (shipped)": product, "normalised residual": normalised,
           "product map, the head's logits mirror-averaged": mirrored,
           "bound: product map, each lesioned copy restored as its healthy scan was": oracle}
    for log in (False, True):
        f = np.log if log else (lambda a: a)
        p = _standardise(f(product[0]), f(product[1]))
        z = _standardise(f(normalised[0]), f(normalised[1]))
        tag = ", log scores" if log else ""
        out[f"max of the two, standardised{tag}"] = (np.maximum(p[0], z[0]), np.maximum(p[1], z[1]))
        out[f"sum of the two, standardised{tag}"] = (p[0] + z[0], p[1] + z[1])
    return out


def cohort_restorations(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The development cohort ``seed`` (``n`` healthy scans) and a lesioned copy of each (the held-out
    quarter's as ``anomaly_dev_data`` makes them, seed 1; the others' seed 2), restored by the shipped
    restorer as the anomaly mode restores (mirror-averaged, the drift put back). Returns (the pool the
    calibration scans are drawn from, the healthy scans, their lesioned copies, the restorations:
    ``healthy``, ``lesioned`` and ``oracle``, each lesioned copy restored as its healthy scan was)."""
    from vae3d import anomaly
    from vae3d.evaluation.anomaly import lesioned_copies
    from vae3d.inference import reconstruct_all

    vols = preprocessed_tensors(n, seed=seed)
    pool, held = vols[: n * 9 // 12], vols[n * 9 // 12 :]
    healthy = torch.cat([pool, held])
    lesioned = torch.cat([lesioned_copies(pool, seed=2)[0], lesioned_copies(held, seed=1)[0]])
    restorer = anomaly_restorer(vols.shape[-1])
    t = time.perf_counter()
    raw = {k: reconstruct_all(restorer, x, mirror=anomaly.MIRROR_AVERAGED)
           for k, x in (("healthy", healthy), ("lesioned", lesioned))}
    rec = {k: anomaly.with_drift(x, raw[k]) for k, x in (("healthy", healthy), ("lesioned", lesioned))}
    rec["oracle"] = anomaly.with_drift(lesioned, raw["healthy"])
    print(f"restored in {time.perf_counter() - t:.0f} s", flush=True)
    return pool, healthy, lesioned, rec


def run(draws: int = 40, calibration: int = 15, n: int = 96, seed: int = 0) -> dict:
    from vae3d import anomaly
    from vae3d.pretrained import load_head

    pool, healthy, lesioned, rec = cohort_restorations(n, seed)
    head = load_head()
    heads = {"product": CachedHead(head), "normalised": None, "mirrored": CachedHead(_MirroredHead(head))}
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list]] = {}
    t = time.perf_counter()
    for i in range(draws):
        pick, subsets = calibration_draw(rng, len(pool), len(healthy), calibration)
        scores = {}
        for kind, h in heads.items():
            stats, loo = anomaly.out_of_sample_maps(healthy[pick], rec["healthy"][pick], head=h, drift_sigma=None)
            new = [anomaly.anomaly_score(anomaly.anomaly_map(x[~pick], rec[k][~pick], stats)).numpy()
                   for k, x in (("healthy", healthy), ("lesioned", lesioned))]
            scores[kind] = (anomaly.anomaly_score(loo).numpy(), np.concatenate(new))
            if kind == "product":
                oracle = anomaly.anomaly_score(anomaly.anomaly_map(lesioned[~pick], rec["oracle"][~pick], stats))
                scores["oracle"] = (scores[kind][0], np.concatenate([new[0], oracle.numpy()]))
        m = int((~pick).sum())
        for name, (cal, new) in _rows(*(scores[k] for k in ("product", "normalised", "mirrored", "oracle"))).items():
            record(rows.setdefault(name, {}), cal, new[:m], new[m:], subsets)
        if (i + 1) % 5 == 0:
            print(f"draw {i + 1}/{draws}: {time.perf_counter() - t:.0f} s; "
                  + "; ".join(f"{k}: {np.mean(v['auroc']):.3f}" for k, v in rows.items()), flush=True)
    return draws_result([{"row": name, **summary(r)} for name, r in rows.items()], seed, n, draws, calibration,
                        len(healthy), time.perf_counter() - t)


def draw_maps(healthy: torch.Tensor, lesioned: torch.Tensor, rec: dict, pick: np.ndarray, head,
              **how) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw's product maps (``cohort_restorations``' scans, restored; ``how``: more of
    ``vae3d.anomaly.out_of_sample_maps``' settings): the calibration scans' (``pick``; leave-one-out),
    the other healthy scans' and their lesioned copies'."""
    from vae3d import anomaly

    stats, loo = anomaly.out_of_sample_maps(healthy[pick], rec["healthy"][pick], head=head, drift_sigma=None, **how)
    return loo, *(anomaly.anomaly_map(x[~pick], rec[k][~pick], stats) for k, x in (("healthy", healthy),
                                                                                   ("lesioned", lesioned)))


def run_draws(n: int, seed: int, draws: int, calibration: int, keys: tuple,
              scores) -> tuple[dict, torch.Size, float]:
    """The draws loop of the benchmarks whose rows each score one draw's product maps their own way
    (``bench.anomaly_top_fraction``, ``bench.anomaly_scan_scale``): the cohort ``seed``
    (``cohort_restorations``), ``draws`` calibration draws, and for each row ``key`` of ``keys`` its
    (calibration, healthy, lesioned) scores ``scores(key, maps)``, where ``maps(**how)`` gives the draw's
    ``draw_maps`` made with ``how`` (once per draw for each ``how``). Returns (each row's ``record``, the
    healthy scans' shape (scans, 1, S, S, S), the seconds the draws took)."""
    from vae3d.pretrained import load_head

    pool, healthy, lesioned, rec = cohort_restorations(n, seed)
    head = CachedHead(load_head())
    rng = np.random.default_rng(seed)
    rows: dict = {k: {} for k in keys}
    t = time.perf_counter()
    for i in range(draws):
        pick, subsets = calibration_draw(rng, len(pool), len(healthy), calibration)
        made: dict = {}

        def maps(_made: dict = made, _pick: np.ndarray = pick, **how) -> tuple:
            key = tuple(sorted(how.items()))
            if key not in _made:
                _made[key] = draw_maps(healthy, lesioned, rec, _pick, head, **how)
            return _made[key]

        for k, r in rows.items():
            record(r, *scores(k, maps), subsets)
        if (i + 1) % 5 == 0:
            print(f"draw {i + 1}/{draws}: {time.perf_counter() - t:.0f} s; "
                  + "; ".join(f"{k:g}: {np.mean(v['auroc']):.4f}" for k, v in rows.items()), flush=True)
    return rows, healthy.shape, time.perf_counter() - t


def calibration_draw(rng: np.random.Generator, pool: int, scans: int, calibration: int) -> tuple[np.ndarray, list]:
    """One draw: which of the ``scans`` calibrate (``calibration`` of the first ``pool``, a mask) and the
    test-sized subsets of the others (``SUBSETS`` of ``TEST`` indices among them)."""
    pick = np.zeros(scans, dtype=bool)
    pick[rng.choice(pool, calibration, replace=False)] = True
    return pick, [rng.choice(scans - calibration, TEST, replace=False) for _ in range(SUBSETS)]


def record(r: dict, calibration: np.ndarray, healthy: np.ndarray, lesioned: np.ndarray, subsets: list) -> None:
    """One draw's figures for one row into ``r``: its threshold set on the ``calibration`` scores, the
    other ``healthy`` scans' scores and their ``lesioned`` copies', and the test-sized ``subsets``."""
    from vae3d import anomaly
    from vae3d.evaluation.anomaly import volume_auroc

    thr = anomaly.score_threshold(calibration, RATE)
    r.setdefault("auroc", []).append(volume_auroc(healthy, lesioned))
    r.setdefault("test_sized", []).extend(volume_auroc(healthy[s], lesioned[s]) >= TARGET for s in subsets)
    r.setdefault("lesioned", []).append(float(np.mean(lesioned > thr)))
    r.setdefault("healthy", []).append(float(np.mean(healthy > thr)))


def summary(r: dict) -> dict:
    """A row's figures over the draws ``record`` kept."""
    return {"auroc": float(np.mean(r["auroc"])), "auroc_p10": float(np.percentile(r["auroc"], 10)),
            "test_sized_met": float(np.mean(r["test_sized"])),
            "lesioned_flagged": float(np.mean(r["lesioned"])), "healthy_flagged": float(np.mean(r["healthy"])),
            "draws_within_rate": float(np.mean(np.array(r["healthy"]) <= RATE))}


def draws_result(rows: list[dict], seed: int, n: int, draws: int, calibration: int, scans: int,
                 seconds: float) -> dict:
    """A draws benchmark's results file: its ``rows`` (each printed) and how they were drawn."""
    for row in rows:
        print(row, flush=True)
    return {"cohort_seed": seed, "n": n, "draws": draws, "calibration_scans": calibration,
            "healthy_scans": scans - calibration, "lesioned_scans": scans - calibration,
            "rate": RATE, "test_subjects": TEST, "subsets": SUBSETS, "target": TARGET,
            "draws_s": seconds, "rows": rows}


def draws_arguments(doc: str) -> argparse.Namespace:
    """The command line of a draws benchmark (this one's and ``bench.anomaly_top_fraction``'s)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=40, help="calibration draws")
    ap.add_argument("--calibration", type=int, default=15, help="healthy scans per calibration draw")
    ap.add_argument("--seed", type=int, default=0, help="the development cohort (0 or 5; never a quality run's)")
    ap.add_argument("--n", type=int, default=96, help="scans in the cohort (seed 5's cached cohort has 64)")
    return ap.parse_args()


def draws_main(doc: str, name: str, run) -> None:
    """A draws benchmark's entry point: its command line (``draws_arguments``), ``run`` and the results
    file ``{name}_seed{seed}``."""
    a = draws_arguments(doc)
    print(write_result(f"{name}_seed{a.seed}", run(a.draws, a.calibration, a.n, a.seed)))


def main() -> None:
    draws_main(__doc__, "anomaly_score_fusion", run)


if __name__ == "__main__":
    main()
