"""Evaluation flow: quality against classical baselines, logged to MLflow on the model version."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from mlflow.entities import Metric
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts import DatasetIndex, PipelineError
from data_contracts.generation import DEFAULT_MODEL_URI
from flows import model_loader
from flows.settings import Settings
from flows.tracking import init_store
from flows.workspace import Workspace, route_library_logs
from vae3d import anomaly as anomaly_maps
from vae3d import inference
from vae3d.data import load_volumes
from vae3d.evaluation import anomaly, c2st, denoising, report, superres, synthesis
from vae3d.figures import anomaly_overlay, restoration_review, slice_grid
from vae3d.files import atomic_write_text
from vae3d.generation import synthesize
from vae3d.seeding import derive_seed

NOISE_LEVELS = {"3%": 0.03, "5%": 0.05, "10%": 0.10}
SR_FACTORS = {"x2": 2}


def _batched(fn, x: torch.Tensor, size: int = 4) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(size)])


@task(cache_policy=NO_CACHE)
def load_splits(settings: Settings) -> dict[str, torch.Tensor]:
    index = require_held_out(settings)
    return {s: load_volumes([(i.cache_path, i.cache_digest) for i in index.split(s)]) for s in ("train", "val", "test")}


def require_held_out(settings: Settings) -> DatasetIndex:
    """The dataset index, or an error if val or test is empty (nothing to evaluate on)."""
    path = Workspace.at(settings.workspace).require_index()
    index = DatasetIndex.read(path)
    counts = index.counts()
    if not counts["val"] or not counts["test"]:
        raise PipelineError(
            f"evaluation needs scans in the val and test splits; the dataset has {counts}", where=str(path),
            fix="ingest more scans (with the default 70/15/15 split, 30 give about 4 val and 4 test), "
                "then vae3d preprocess and vae3d train")
    return index


def _case(label: str, clean, corrupted, restored, baseline, baseline_name: str) -> dict:
    """The first test volume of a restoration row, for the review figure."""
    return {"label": label, "clean": clean[0, 0].numpy(), "corrupted": corrupted[0, 0].clamp(0, 1).numpy(),
            "restored": restored[0, 0].numpy(), "baseline": baseline[0, 0].clamp(0, 1).numpy(),
            "baseline_name": baseline_name}


@task(cache_policy=NO_CACHE)  # tensors and a model as inputs: nothing to hash
def eval_denoising(model, val: torch.Tensor, test: torch.Tensor, seed: int, model_rmse: float) -> dict:
    """Each noise level: Gaussian and NLM (tuned on val) against `generate denoise`'s output
    (``vae``: the model fused with its input by their expected errors, ``model_rmse`` from val)
    and the model's restoration alone (``vae_model_only``)."""
    rows, cases = {}, []
    tune_val = val[:3]
    for name, sigma in NOISE_LEVELS.items():
        nv = denoising.add_rician(tune_val, sigma, derive_seed(seed, "val"))
        nt = denoising.add_rician(test, sigma, derive_seed(seed, "test"))
        g = denoising.tune(denoising.gaussian, nv, tune_val, [0.5, 0.75, 1.0, 1.5, 2.0])
        h = denoising.tune(denoising.nl_means, nv, tune_val, [f * sigma for f in (0.6, 0.9, 1.2, 1.6)])
        nlm, alone = denoising.nl_means(nt, h), inference.reconstruct_all(model, nt)
        restored = inference.fuse(nt, alone, model_rmse)
        rows[name] = {
            "noisy": denoising.scores(nt, test),
            "gaussian": {**denoising.scores(denoising.gaussian(nt, g), test), "param": f"sigma={g}"},
            "nl_means": {**denoising.scores(nlm, test), "param": f"h={h:.3f}"},
            "vae": {**denoising.scores(restored, test), "param": f"fused, model RMSE {model_rmse:.4f}"},
            "vae_model_only": denoising.scores(alone, test),
        }
        cases.append(_case(f"Rician {name}", test, nt, restored, nlm, "non-local means"))
    return {"rows": rows, "_cases": cases}


