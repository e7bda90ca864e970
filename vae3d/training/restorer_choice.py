"""Choosing the anomaly restorer's weights on the validation split: the fine-tune, or the weights it
started from.

The restorer's fine-tune keeps its best checkpoint by how well it repairs coarse noise on the
validation scans, which it always does better than its start. That is not what the anomaly map
needs: on scans like the shipped restorer's own cohort the fine-tune costs the map 0.009-0.013
volume AUROC, and on another protocol's scans it gains +0.077 voxel AUPRC (BENCHMARKS.md, "the
restorer's fine-tune" and "... on another protocol's scans"). So both are put to the task itself
on the validation split: lesions (the benchmark's kind, ``vae3d.evaluation.anomaly.LESIONS``, other
draws than any test's) are drawn into copies of the validation scans, and the fine-tune is kept only
if its map finds them clearly better (by ``MARGIN``) than its start's. A dozen validation scans cannot
tell apart two maps as close as the first case's, and there the fine-tune is the one that costs.

The scans are split in two folds: the map's statistics are fitted on one
(``vae3d.anomaly.out_of_sample_maps``), its healthy scans and their lesioned copies scored on the
other, then the other way round. The criterion is the mean, over the folds, of the voxel AUPRC and
a smoothed volume AUROC (``smooth_auroc``): the two figures the anomaly benchmark asks of the map. The
plain AUROC is 1 for every candidate on most validation splits (a dozen healthy scans, lesions of the
benchmark's sizes), where it can tell nothing apart; how far the lesioned scans stand from the healthy
ones' spread still can.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from vae3d import anomaly
from vae3d.inference import reconstruct_all
from vae3d.model import VAE3D
from vae3d.seeding import derive_seed

#: fewest validation scans to choose on (two folds of 3: a map's statistics need 3 scans to leave one out)
MIN_SCANS = 6
#: most validation scans the choice reads (the first ones): each costs two restorer passes per candidate and
#: copy, and its maps (about 3 s a scan and candidate on 2 CPU cores)
MAX_SCANS = 32
#: lesioned copies of each validation scan
COPIES = 2
#: how much better than the first candidate (the weights a fine-tune started from) another must be to replace it:
#: on the development cohorts, the fine-tune's lead was 0.0004 where it cost the held-out map 0.012 volume AUROC
#: (the shipped restorer's own kind of scans) and 0.037 where it gained +0.078 voxel AUPRC (another protocol's;
#: BENCHMARKS.md, "Anomaly detection: choosing the restorer on validation scans")
MARGIN = 0.01
#: the criterion of a candidate whose restorations are not finite: below any other (they lie in [0, 1])
NOT_FINITE = -1.0


def smooth_auroc(healthy: np.ndarray, lesioned: np.ndarray) -> float:
    """A volume AUROC that does not stop at 1: the mean over lesioned scores of the normal CDF of their
    distance from the healthy scores' mean, in healthy standard deviations (the binormal AUROC with the
    healthy scores taken as normal, as ``vae3d.anomaly.score_threshold`` takes them; three lines, so
    hand-written)."""
    from scipy.stats import norm

    h = np.asarray(healthy, dtype=np.float64)
    return float(norm.cdf((np.asarray(lesioned, dtype=np.float64) - h.mean()) / max(h.std(ddof=1), 1e-12)).mean())


def detection(val: torch.Tensor, restored: torch.Tensor, lesioned: torch.Tensor, restored_lesioned: torch.Tensor,
              masks: torch.Tensor, head: torch.nn.Module | None = None) -> dict[str, float]:
    """How a restorer's map finds lesions on ``val`` (N, 1, S, S, S) scans: ``restored``, its
    restorations of them; ``lesioned`` (``copies * N``: copy k of scan i at ``k * N + i``), their
    lesioned copies, ``restored_lesioned`` and ``masks`` alike; ``head``, the map's (``vae3d.anomaly``).
    Two folds (even and odd scans), each scored with statistics fitted on the other. Returns the
    folds' mean ``voxel_auprc``, ``volume_auroc``, ``smooth_auroc`` and ``criterion``, the mean of the
    first and the last."""
    from vae3d.evaluation.anomaly import volume_auroc, voxel_metrics

    n, copies = len(val), len(lesioned) // len(val)
    folds = [torch.arange(0, n, 2), torch.arange(1, n, 2)]
    scores = []
    for ref, scored in (folds, folds[::-1]):
        stats, _ = anomaly.out_of_sample_maps(val[ref], restored[ref], head=head,
                                              mirror_averaged=anomaly.MIRROR_AVERAGED)
        copy_idx = torch.cat([scored + k * n for k in range(copies)])
        healthy = anomaly.anomaly_map(val[scored], restored[scored], stats)
        sick = anomaly.anomaly_map(lesioned[copy_idx], restored_lesioned[copy_idx], stats)
        sh, sl = anomaly.anomaly_score(healthy).numpy(), anomaly.anomaly_score(sick).numpy()
        scores.append({"voxel_auprc": voxel_metrics(sick, masks[copy_idx])["voxel_auprc"],
                       "volume_auroc": volume_auroc(sh, sl), "smooth_auroc": smooth_auroc(sh, sl)})
    out = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return {**out, "criterion": (out["voxel_auprc"] + out["smooth_auroc"]) / 2}


def criteria(figures: Mapping[str, dict]) -> str:
    """``choose_restorer``'s figures as the log, the model card and the evaluation report name them:
    each candidate's criterion, in the candidates' order."""
    return ", ".join(f"{name} {found['criterion']:.4f}" for name, found in figures.items())


def choose_restorer(candidates: Mapping[str, VAE3D], val: torch.Tensor, seed: int,
                    head: torch.nn.Module | None = None, margin: float = MARGIN) -> tuple[str, dict[str, dict]]:
    """The candidate restorer whose map finds lesions drawn into ``val``'s copies best (``detection``),
    the first named kept unless another beats it by more than ``margin`` (one whose restorations are not
    finite never wins), and every candidate's figures. ``seed`` draws the lesions (the same for every
    candidate); at most ``MAX_SCANS`` of ``val`` are read.

    Raises:
        ValueError: fewer than ``MIN_SCANS`` validation scans, or no candidate.
    """
    from vae3d.evaluation.anomaly import lesioned_draws

    if len(val) < MIN_SCANS or not candidates:
        raise ValueError(f"choosing a restorer needs {MIN_SCANS} validation scans and a candidate, got "
                         f"{len(val)} and {len(candidates)}")
    val = val[:MAX_SCANS]
    lesioned, masks = lesioned_draws(val, [derive_seed(seed, "restorer-choice", k) for k in range(COPIES)])
    figures = {}
    for name, model in candidates.items():
        restored = reconstruct_all(model, torch.cat([val, lesioned]), mirror=anomaly.MIRROR_AVERAGED)
        if not torch.isfinite(restored).all():  # weights that overflow (half precision, a diverged fine-tune)
            figures[name] = {"criterion": NOT_FINITE, "restorations": "not finite"}
            continue
        figures[name] = detection(val, restored[: len(val)], lesioned, restored[len(val) :], masks, head)
    best = next(iter(figures))
    for name, found in figures.items():
        if found["criterion"] > figures[best]["criterion"] + margin:
            best = name
    return best, figures
