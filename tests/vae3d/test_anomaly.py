from dataclasses import replace

import numpy as np
import pytest
import torch

from vae3d import anomaly


def _coverage(n: int, confidence: float, draws: int = 600, rate: float = 0.05) -> tuple[float, float]:
    """Thresholds set on ``draws`` calibration sets of ``n`` standard-normal healthy scores: the share
    of them that flag at most ``rate`` of new healthy scores (known exactly here), and the mean share they flag."""
    from scipy.stats import norm

    rng = np.random.default_rng(n)
    fpr = np.array([norm.sf(anomaly.score_threshold(rng.normal(size=n), rate, confidence)) for _ in range(draws)])
    return float(np.mean(fpr <= rate)), float(fpr.mean())


@pytest.mark.parametrize("n", [4, 15, 60])  # the demo's validation split, a quality run's, a large one
def test_the_threshold_flags_at_most_the_rate_with_the_requested_confidence(n):
    """A tolerance bound: over calibration sets, the share of thresholds that keep the false-positive
    rate at or under 5% is the confidence asked for (normal bound below 45 scans, order statistic above)."""
    covered, mean_fpr = _coverage(n, 0.9)
    assert 0.86 <= covered <= 0.96, covered
    assert mean_fpr < 0.05, mean_fpr
    half, _ = _coverage(n, 0.5)  # confidence 0.5: above the rate about half the time
    assert 0.4 <= half <= 0.65, half


def test_a_threshold_from_many_scans_is_one_of_their_scores_and_never_below_the_last_of_few():
    scores = np.random.default_rng(0).permutation(np.arange(100.0))
    # 100 scans at 5%, 0.9: the 99th smallest score, the smallest r with P(Binomial(100, 0.95) <= r - 1) >= 0.9
    assert anomaly.score_threshold(scores, 0.05, 0.9) == 98.0
    assert anomaly.score_threshold(scores, 0.0) == 99.0
    few = np.arange(13.0)  # too few for any order statistic: the normal bound, beyond their maximum
    assert anomaly.score_threshold(few, 0.05) > 12.0
    with pytest.raises(ValueError, match="confidence"):
        anomaly.score_threshold(scores, 0.05, 1.0)


