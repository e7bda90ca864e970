"""Anomaly maps, scores and their calibration: what the model cannot restore, measured against
how well it restores healthy scans.

The model restores scans (it was trained to repair noise, bias, ringing and coarse-noise
blobs), so on a healthy scan its residual ``x - f(x)`` is small everywhere except where
anatomy is hard (cortex, ventricle borders). A raw residual map lights those places up on
every scan. Here each voxel's signed residual is instead compared with the residuals of
healthy scans at the same place of the template (their voxel-wise mean and spread, fitted
on the validation split and stored with the model version): the map is ``|z|``, smoothed,
inside the brain. A scan's score is the mean of its highest-scoring voxels, and the score
threshold is set on healthy validation scores (each scored leave-one-out) so that, with the
requested confidence (90% by default), it flags at most the requested share of new healthy scans. The choice of this map
over the plain residual and the atlas baseline was made on validation volumes (BENCHMARKS.md, "Anomaly detection").

With a discriminative head (``vae3d.anomaly_head``: a small U-Net trained on synthetic anomalies to
tell which residuals come from an anomaly) stored beside the statistics, the map is the geometric
mean of the head's probability (tempered) and the normalised map: each voxel must look abnormal to
both (BENCHMARKS.md, "Anomaly detection: a discriminative head" and "levers for the map"). The
head is not normalised by healthy scans, so it fires at the same places of every brain (the
frontal poles, the brain's edge): the healthy scans' mean map there (their ``envelope``) is
subtracted (BENCHMARKS.md, "Anomaly detection: the healthy envelope and the score").

Every scan carries its own slow intensity drift (the scanner's bias field), and the restorer does
not give all of it back: where it does not, the residual holds a broad, faint patch that looks like
a hypo- or hyper-intense lesion to the head. Before anything else, the residual's low-pass part
(over the head only, ``DRIFT_SIGMA`` voxels) is added back to the restoration (``with_drift``), so the
maps read only what changes within a few voxels (BENCHMARKS.md, "Anomaly detection: the scan's own
drift").

What is left of a healthy scan's map is then mostly the restorer's own errors, which differ from one
input to another; the restorations the maps read are averaged with the restoration of the left-right
mirrored scan (``vae3d.inference.reconstruct(..., mirror=True)``; ``MIRROR_AVERAGED``), which
cancels part of them while a lesion stays where it is (BENCHMARKS.md, "Anomaly detection: averaging
the restoration"). The restoring is the caller's (this module takes tensors); the statistics record
how the restorations they were fitted on were made (``mirror_averaged``), so every map is made alike.

Healthy scans also differ in how well they are restored everywhere (their noise, an unusual head): one
the restorer errs on all over has more voxels at a high ``|z|`` and ranks among lesioned scans. Each
scan's ``|z|`` is divided by the square root of its own level (``scan_scale``; ``SCAN_SCALE_POWER``),
which a lesion is too small to move (BENCHMARKS.md, "Anomaly detection: the scan's own residual level").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from monai.transforms import GaussianSmooth
from monai.utils import convert_to_tensor

from vae3d.config import FALSE_POSITIVE_RATE, FPR_CONFIDENCE  # the threshold's defaults (train.anomaly)

# the map's settings, chosen on the development cohort (BENCHMARKS.md, "Anomaly detection: map settings"):
# a scan's score: the mean of its top 0.01% map voxels (26 of 64^3: a small lesion's core; 0.02% until
# 2026-12-05, BENCHMARKS.md "Anomaly detection: the score's top fraction"; a version keeps the one it recorded)
TOP_FRACTION = 0.0001
LEGACY_TOP_FRACTION = 0.0005  # the score of versions calibrated before their thresholds recorded it
ENVELOPE_SIGMA = 1.0  # Gaussian smoothing of the healthy envelope, in voxels
STD_FLOOR = 0.05  # the healthy spread's floor: a residual must reach 5% of the range to count as unusual
SIGMA = 1.5  # Gaussian smoothing of the map without a head, in voxels
# with the head (BENCHMARKS.md, "Anomaly detection: levers for the map"): its logits / 4 before the
# sigmoid (it saturates at 1.0 on healthy scans' hard places too) and the normalised residual smoothed
# less, as the head already weighs it voxel by voxel
HEAD_TEMPERATURE = 4.0
HEAD_SIGMA = 1.0
LEGACY_HEAD = {"head_temperature": 1.0, "head_sigma": 1.5}  # versions stored before these were recorded
DRIFT_SIGMA = 8.0  # the residual's low-pass (voxels) put back into the restoration: the scan's own slow drift
DRIFT_MASK = 0.05  # where the drift is measured: the head (intensity above this)
MIRROR_AVERAGED = True  # restorations averaged with the left-right mirrored scan's (two restorer passes)
# the normalised residual divided by the scan's own residual level (its in-brain |z| quantile) to this power:
# a scan the restorer errs on everywhere (noise, an unusual head) scores lower (0: not divided; chosen on
# the development cohorts, BENCHMARKS.md "Anomaly detection: the scan's own residual level", 2026-12-06)
SCAN_SCALE_POWER = 0.5
SCAN_SCALE_QUANTILE = 0.9


@dataclass(frozen=True)
class HealthyResiduals:
    """Voxel-wise statistics of healthy scans' signed residuals on the model's grid, (S, S, S)
    each: ``mean`` and ``std`` of ``x - f(x)``, and ``brain``, where maps are scored; ``head``,
    the discriminative head (``vae3d.anomaly_head``) or None; ``envelope``, the healthy scans' mean
    map with the head, subtracted from a new scan's (None: nothing subtracted); ``head_temperature``
    and ``head_sigma``, how the map with the head is made (its logits' divisor, the normalised
    residual's smoothing): stored with the head, as the envelope and thresholds depend on them;
    ``drift_sigma``, the low-pass put back into restorations (``with_drift``) before the statistics
    were fitted, so every map must too (None: none, as for versions stored before it existed);
    ``mirror_averaged``, whether the restorations they were fitted on were averaged with the left-right
    mirrored scan's, so a new scan's must be (False for versions stored before it existed);
    ``scan_scale_power``, the power of the scan's own residual level the normalised residual is
    divided by (``scan_scale``; 0, as for versions stored before it existed: not divided)."""

    mean: torch.Tensor
    std: torch.Tensor
    brain: torch.Tensor
    head: torch.nn.Module | None = None
    envelope: torch.Tensor | None = None
    head_temperature: float = HEAD_TEMPERATURE
    head_sigma: float = HEAD_SIGMA
    drift_sigma: float | None = None
    mirror_averaged: bool = False
    scan_scale_power: float = 0.0

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors only: saved with the model version, loaded with ``weights_only=True``."""
        out = {"mean": self.mean.half(), "std": self.std.half(), "brain": self.brain.to(torch.uint8)}
        if self.head is not None:
            out["head_features"] = torch.tensor(self.head.features)
            out["head_in_channels"] = torch.tensor(getattr(self.head, "in_channels", 2))
            if getattr(self.head, "mirror", False):
                out["head_mirror"] = torch.tensor(True)
            out |= {f"head.{k}": v.half() for k, v in self.head.state_dict().items()}
            out |= {"head_temperature": torch.tensor(float(self.head_temperature)),
                    "head_sigma": torch.tensor(float(self.head_sigma))}
        if self.envelope is not None:
            out["envelope"] = self.envelope.half()
        if self.drift_sigma is not None:
            out["drift_sigma"] = torch.tensor(float(self.drift_sigma))
        if self.mirror_averaged:
            out["mirror_averaged"] = torch.tensor(True)
        if self.scan_scale_power:
            out["scan_scale_power"] = torch.tensor(float(self.scan_scale_power))
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> HealthyResiduals:
        head = None
        if "head_features" in state:
            from vae3d.anomaly_head import build_head

            head = build_head(tuple(state["head_features"].tolist()), int(state.get("head_in_channels", 2)),
                              bool(state.get("head_mirror", False)))
            head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
            head.eval()
        envelope = state["envelope"].float() if "envelope" in state else None
        how = {k: float(state[k]) if k in state else v for k, v in LEGACY_HEAD.items()}
        drift = float(state["drift_sigma"]) if "drift_sigma" in state else None
        return cls(state["mean"].float(), state["std"].float(), state["brain"].bool(), head, envelope, **how,
                   drift_sigma=drift, mirror_averaged=bool(state.get("mirror_averaged", False)),
                   scan_scale_power=float(state.get("scan_scale_power", 0.0)))


def _smooth(volumes: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each (1, D, H, W) volume of (B, 1, D, H, W) Gaussian-smoothed (MONAI)."""
    if sigma <= 0:
        return volumes
    smooth = GaussianSmooth(sigma=sigma)
    return torch.stack([convert_to_tensor(smooth(v), track_meta=False) for v in volumes])


def with_drift(x: torch.Tensor, recon: torch.Tensor, sigma: float | None = DRIFT_SIGMA) -> torch.Tensor:
    """``recon`` with the scan's slow drift put back: the residual ``x - recon`` Gaussian-smoothed
    over the head only (``sigma`` voxels; intensity above ``DRIFT_MASK``, normalised by the
    smoothed mask so the background does not pull it down) added to it inside the head. The
    residual ``x - with_drift(x, recon)`` keeps what changes within a few voxels (a lesion of
    radius 5 voxels loses about 6% of its contrast at sigma 8). ``sigma`` None: ``recon``."""
    if sigma is None:
        return recon
    head = (x > DRIFT_MASK).float()
    drift = _smooth((x.float() - recon.float()) * head, sigma) / _smooth(head, sigma).clamp_min(1e-3)
    return recon.float() + drift * head


def fit_healthy(healthy: torch.Tensor, recon: torch.Tensor, std_sigma: float = 1.0, std_floor: float = STD_FLOOR,
                brain_threshold: float = 0.1) -> HealthyResiduals:
    """Voxel-wise residual statistics of ``healthy`` (B, 1, S, S, S) volumes (the validation split)
    and the model's reconstructions ``recon`` of them.

    ``std`` is smoothed (``std_sigma`` voxels) and floored at ``std_floor``: with a dozen scans a
    voxel's own spread is noisy, and a near-zero spread (background) would turn noise into alarms.
    ``brain`` is where the healthy mean image exceeds ``brain_threshold``. A single volume gives
    no spread: its ``std`` is the floor everywhere.
    """
    if len(healthy) == 0:
        raise ValueError("need healthy volumes to fit residual statistics, got none")
    residuals = (healthy.float() - recon.float())[:, 0]
    spread = residuals.std(0) if len(residuals) > 1 else torch.zeros_like(residuals[0])
    std = _smooth(spread[None, None], std_sigma)[0, 0].clamp_min(std_floor)
    return HealthyResiduals(residuals.mean(0), std, healthy[:, 0].mean(0) > brain_threshold)


def scan_scale(z: torch.Tensor, brain: torch.Tensor, power: float) -> torch.Tensor:
    """Each scan's own residual level to ``power``, (B, 1, 1, 1, 1): the ``SCAN_SCALE_QUANTILE``
    quantile of its normalised residual's magnitude ``|z|`` (B, 1, S, S, S) inside ``brain`` (every
    7th voxel: a lesion is too small to move it), floored at 0.1. Ones for ``power`` 0."""
    if not power:
        return torch.ones(len(z), 1, 1, 1, 1)
    level = torch.quantile(z[:, 0][:, brain][:, ::7].abs().float(), SCAN_SCALE_QUANTILE, dim=1)
    return level.clamp_min(0.1).pow(power).view(-1, 1, 1, 1, 1)


def anomaly_map(x: torch.Tensor, recon: torch.Tensor, healthy: HealthyResiduals | None = None,
                sigma: float = SIGMA, mask_threshold: float = 0.05) -> torch.Tensor:
    """Voxel-wise anomaly, (B, 1, S, S, S).

    With ``healthy``: ``recon`` first takes back the scan's drift (``with_drift``, by the statistics'
    ``drift_sigma``); then ``|(x - recon - mean) / std|`` Gaussian-smoothed (``sigma`` voxels), zero
    outside the healthy brain mask; with its ``head`` too, smoothed by ``healthy.head_sigma``
    instead, the geometric mean of that and the head's probability (its logits divided by
    ``healthy.head_temperature``), less the healthy ``envelope`` (floored at zero); ``|z|`` is first
    divided by the scan's own residual level (``scan_scale``, by ``healthy.scan_scale_power``).
    Without (a model registered before the statistics existed): ``|x - recon|`` smoothed, zero outside
    the head (where input or reconstruction exceeds ``mask_threshold``).
    """
    if healthy is None:
        mask = (x > mask_threshold) | (recon > mask_threshold)
        return _smooth((x.float() - recon.float()).abs(), sigma) * mask
    recon = with_drift(x, recon, healthy.drift_sigma)
    z = (x.float() - recon - healthy.mean) / healthy.std
    magnitude = z.abs() / scan_scale(z, healthy.brain, healthy.scan_scale_power)
    if healthy.head is None:
        return _smooth(magnitude, sigma) * healthy.brain
    from vae3d.anomaly_head import head_map

    amap = _smooth(magnitude, healthy.head_sigma) * healthy.brain
    amap = (head_map(healthy.head, x, recon, z, temperature=healthy.head_temperature) * amap).sqrt()
    return amap if healthy.envelope is None else (amap - healthy.envelope).clamp_min(0)


def anomaly_score(amap: torch.Tensor, top_fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Per-volume score: the mean of the highest ``top_fraction`` of its voxels. (B,)."""
    flat = amap.flatten(1)
    k = max(1, int(flat.shape[1] * top_fraction))
    return flat.topk(k, dim=1).values.mean(1)