@task(cache_policy=NO_CACHE)  # tensors and a model as inputs: nothing to hash
def eval_superres(model, test: torch.Tensor) -> dict:
    """Each factor: test volumes averaged down, then cubic B-spline (plain and back-projected onto
    the low-resolution data, ``inference.back_project``) vs the model (from trilinear, shift-averaged),
    alone and as ``generate super-resolve`` writes it (back-projected, detail scaled:
    ``inference.data_consistent``)."""
    rows, cases = {}, []
    size = tuple(test.shape[2:])
    for name, factor in SR_FACTORS.items():
        low = superres.downsample(test, factor)
        cubic, linear = superres.cubic_upsample(low, size), superres.trilinear_upsample(low, size)
        alone = _batched(lambda c: inference.reconstruct_shift_averaged(model, c), linear)
        restored = inference.data_consistent(alone, low)
        rows[name] = {"trilinear": denoising.scores(linear, test), "cubic_bspline": denoising.scores(cubic, test),
                      # the classical answer to the same data-consistency step: what the model must add to
                      "cubic_bspline_bp": denoising.scores(inference.back_project(cubic, low), test),
                      "vae": {**denoising.scores(restored, test),
                              "param": f"back-projected, detail x{inference.DETAIL_GAIN:g}"},
                      "vae_model_only": denoising.scores(alone, test)}
        cases.append(_case(f"low-res {name}", test, linear, restored, cubic, "cubic B-spline"))
    return {"rows": rows, "_cases": cases}


@task(cache_policy=NO_CACHE)  # tensors and a model as inputs: nothing to hash
def eval_anomaly(model, train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, seed: int,
                 head=None, calibration: dict | None = None) -> dict:
    """Each map (``model``'s: with the version's discriminative ``head`` when it has one, the
    healthy-normalised residual alone, the plain residual; the atlas deviation; ``model``: the
    version's anomaly restorer) fitted and calibrated on the healthy validation scans (``calibration``:
    the version's ``false_positive_rate`` and ``confidence``, ``vae3d.anomaly.score_threshold``), then
    scored on lesioned copies of the test scans (``anomaly.COPIES`` of each, other lesions in each)
    against the same scans without lesions."""
    calibration = calibration or {}
    lesioned, masks = anomaly.lesioned_copies(test, seed, copies=anomaly.COPIES)
    mirror = anomaly_maps.MIRROR_AVERAGED  # restored as registration restores (``register_model``)
    val_recon, test_recon, les_recon = (inference.reconstruct_all(model, x, mirror=mirror)
                                        for x in (val, test, lesioned))
    healthy, thresholds = anomaly_maps.calibrate(val, val_recon, head=head, **calibration)  # what registration stores
    atlas = train.mean(0, keepdim=True)
    maps = {"vae": lambda x, r: anomaly_maps.anomaly_map(x, r, healthy),
            **({"vae_normalised": lambda x, r: anomaly_maps.anomaly_map(x, r, replace(healthy, head=None))}
               if head is not None else {}),
            "vae_residual": lambda x, r: anomaly_maps.anomaly_map(x, r),
            "atlas_deviation": lambda x, r: anomaly.atlas_deviation(x, atlas)}
    out = {"lesions": {k: list(v) if isinstance(v, tuple) else v for k, v in anomaly.LESIONS.items()},
           "calibration": {"false_positive_rate": thresholds["false_positive_rate"],
                           "confidence": thresholds["fpr_confidence"], "validation_scans": len(val)},
           "auroc_interval": anomaly.AUROC_INTERVAL, "lesioned_copies": anomaly.COPIES, "scores": {}}
    # the model's maps: thresholds calibrated as registration does (leave-one-out); the others fit nothing on
    # validation, so their validation scores calibrate them
    stored = {"vae": thresholds["score_threshold"]}
    if head is not None:
        stored["vae_normalised"] = anomaly_maps.calibrate(val, val_recon, **calibration)[1]["score_threshold"]
    for method, amap in maps.items():
        m_test, m_les = amap(test, test_recon), amap(lesioned, les_recon)
        threshold = stored[method] if method in stored else anomaly_maps.score_threshold(
            anomaly_maps.anomaly_score(amap(val, val_recon)).numpy(), **calibration)
        healthy_scores, lesion_scores = (anomaly_maps.anomaly_score(m).numpy() for m in (m_test, m_les))
        low, high = anomaly.volume_auroc_interval(healthy_scores, lesion_scores, n_lesioned=len(test))
        out[method] = {**anomaly.voxel_metrics(m_les, masks),
                       "volume_auroc": anomaly.volume_auroc(healthy_scores, lesion_scores),
                       "volume_auroc_low": low, "volume_auroc_high": high,  # its 95% interval
                       "healthy_fpr": anomaly.false_positive_rate(healthy_scores, threshold),
                       "lesioned_flagged": anomaly.false_positive_rate(lesion_scores, threshold),
                       "score_threshold": threshold}
        # each scan's score, lesioned copies copy by copy (test scan i's copy k at k * n_test + i): to audit a verdict
        out["scores"][method] = {"healthy": healthy_scores.tolist(), "lesioned": lesion_scores.tolist()}
        if method == "vae":
            out["_overlay"] = ([{"label": f"test {i}", "image": lesioned[i, 0].numpy(), "map": m_les[i, 0].numpy(),
                                 "mask": masks[i, 0].numpy()} for i in range(min(3, len(test)))],
                               thresholds["voxel_threshold"])
    return out


