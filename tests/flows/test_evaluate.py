"""The evaluation flow end to end on a tiny trained model: every table computed and logged."""

from __future__ import annotations

import json
import math

import numpy as np
from mlflow.tracking import MlflowClient

from flows.evaluate import evaluate_flow


def test_evaluation_writes_every_table_and_logs_to_mlflow(trained):
    settings, _ = trained
    settings = settings.model_copy(update={"seed": 3})
    results = evaluate_flow(settings, n_synthetic=4)
    out = settings.workspace / "evaluation" / "vae3d-v1"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["n_test"] == results["n_test"] > 0
    md = (out / "report.md").read_text()
    for heading in ("## Reconstruction", "## Denoising", "## Super-resolution", "## Anomaly detection", "## Synthesis",
                    "### Memorisation audit", "## Targets"):
        assert heading in md
    for level in ("3%", "5%", "10%"):
        rows = results["denoising"][level]
        assert set(rows) == {"noisy", "gaussian", "nl_means", "vae", "vae_model_only"}
        assert all(math.isfinite(r["psnr"]) and math.isfinite(r["ssim"]) for r in rows.values())
        # a stronger noise level makes the noisy input worse: the numbers are computed, not typed
    assert results["denoising"]["10%"]["noisy"]["psnr"] < results["denoising"]["3%"]["noisy"]["psnr"]
    sr = results["superres"]["x2"]
    assert set(sr) == {"trilinear", "cubic_bspline", "cubic_bspline_bp", "vae", "vae_model_only"}
    assert sr["vae"]["psnr"] > sr["vae_model_only"]["psnr"], "back-projection onto the low-resolution data helps"
    assert sr["cubic_bspline_bp"]["psnr"] > sr["cubic_bspline"]["psnr"], "the classical baseline gets the same step"
    assert all(math.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in sr.values())
    assert "VAE super-resolution x2 beats cubic B-spline by >= 1.5 dB" in results["targets"]
    for method in ("vae", "vae_residual", "atlas_deviation"):
        m = results["anomaly"][method]
        assert 0.0 <= m["voxel_auprc"] <= 1.0 and 0.0 <= m["volume_auroc"] <= 1.0 and 0.0 <= m["best_dice"] <= 1.0
        assert m["volume_auroc_low"] <= m["volume_auroc"] <= m["volume_auroc_high"]  # its interval
    # each test scan lesioned anomaly.COPIES times, and each scan's score kept to audit the verdicts with
    ano, n_test = results["anomaly"], results["n_test"]
    assert ano["lesioned_copies"] == 3 and f"3 times, other lesions each time ({3 * n_test} lesioned copies)" in md
    for method in ("vae", "vae_residual", "atlas_deviation"):
        scores = ano["scores"][method]
        assert len(scores["healthy"]) == n_test and len(scores["lesioned"]) == 3 * n_test
        assert ano[method]["healthy_fpr"] == np.mean(np.array(scores["healthy"]) > ano[method]["score_threshold"])
    vae = results["anomaly"]["vae"]
    assert f"{vae['volume_auroc']:.3f} [{vae['volume_auroc_low']:.2f}, {vae['volume_auroc_high']:.2f}]" in md
    # thresholds set as the version's were (the fixture's train.anomaly.fpr_confidence), and the report says how
    assert results["anomaly"]["calibration"] == {"false_positive_rate": 0.05, "confidence": 0.8,
                                                 "validation_scans": results["n_val"]}
    assert "at most 5% of healthy scans with 80% confidence" in md
    assert "(Newcombe's score interval, 95%; a scan's copies counted once)" in md
    syn = results["synthesis"]
    assert syn["n"] == 4 and syn["histogram_wasserstein"] >= 0 and 0 < syn["diversity_ssim"] <= 1
    assert isinstance(syn["memorisation"]["n_flagged"], int)
    assert set(results["targets"]) and all(isinstance(v, bool) for v in results["targets"].values())
    for png in ("anomaly_overlay.png", "synthetic_samples.png", "restoration.png"):
        assert (out / png).stat().st_size > 1000

    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    version = client.get_model_version("vae3d", "1")
    assert "eval_anomaly_vae_volume_auroc" in version.tags
    run = client.get_run(version.run_id)
    assert {"eval_denoise_10pct_vae_psnr", "eval_denoise_10pct_vae_ssim", "eval_superres_x2_vae_psnr",
            "eval_superres_x2_cubic_bspline_psnr", "eval_anomaly_vae_volume_auroc_low",
            "eval_anomaly_vae_volume_auroc_high"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(version.run_id, "evaluation")} >= {"evaluation/report.md"}
    # the metrics are linked to the logged model (MLflow 3) and to the test split they were measured on
    logged = client.get_logged_model(version.model_id or version.source.split("/")[-1])
    linked = {m.key: m for m in logged.metrics}
    assert "eval_recon_ssim" in linked and linked["eval_recon_ssim"].dataset_name == "vae3d-test"
    # the realism measures of #18 are in the results and the targets
    assert 0.0 <= syn["c2st_accuracy"] <= 1.0 and 0 < syn["ms_ssim_synthetic"] <= 1 and syn["prior"] == "lowrank"
    assert "synthesis: two-sample classifier accuracy <= 0.75" in results["targets"]