def score_threshold(healthy_scores: np.ndarray, false_positive_rate: float = FALSE_POSITIVE_RATE,
                    confidence: float = FPR_CONFIDENCE) -> float:
    """The score threshold (a score above it is flagged) that, with probability ``confidence`` over
    the healthy scans calibrated on, flags at most ``false_positive_rate`` of new healthy scans: a
    one-sided tolerance bound. A threshold set to flag that rate on average flags more than it on
    about half the cohorts it is calibrated on (as ``confidence`` 0.5 does).

    Distribution-free where the scans allow it: the r-th smallest score, for the smallest r whose
    coverage of healthy scores (Beta(r, n - r + 1)) reaches ``1 - rate`` with that probability,
    ``P(Binomial(n, 1 - rate) <= r - 1) >= confidence`` (at 5% and 0.9: 45 scans or more). With fewer,
    the normal tolerance bound ``mean + k * sd``, ``k = nct(n - 1, z(1 - rate) sqrt(n)).ppf(confidence)
    / sqrt(n)`` (ISO 16269-6), and never below their maximum; hand-written because SciPy has the
    non-central t but no tolerance bound. One score, or a rate of 0: their maximum."""
    s = np.sort(np.asarray(healthy_scores, dtype=np.float64))
    if len(s) == 0:
        raise ValueError("no healthy scores to calibrate on")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if len(s) < 2 or false_positive_rate <= 0:
        return float(s[-1])
    from scipy.stats import binom, nct, norm

    n = len(s)
    rank = int(binom.ppf(confidence, n, 1 - false_positive_rate)) + 1  # the smallest r with coverage
    if rank <= n:
        return float(s[rank - 1])
    k = nct.ppf(confidence, n - 1, norm.ppf(1 - false_positive_rate) * np.sqrt(n)) / np.sqrt(n)
    return float(max(s.mean() + k * s.std(ddof=1), s[-1]))