@task(cache_policy=NO_CACHE)  # tensors and a model as inputs: nothing to hash
def eval_synthesis(model, train: torch.Tensor, test: torch.Tensor, seed: int, n: int, prior=None) -> dict:
    """Samples of the registered prior (N(0, I) for a version without one) against the test
    scans: realism (two-sample classifier, tissue bands, histogram, MMD), diversity against the
    test scans' own, and the memorisation audit."""
    samples = synthesize(model, list(range(n)), seed, prior=prior)
    bands_real, bands_syn = synthesis.tissue_fractions(test), synthesis.tissue_fractions(samples)
    return {
        "n": n, "seed": seed, "prior": getattr(prior, "kind", "normal"),
        "c2st_accuracy": c2st.classifier_two_sample(test, samples, seed=seed, folds=min(4, len(test), n)),
        "histogram_wasserstein": synthesis.histogram_distance(test, samples),
        "mmd": synthesis.mmd(test, samples),
        "tissue_real": bands_real, "tissue_synthetic": bands_syn,
        "tissue_max_gap": max(abs(bands_syn[k][0] - bands_real[k][0]) for k in bands_real),
        "diversity_ssim": synthesis.diversity(samples),
        "ms_ssim_synthetic": synthesis.ms_ssim_diversity(samples), "ms_ssim_real": synthesis.ms_ssim_diversity(test),
        "memorisation": synthesis.memorisation_audit(samples, train, test),
        "_samples": samples[:3, 0].numpy(),
    }


@flow(name="evaluate")
def evaluate_flow(settings: Settings, model_uri: str = DEFAULT_MODEL_URI, n_synthetic: int = 8) -> dict:
    """Evaluate a registered model; write report + tables; log them to MLflow on its version."""
    route_library_logs()
    logger = get_run_logger()
    ws = Workspace.at(settings.workspace)
    data = load_splits(settings)  # before any model is loaded: no val or test split is an error
    ref = model_loader.resolve(model_uri, settings)
    loaded = model_loader.load(ref, settings)
    model = loaded.model
    model_rmse = loaded.meta.get("restoration", {}).get("model_rmse") or inference.restoration_error(model, data["val"])
    seed = settings.seed
    torch.manual_seed(seed)
    with torch.no_grad():
        recon = denoising.scores(inference.reconstruct_all(model, data["test"]), data["test"])
    den_out = eval_denoising(model, data["val"], data["test"], seed, model_rmse)
    sr_out = eval_superres(model, data["test"])
    den, sr = den_out["rows"], sr_out["rows"]
    cases = den_out["_cases"] + sr_out["_cases"]
    stored = loaded.meta.get("anomaly", {})  # calibrated as the version was (older versions: today's defaults)
    calibration = {"false_positive_rate": stored.get("false_positive_rate", anomaly_maps.FALSE_POSITIVE_RATE),
                   "confidence": stored.get("fpr_confidence", anomaly_maps.FPR_CONFIDENCE)}
    ano = eval_anomaly(loaded.restorer, data["train"], data["val"], data["test"], seed,
                       head=getattr(getattr(loaded, "healthy", None), "head", None), calibration=calibration)
    if stored.get("restorer_choice"):  # which restorer weights the version's map uses, and why
        ano["restorer_choice"] = stored["restorer_choice"]
    syn = eval_synthesis(model, data["train"], data["test"], seed, max(n_synthetic, 2), getattr(loaded, "prior", None))
    samples, overlay = syn.pop("_samples"), ano.pop("_overlay")
    targets = {
        "reconstruction SSIM >= 0.90 and PSNR >= 28 dB": recon["ssim"] >= 0.90 and recon["psnr"] >= 28.0,
        "VAE denoising better than its noisy input at every level (PSNR and SSIM)":
            all(_beats(r["vae"], r["noisy"]) for r in den.values()),
        "VAE denoising beats Gaussian smoothing at 3% (PSNR and SSIM)": _beats(den["3%"]["vae"], den["3%"]["gaussian"]),
        "VAE denoising beats non-local means at 5% and 10% (PSNR and SSIM)":
            all(_beats(den[k]["vae"], den[k]["nl_means"]) for k in ("5%", "10%")),
        "VAE super-resolution x2 beats cubic B-spline by >= 1.5 dB":
            sr["x2"]["vae"]["psnr"] >= sr["x2"]["cubic_bspline"]["psnr"] + 1.5,
        "anomaly volume AUROC >= 0.95": ano["vae"]["volume_auroc"] >= 0.95,
        "anomaly voxel AUPRC >= 0.5 and best Dice >= 0.5":
            ano["vae"]["voxel_auprc"] >= 0.5 and ano["vae"]["best_dice"] >= 0.5,
        "anomaly: healthy test scans flagged at the stored threshold <= 5%": ano["vae"]["healthy_fpr"] <= 0.05,
        "no synthetic sample flagged by the memorisation audit": syn["memorisation"]["n_flagged"] == 0,
        "synthesis: two-sample classifier accuracy <= 0.75": syn["c2st_accuracy"] <= 0.75,
        "synthesis: every tissue band within 0.05 of the real mean": syn["tissue_max_gap"] <= 0.05,
        "synthesis: MS-SSIM among samples within 20% of among real scans":
            abs(syn["ms_ssim_synthetic"] - syn["ms_ssim_real"]) <= 0.2 * syn["ms_ssim_real"],
    }
    results = {"model": ref.model_dump(), "n_train": len(data["train"]), "n_val": len(data["val"]),
               "n_test": len(data["test"]), "reconstruction": recon, "denoising": den, "superres": sr, "anomaly": ano,
               "synthesis": syn, "targets": targets}
    out = ws.root / "evaluation" / f"{ref.name}-v{ref.version}"
    out.mkdir(parents=True, exist_ok=True)
    md = report.markdown(results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    atomic_write_text(out / "report.md", md)
    _figures(out, data["test"][0, 0].numpy(), samples, cases, overlay)
    _log_to_mlflow(settings, ref, results, out, require_held_out(settings).split_digest("test"))
    create_markdown_artifact(key="evaluation-report", markdown=md)
    logger.info("evaluation of %s v%s -> %s", ref.name, ref.version, out / "report.md")
    return results


def _beats(a: dict, b: dict) -> bool:
    return a["psnr"] > b["psnr"] and a["ssim"] > b["ssim"]


def _figures(out: Path, clean: np.ndarray, samples: np.ndarray, cases: list[dict], overlay) -> None:
    import matplotlib.pyplot as plt

    figs = {
        "synthetic_samples.png": slice_grid([(f"sample {i}", s) for i, s in enumerate(samples)], "synthetic samples"),
        "test_volume.png": slice_grid([("test volume", clean)], "held-out volume"),
        "restoration.png": restoration_review(cases),
        "anomaly_overlay.png": anomaly_overlay(*overlay),
    }
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=80)
        plt.close(fig)