def _healthy(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Scans that are a fixed anatomy plus noise whose spread differs by region, and a perfect
    restorer's output (the anatomy): residuals are the noise."""
    g = torch.Generator().manual_seed(seed)
    anatomy = torch.zeros(1, 1, size, size, size)
    anatomy[..., 3:-3, 3:-3, 3:-3] = 0.6
    spread = torch.full_like(anatomy, 0.02)
    spread[..., : size // 2, :, :] = 0.06  # one half of the brain is harder to restore
    scans = anatomy + spread * torch.randn((n, 1, size, size, size), generator=g)
    return scans, anatomy.expand(n, -1, -1, -1, -1)


def test_calibration_on_healthy_scans_holds_its_false_positive_rate_on_new_healthy_scans():
    # few calibration scans, as in a validation split: a scan inside its own statistics looks typical
    fit_scans, fit_recon = _healthy(40, seed=1)
    stats, thresholds = anomaly.calibrate(fit_scans, fit_recon, false_positive_rate=0.05)
    new_scans, new_recon = _healthy(400, seed=2)
    scores = anomaly.anomaly_score(anomaly.anomaly_map(new_scans, new_recon, stats)).numpy()
    fpr = float(np.mean(scores > thresholds["score_threshold"]))
    # at most 5% (with 90% confidence); calibrating on in-sample maps flags 7.5% of these new scans
    assert fpr <= 0.05, fpr
    assert thresholds["false_positive_rate"] == 0.05 and thresholds["calibration_volumes"] == 40
    assert thresholds["fpr_confidence"] == anomaly.FPR_CONFIDENCE


def test_normalising_by_healthy_residuals_removes_the_hard_regions_from_the_map():
    scans, recon = _healthy(60, seed=3)
    stats = anomaly.fit_healthy(scans[:50], recon[:50], std_sigma=0.0, std_floor=0.005)
    plain = anomaly.anomaly_map(scans[50:], recon[50:], sigma=0.0)
    normalised = anomaly.anomaly_map(scans[50:], recon[50:], stats, sigma=0.0)
    half = 16 // 2
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    hard, easy = plain[inner][..., :half - 4, :, :].mean(), plain[inner][..., half - 4 :, :, :].mean()
    assert hard > 2 * easy  # the raw residual lights up where restoring is hard, lesion or not
    z_hard, z_easy = normalised[inner][..., :half - 4, :, :].mean(), normalised[inner][..., half - 4 :, :, :].mean()
    assert z_hard == pytest.approx(float(z_easy), rel=0.25)


def test_the_statistics_round_trip_through_tensors_only():
    scans, recon = _healthy(4, seed=4)
    stats = anomaly.fit_healthy(scans, recon)
    state = stats.state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    back = anomaly.HealthyResiduals.from_state(state)
    assert torch.allclose(back.std, stats.std, rtol=1e-2) and torch.equal(back.brain, stats.brain)


def test_a_stored_head_survives_storage_and_shapes_the_map(tmp_path):
    """With a discriminative head the map is the geometric mean of the head's probability and the
    normalised residual, less the healthy envelope; the head and the envelope travel with the
    statistics (tensors, float16) and come back."""
    from vae3d.anomaly_head import build_head, head_map
    from vae3d.checkpoint import load_checkpoint, save_checkpoint

    scans, recon = _healthy(5, seed=4, size=32)
    torch.manual_seed(0)
    head = build_head((4, 4, 8, 8, 16, 4)).eval()
    stats, thresholds = anomaly.calibrate(scans, recon, head=head)
    assert stats.head is head and stats.envelope is not None
    assert thresholds["map"] == "healthy-normalised residual x discriminative head - healthy envelope"
    normalised = anomaly.anomaly_map(scans, recon, replace(stats, head=None), sigma=anomaly.HEAD_SIGMA)
    with_head = anomaly.anomaly_map(scans, recon, stats)
    restored = anomaly.with_drift(scans, recon)  # the head reads the restoration with the scan's drift put back
    tempered = head_map(head, scans, restored, temperature=anomaly.HEAD_TEMPERATURE)
    expected = ((tempered * normalised).sqrt() - stats.envelope).clamp_min(0)
    assert torch.allclose(with_head, expected)
    back = anomaly.HealthyResiduals.from_state(load_checkpoint(save_checkpoint(tmp_path / "a.pt", stats.state())))
    assert back.head is not None and back.head.features == head.features and not back.head.training
    assert (back.head_temperature, back.head_sigma) == (anomaly.HEAD_TEMPERATURE, anomaly.HEAD_SIGMA)
    assert back.drift_sigma == stats.drift_sigma == anomaly.DRIFT_SIGMA
    assert torch.allclose(anomaly.anomaly_map(scans, recon, back), with_head, rtol=0.02, atol=0.02)
    assert torch.allclose(back.envelope, stats.envelope, rtol=1e-2, atol=1e-3)
    assert anomaly.HealthyResiduals.from_state(replace(stats, head=None, envelope=None).state()).head is None


def test_a_head_that_reads_the_normalised_residual_is_given_it_and_survives_storage():
    from vae3d.anomaly_head import build_head, head_map

    scans, recon = _healthy(5, seed=4, size=32)
    torch.manual_seed(0)
    head = build_head((4, 4, 8, 8, 16, 4), in_channels=3).eval()
    stats, _ = anomaly.calibrate(scans, recon, head=head)
    restored = anomaly.with_drift(scans, recon)
    z = (scans - restored - stats.mean) / stats.std
    normalised = anomaly.anomaly_map(scans, recon, replace(stats, head=None), sigma=anomaly.HEAD_SIGMA)
    tempered = head_map(head, scans, restored, z, temperature=anomaly.HEAD_TEMPERATURE)
    expected = ((tempered * normalised).sqrt() - stats.envelope).clamp_min(0)
    assert torch.allclose(anomaly.anomaly_map(scans, recon, stats), expected)
    with pytest.raises(ValueError, match="normalised residual"):
        head_map(head, scans, recon)
    back = anomaly.HealthyResiduals.from_state(stats.state())
    assert back.head.in_channels == 3 and back.head.features == head.features


def test_a_head_that_reads_the_mirrored_residual_is_given_it_and_survives_storage():
    from vae3d.anomaly_head import build_head, head_inputs, head_map

    scans, recon = _healthy(5, seed=4, size=32)
    torch.manual_seed(0)
    head = build_head((4, 4, 8, 8, 16, 4), mirror=True).eval()
    stats, _ = anomaly.calibrate(scans, recon, head=head)
    restored = anomaly.with_drift(scans, recon)
    with torch.no_grad():
        direct = torch.sigmoid(head(head_inputs(scans, restored, mirror=True)) / anomaly.HEAD_TEMPERATURE)
    assert torch.allclose(head_map(head, scans, restored, temperature=anomaly.HEAD_TEMPERATURE), direct, atol=1e-6)
    back = anomaly.HealthyResiduals.from_state(stats.state())
    assert back.head.mirror and back.head.in_channels == 2
    assert torch.allclose(anomaly.anomaly_map(scans, recon, back), anomaly.anomaly_map(scans, recon, stats),
                          rtol=0.02, atol=0.02)
    plain = replace(stats, head=build_head((4, 4, 8, 8, 16, 4)))
    assert not anomaly.HealthyResiduals.from_state(plain.state()).head.mirror


class _HeadWithAFixedFalsePositive(torch.nn.Module):
    """A head that is sure of an anomaly in one region of every scan (as the shipped head is at the
    frontal poles) and undecided (0.5) elsewhere."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("logit", region.float()[None, None] * 6.0)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return (self.logit * self.scale).expand(len(inputs), -1, -1, -1, -1)


def test_the_healthy_envelope_takes_out_a_head_s_fixed_false_positive_and_the_threshold_still_holds():
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    region[4:8, 4:12, 4:12] = True  # in the noisier half of ``_healthy``'s brain
    head = _HeadWithAFixedFalsePositive(region)
    fit_scans, fit_recon = _healthy(40, seed=1)
    stats, thresholds = anomaly.calibrate(fit_scans, fit_recon, head=head)
    assert float(stats.envelope[region].mean()) > 1.5 * float(stats.envelope[~region & stats.brain].mean())
    new_scans, new_recon = _healthy(400, seed=2)
    maps = anomaly.anomaly_map(new_scans, new_recon, stats)
    without = anomaly.anomaly_map(new_scans, new_recon, replace(stats, envelope=None))
    assert float(maps[:, 0][:, region].mean()) < 0.35 * float(without[:, 0][:, region].mean())
    fpr = float(np.mean(anomaly.calibrated_score(maps, thresholds).numpy() > thresholds["score_threshold"]))
    assert fpr <= 0.06, fpr
    lesioned = new_scans[:1].clone()
    lesioned[..., 10:13, 6:9, 6:9] += 0.3  # outside the region, in the quieter half
    score = float(anomaly.calibrated_score(anomaly.anomaly_map(lesioned, new_recon[:1], stats), thresholds)[0])
    assert anomaly.verdict(score, thresholds)["flagged"]


def test_a_version_calibrated_before_thresholds_recorded_the_score_s_fraction_is_scored_as_then():
    amap = torch.arange(64.0**3).reshape(1, 1, 64, 64, 64)
    old = anomaly.calibrated_score(amap, {"score_threshold": 1.0})
    assert torch.equal(old, anomaly.anomaly_score(amap, anomaly.LEGACY_TOP_FRACTION))
    new = anomaly.calibrated_score(amap, {"score_threshold": 1.0, "top_fraction": 0.0002})
    assert torch.equal(new, anomaly.anomaly_score(amap, 0.0002)) and float(new[0]) > float(old[0])


def test_a_version_stored_before_the_head_settings_were_recorded_makes_its_map_as_then():
    """Its envelope and thresholds were calibrated on untempered head probabilities and a 1.5-voxel
    smoothing: loaded, it keeps making that map, so its stored threshold still means what it meant."""
    from vae3d.anomaly_head import build_head, head_map

    scans, recon = _healthy(4, seed=4, size=32)
    torch.manual_seed(0)
    head = build_head((4, 4, 8, 8, 16, 4)).eval()
    stats = replace(anomaly.fit_healthy(scans, recon), head=head)
    legacy = {k: v for k, v in stats.state().items() if k not in ("head_temperature", "head_sigma")}
    back = anomaly.HealthyResiduals.from_state(legacy)
    assert (back.head_temperature, back.head_sigma, back.drift_sigma) == (1.0, 1.5, None)
    normalised = anomaly.anomaly_map(scans, recon, replace(back, head=None), sigma=1.5)
    expected = (head_map(back.head, scans, recon) * normalised).sqrt()
    assert torch.allclose(anomaly.anomaly_map(scans, recon, back), expected)
    assert not torch.allclose(anomaly.anomaly_map(scans, recon, stats), expected, rtol=1e-3, atol=1e-3)


def _drifted(scans: torch.Tensor, depth: float, seed: int) -> torch.Tensor:
    """``scans`` under a slow intensity drift the restorer does not give back: a broad dip (a
    Gaussian of 10 voxels' spread, ``depth`` deep) at a seeded place in the brain, as a bias field makes."""
    g = torch.Generator().manual_seed(seed)
    size = scans.shape[-1]
    centre = torch.randint(size // 3, 2 * size // 3, (3,), generator=g).float()
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    dip = torch.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / (2 * 10.0**2))
    return scans * (1 - depth * dip)


def test_the_scan_s_own_drift_is_put_back_into_the_restoration_and_a_lesion_is_not():
    _, recon = _healthy(1, seed=5, size=32)
    drifted = _drifted(recon, 0.25, seed=0)  # the anatomy under a drift, without noise
    brain = recon > 0.3
    raw = (drifted - recon)[brain].abs().mean()
    kept = (drifted - anomaly.with_drift(drifted, recon))[brain].abs().mean()
    assert float(kept) < 0.5 * float(raw), (kept, raw)
    lesioned = drifted.clone()
    lesioned[..., 14:18, 14:18, 14:18] += 0.3
    inside = (slice(None), slice(None), slice(14, 18), slice(14, 18), slice(14, 18))
    change = (lesioned - anomaly.with_drift(lesioned, recon)) - (drifted - anomaly.with_drift(drifted, recon))
    assert float(change[inside].mean()) > 0.9 * 0.3  # the lesion stays in the residual
    assert torch.equal(anomaly.with_drift(drifted, recon, None), recon)


def test_a_healthy_scan_under_a_drift_is_not_flagged_and_a_version_without_the_setting_maps_as_then():
    fit_scans, fit_recon = _healthy(40, seed=1, size=32)
    new_scans, new_recon = _healthy(8, seed=2, size=32)
    drifted = torch.cat([_drifted(new_scans[i : i + 1], 0.12, seed=i) for i in range(len(new_scans))])
    verdicts = {}
    for sigma in (anomaly.DRIFT_SIGMA, None):
        stats, thresholds = anomaly.calibrate(fit_scans, fit_recon, drift_sigma=sigma)
        scores = anomaly.calibrated_score(anomaly.anomaly_map(drifted, new_recon, stats), thresholds).numpy()
        verdicts[sigma] = float(np.mean(scores > thresholds["score_threshold"]))
        legacy = {k: v for k, v in stats.state().items() if k != "drift_sigma"}
        back = anomaly.HealthyResiduals.from_state(legacy)
        as_then = anomaly.anomaly_map(drifted, new_recon, replace(stats, drift_sigma=None))
        assert back.drift_sigma is None
        assert torch.allclose(anomaly.anomaly_map(drifted, new_recon, back), as_then, rtol=1e-2, atol=1e-2)
    assert verdicts[anomaly.DRIFT_SIGMA] <= 0.125 and verdicts[None] >= 0.75, verdicts


def test_a_scan_restored_worse_everywhere_is_measured_in_its_own_units_and_a_lesion_still_shows():
    """With ``scan_scale_power`` 1 a healthy scan whose residual is twice as large everywhere (noisier,
    or an unusual head the restorer errs on) scores about as a typical one, where without it it scores far
    higher; a lesion is too small to move the scan's level, so it still raises the scan's score. The power
    is stored with the statistics, and a version stored before it existed divides by nothing."""
    fit_scans, fit_recon = _healthy(20, seed=1, size=32)
    new_scans, new_recon = _healthy(2, seed=2, size=32)
    noisy = new_recon + 2 * (new_scans - new_recon)
    lesioned = noisy.clone()
    lesioned[:, :, 20:24, 12:16, 12:16] += 0.5
    scores = {}
    for power in (0.0, 1.0):
        stats, _ = anomaly.calibrate(fit_scans, fit_recon, drift_sigma=None, scan_scale_power=power)
        assert stats.scan_scale_power == power
        scores[power] = [anomaly.anomaly_score(anomaly.anomaly_map(x, new_recon, stats)) for x in
                         (new_scans, noisy, lesioned)]
        _, worse, with_lesion = scores[power]
        assert bool((with_lesion > 1.5 * worse).all()), (power, with_lesion, worse)
    assert bool((scores[0.0][1] > 1.7 * scores[0.0][0]).all()), scores[0.0]
    assert bool((scores[1.0][1] < 1.2 * scores[1.0][0]).all()), scores[1.0]
    back = anomaly.HealthyResiduals.from_state(stats.state())
    assert back.scan_scale_power == 1.0
    legacy = {k: v for k, v in stats.state().items() if k != "scan_scale_power"}
    assert anomaly.HealthyResiduals.from_state(legacy).scan_scale_power == 0.0
