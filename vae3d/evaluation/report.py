"""The evaluation report as markdown tables (numbers come from the results dict)."""

from __future__ import annotations


def _f(x, nd=3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def auroc_cell(m: dict) -> str:
    """A map's volume AUROC with its interval, ``0.929 [0.81, 1.00]`` (the AUROC alone for results without one)."""
    if "volume_auroc_low" not in m:
        return _f(m["volume_auroc"])
    return f"{_f(m['volume_auroc'])} [{_f(m['volume_auroc_low'], 2)}, {_f(m['volume_auroc_high'], 2)}]"


def markdown(results: dict) -> str:
    r = results
    lines = [f"# Evaluation of {r['model']['name']} v{r['model']['version']}", "",
             f"Test volumes: {r['n_test']}; validation volumes (tuning, calibration): {r['n_val']}; "
             f"training volumes (memorisation audit, atlas): {r['n_train']}.", "",
             "## Reconstruction (test split)", "", "| PSNR dB | SSIM |", "|---|---|",
             f"| {_f(r['reconstruction']['psnr'], 2)} | {_f(r['reconstruction']['ssim'])} |", "",
             "## Denoising (Rician noise, % of intensity range)", "",
             "| noise | method | PSNR dB | SSIM | parameter (tuned on val) |", "|---|---|---|---|---|"]
    for level, rows in r["denoising"].items():
        for method, v in rows.items():
            lines.append(f"| {level} | {method} | {_f(v['psnr'], 2)} | {_f(v['ssim'])} | {v.get('param', '')} |")
    lines += ["", "## Super-resolution (test volumes averaged down by the factor)", "",
              "| factor | method | PSNR dB | SSIM |", "|---|---|---|---|"]
    for factor, rows in r.get("superres", {}).items():
        for method, v in rows.items():
            lines.append(f"| {factor} | {method} | {_f(v['psnr'], 2)} | {_f(v['ssim'])} |")
    lines += ["", "`restoration.png`: clean, corrupted, model, classical baseline and both residuals for the "
              "first test volume at each noise level and resolution loss."]
    a = r["anomaly"]
    c = a.get("calibration")
    how = (f" to flag at most {c['false_positive_rate']:.0%} of healthy scans with {c['confidence']:.0%} confidence "
           f"({c['validation_scans']} scans)" if c else "")
    copies = a.get("lesioned_copies", 1)  # results from before the copies: one
    times = "once" if copies == 1 else f"{copies} times, other lesions each time"
    counted = "; a scan's copies counted once" if copies > 1 else ""  # they share its anatomy
    lines += ["", "## Anomaly detection (synthetic lesions in held-out anatomy)", "",
              f"Lesions: {a.get('lesions', {})}, drawn into each test scan {times} ({copies * r['n_test']} lesioned "
              f"copies). Each map's score threshold is calibrated on the healthy validation scans{how}; the "
              "false-positive rate is that of the healthy test scans at it. In brackets: "
              "the volume AUROC's 95% interval over the healthy and the lesioned test scans "
              f"({a.get('auroc_interval', 'bootstrap')}{counted}).", "",
              "| method | voxel AUPRC | best Dice | volume AUROC | healthy test flagged | lesioned test flagged |",
              "|---|---|---|---|---|---|"]
    for method in ("vae", "vae_normalised", "vae_residual", "atlas_deviation"):
        m = a.get(method)
        if m:
            lines.append(f"| {method} | {_f(m['voxel_auprc'])} | {_f(m['best_dice'])} | {auroc_cell(m)} | "
                         f"{_f(m.get('healthy_fpr', float('nan')))} | {_f(m.get('lesioned_flagged', float('nan')))} |")
    if a.get("restorer_choice"):  # the version chose between its restorer's fine-tune and the shipped restorer
        from vae3d.training.restorer_choice import criteria

        ch = a["restorer_choice"]
        lines += ["", f"The map's restorer: the {ch['chosen']} weights (criterion on lesions drawn into copies of the "
                  f"validation scans: {criteria(ch['figures'])}; the fine-tune is kept only if it leads by a margin)."]
    lines += ["", "`anomaly_overlay.png`: lesioned test scans with the map above its voxel threshold and the true "
              "lesion's contour."]
    s = r["synthesis"]
    lines += ["", "## Synthesis", "",
              f"- samples: {s['n']} (seed {s['seed']}) of the {s.get('prior', 'normal')} prior",
              f"- two-sample test, held-out accuracy of a 3D CNN telling test scans from samples (0.5: it "
              f"cannot): {_f(s.get('c2st_accuracy'))}",
              f"- multi-scale SSIM among samples {_f(s.get('ms_ssim_synthetic'))}, among test scans "
              f"{_f(s.get('ms_ssim_real'))} (diversity: lower = more diverse); MMD {_f(s.get('mmd'), 5)}",
              "- Wasserstein distance of in-brain intensity histograms, synthetic vs test: "
              f"{_f(s['histogram_wasserstein'], 4)}",
              f"- diversity, mean pairwise SSIM among samples (lower = more diverse): {_f(s['diversity_ssim'])}",
              "", "| tissue band | real (mean ± sd) | synthetic (mean ± sd) |", "|---|---|---|"]
    for band, (mr, sr) in s["tissue_real"].items():
        ms, ss = s["tissue_synthetic"][band]
        lines.append(f"| {band} | {mr:.3f} ± {sr:.3f} | {ms:.3f} ± {ss:.3f} |")
    m = s["memorisation"]
    lines += ["", "### Memorisation audit",
              f"Nearest training scan by SSIM: synthetic mean {_f(m['synthetic_nn_ssim_mean'])}, max "
              f"{_f(m['synthetic_nn_ssim_max'])}; held-out real scans' max {_f(m['heldout_nn_ssim_max'])}. "
              f"Closer than any held-out scan: {m.get('closer_than_heldout', '–')}; of those, a copy is as close "
              f"to one training scan alone (dissimilarity to it under {_f(m.get('distinctness_limit'))} of the "
              f"mean to the next nearest; lowest among samples {_f(m.get('synthetic_distinctness_min'))}).",
              f"**Flagged samples: {m['n_flagged']}** {m['flagged'] if m['flagged'] else ''}", ""]
    lines += ["## Targets", "", "| target | result |", "|---|---|"]
    for name, ok in r["targets"].items():
        lines.append(f"| {name} | {'met' if ok else '**not met**'} |")
    return "\n".join(lines) + "\n"