def out_of_sample_maps(healthy: torch.Tensor, recon: torch.Tensor, normalise: bool = True,
                       head: torch.nn.Module | None = None, head_temperature: float = HEAD_TEMPERATURE,
                       head_sigma: float = HEAD_SIGMA, drift_sigma: float | None = DRIFT_SIGMA,
                       mirror_averaged: bool = MIRROR_AVERAGED,
                       scan_scale_power: float = SCAN_SCALE_POWER) -> tuple[HealthyResiduals | None, torch.Tensor]:
    """The statistics stored with a model version, from healthy (validation) scans and the model's
    reconstructions of them, and each of these scans' map as a new scan's would be (``calibrate``
    sets the thresholds on them); ``head``, the discriminative head stored with them
    (``vae3d.anomaly_head``; needs ``normalise``), with how the map uses it (``HealthyResiduals``);
    ``drift_sigma``, the scan's drift put back into every restoration first (``with_drift``);
    ``mirror_averaged``, whether ``recon`` was restored so (``vae3d.inference.reconstruct(...,
    mirror=True)``): recorded with the statistics, so every map's restoration is made alike;
    ``scan_scale_power``, how much each map's normalised residual is divided by its scan's own level.

    The statistics are fitted on every scan; the maps are out of sample: each scan's map uses
    statistics fitted on the others (leave-one-out). A scan inside its own statistics looks more
    typical than a new scan does, so in-sample scores would set the threshold too low and flag far
    more new healthy scans than asked. With a head (and at least 3 scans) the envelope is the mean of
    these maps, smoothed; each scan's own map has the mean of the others' subtracted.

    Returns (the statistics, or None with ``normalise=False``; the maps, (B, 1, S, S, S)).
    """
    how = {"head": head, "head_temperature": head_temperature, "head_sigma": head_sigma, "drift_sigma": drift_sigma,
           "mirror_averaged": mirror_averaged, "scan_scale_power": scan_scale_power}
    restored = with_drift(healthy, recon, drift_sigma) if normalise else recon  # once: the maps take ``recon``
    stats = replace(fit_healthy(healthy, restored), **how) if normalise else None
    if stats is None or len(healthy) < 3:  # nothing fitted, or too few scans to leave one out
        return stats, anomaly_map(healthy, recon, stats)
    keep = torch.ones(len(healthy), dtype=torch.bool)
    maps = []
    for i in range(len(healthy)):
        keep[i] = False
        others = replace(fit_healthy(healthy[keep], restored[keep]), **how)
        keep[i] = True
        maps.append(anomaly_map(healthy[i : i + 1], recon[i : i + 1], others))
    amap = torch.cat(maps)
    if head is not None:
        total = amap.sum(0, keepdim=True)
        others_mean = (total - amap) / (len(amap) - 1)
        amap = (amap - _smooth(others_mean, ENVELOPE_SIGMA)).clamp_min(0)
        stats = replace(stats, envelope=_smooth(total / len(amap), ENVELOPE_SIGMA)[0, 0])
    return stats, amap