def _flat_metrics(results: dict) -> dict[str, float]:
    m = {f"eval_recon_{k}": v for k, v in results["reconstruction"].items()}
    for level, rows in results["denoising"].items():
        for method, v in rows.items():
            m[f"eval_denoise_{level.rstrip('%')}pct_{method}_psnr"] = v["psnr"]
            m[f"eval_denoise_{level.rstrip('%')}pct_{method}_ssim"] = v["ssim"]
    for factor, rows in results["superres"].items():
        for method, v in rows.items():
            m[f"eval_superres_{factor}_{method}_psnr"] = v["psnr"]
            m[f"eval_superres_{factor}_{method}_ssim"] = v["ssim"]
    for method in ("vae", "vae_residual", "atlas_deviation"):
        for k, v in results["anomaly"][method].items():
            m[f"eval_anomaly_{method}_{k}"] = v
    s = results["synthesis"]
    m.update(eval_synth_wasserstein=s["histogram_wasserstein"], eval_synth_diversity_ssim=s["diversity_ssim"],
             eval_synth_memorised=float(s["memorisation"]["n_flagged"]), eval_synth_c2st=s["c2st_accuracy"],
             eval_synth_mmd=s["mmd"], eval_synth_tissue_max_gap=s["tissue_max_gap"],
             eval_synth_ms_ssim=s["ms_ssim_synthetic"], eval_synth_ms_ssim_real=s["ms_ssim_real"])
    return {k: float(v) for k, v in m.items() if v == v}


def _log_to_mlflow(settings: Settings, ref, results: dict, out: Path, test_digest: str | None = None) -> None:
    client, _ = init_store(Workspace.at(settings.workspace), settings.mlflow)
    metrics = _flat_metrics(results)
    if ref.run_id:
        # linked to the logged model (MLflow 3 model_id) and to the test split it was measured on
        mv = client.get_model_version(ref.name, ref.version)
        # the version's logged model; MLflow 3.17 leaves ``model_id`` empty on an SQLite registry, its source names it
        model_id = mv.model_id or (mv.source.split("/")[-1] if mv.source.startswith("models:/m-") else None)
        now = int(time.time() * 1000)
        client.log_batch(ref.run_id, metrics=[
            Metric(k, v, now, 0, model_id=model_id, dataset_name="vae3d-test", dataset_digest=test_digest)
            for k, v in metrics.items()])
        client.log_artifacts(ref.run_id, str(out), "evaluation")
    for key in ("eval_recon_ssim", "eval_anomaly_vae_volume_auroc", "eval_synth_memorised"):
        if key in metrics:
            client.set_model_version_tag(ref.name, ref.version, key, f"{metrics[key]:.4f}")