def calibrate(healthy: torch.Tensor, recon: torch.Tensor, normalise: bool = True,
              false_positive_rate: float = FALSE_POSITIVE_RATE, confidence: float = FPR_CONFIDENCE,
              **how) -> tuple[HealthyResiduals | None, dict]:
    """The statistics and thresholds stored with a model version, from healthy (validation) scans
    and the model's reconstructions of them (``how``: the head and how maps are made,
    ``out_of_sample_maps``), set on the scans' out-of-sample maps.

    Returns (the statistics, or None with ``normalise=False``; the thresholds: ``score_threshold``,
    which flags at most ``false_positive_rate`` of new healthy scans with probability ``confidence``
    (the function ``score_threshold``), ``voxel_threshold``, the 99.9th percentile of their in-brain
    map voxels, ``top_fraction``, the score's, the rate and confidence, the number of scans, the map's kind).
    """
    stats, amap = out_of_sample_maps(healthy, recon, normalise, **how)
    inside = amap[:, 0][:, stats.brain] if stats is not None else amap[amap > 0]
    inside = inside.flatten()[:: max(1, inside.numel() // 1_000_000)]  # torch.quantile's input limit
    return stats, {"score_threshold": score_threshold(anomaly_score(amap).numpy(), false_positive_rate, confidence),
                   "voxel_threshold": float(torch.quantile(inside.float(), 0.999)) if inside.numel() else 0.0,
                   "top_fraction": TOP_FRACTION, "false_positive_rate": false_positive_rate,
                   "fpr_confidence": confidence, "calibration_volumes": len(healthy),
                   "map": "residual" if stats is None else "healthy-normalised residual"
                   + (" x discriminative head" if how.get("head") is not None else "")
                   + (" - healthy envelope" if stats is not None and stats.envelope is not None else "")}


def calibrated_score(amap: torch.Tensor, thresholds: dict) -> torch.Tensor:
    """Per-volume scores as a version's ``thresholds`` were calibrated: over their ``top_fraction``
    (``LEGACY_TOP_FRACTION`` for a version calibrated before they recorded it). (B,)."""
    return anomaly_score(amap, thresholds.get("top_fraction", LEGACY_TOP_FRACTION))


def verdict(score: float, thresholds: dict) -> dict:
    """What an anomaly output's sidecar records: its ``score``, whether it is ``flagged`` (above
    the calibrated ``score_threshold``; None for a model without calibration) and the thresholds."""
    flagged = score > thresholds["score_threshold"] if "score_threshold" in thresholds else None
    return {"score": score, "flagged": flagged, **thresholds}
