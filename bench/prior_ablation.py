"""Latent priors side by side (#18): the same model, the same training latents, the same held-out
real scans; each prior's samples scored for realism, diversity and memorisation, and timed.

The model is the shipped pretrained one (trained on a cohort whose seed no benchmark uses); its
priors are fitted to the posterior means of the seed-0 cohort's first ``--train`` scans, and
compared with the held-out rest. The floor row scores the model's reconstructions of held-out
scans: what the two-sample test finds when the anatomy is real and only the decoder renders it.

    python -m bench.prior_ablation

Rows (``PRIORS``): N(0, I); low-rank Gaussians of rank 8, 32 and every direction (n - 1), at
temperature 1; rank 32 at temperature 0.7; rank 32 refined x3 at temperatures 1.2 and 1.4 (wider draws
for diversity); rank 32 with its samples passed through the model
``refine`` more times (decode, encode, decode: the restoration pulls them towards scans it knows);
a latent diffusion model (``vae3d.latent_diffusion``, MONAI's ``DiffusionModelUNet`` and DDIM)
trained for ``--diffusion-minutes`` on the same latents, plain and refined; the refined rows of
rank 8, 16, 32 (and 32 at temperature 1.2) and of the diffusion model again with the intensity map
(``vae3d.intensity``), fitted on 32 samples of their own against the training scans.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from bench.common import RESULTS, preprocessed_tensors, write_result

#: name -> (prior kind, rank, temperature, refinement passes)
PRIORS = {
    "N(0, I)": ("normal", 0, 1.0, 0),
    "low-rank Gaussian, rank 8": ("lowrank", 8, 1.0, 0),
    "low-rank Gaussian, rank 32": ("lowrank", 32, 1.0, 0),
    "low-rank Gaussian, every direction": ("lowrank", 10_000, 1.0, 0),
    "low-rank Gaussian, rank 32, temperature 0.7": ("lowrank", 32, 0.7, 0),
    "low-rank Gaussian, rank 32, refined x1": ("lowrank", 32, 1.0, 1),
    "low-rank Gaussian, rank 32, refined x3": ("lowrank", 32, 1.0, 3),
    "low-rank Gaussian, rank 8, refined x3": ("lowrank", 8, 1.0, 3),
    "low-rank Gaussian, rank 16, refined x3": ("lowrank", 16, 1.0, 3),
    "low-rank Gaussian, rank 32, refined x5": ("lowrank", 32, 1.0, 5),
    "low-rank Gaussian, rank 32, temperature 1.2, refined x3": ("lowrank", 32, 1.2, 3),
    "low-rank Gaussian, rank 32, temperature 1.4, refined x3": ("lowrank", 32, 1.4, 3),
    "latent diffusion": ("diffusion", 0, 1.0, 0),
    "latent diffusion, refined x3": ("diffusion", 0, 1.0, 3),
    # the same priors with the intensity map fitted on samples of their own (``vae3d.intensity``)
    "low-rank Gaussian, rank 8, refined x3, intensity map": ("lowrank", 8, 1.0, 3),
    "low-rank Gaussian, rank 16, refined x3, intensity map": ("lowrank", 16, 1.0, 3),
    "low-rank Gaussian, rank 32, refined x3, intensity map": ("lowrank", 32, 1.0, 3),
    "low-rank Gaussian, rank 32, temperature 1.2, refined x3, intensity map": ("lowrank", 32, 1.2, 3),
    "latent diffusion, refined x3, intensity map": ("diffusion", 0, 1.0, 3),
}


def _scores(samples: torch.Tensor, real: torch.Tensor, train: torch.Tensor, seed: int) -> dict:
    from vae3d.evaluation import c2st, synthesis

    bands_real, bands_syn = synthesis.tissue_fractions(real), synthesis.tissue_fractions(samples)
    return {
        "c2st_accuracy": c2st.classifier_two_sample(real, samples, seed=seed),
        "tissue_synthetic": {k: v[0] for k, v in bands_syn.items()},
        "tissue_max_gap": max(abs(bands_syn[k][0] - bands_real[k][0]) for k in bands_real),
        "histogram_wasserstein": synthesis.histogram_distance(real, samples),
        "ms_ssim_among": synthesis.ms_ssim_diversity(samples),
        "mmd": synthesis.mmd(real, samples),
        "memorised": synthesis.memorisation_audit(samples, train, real)["n_flagged"],
    }


def floor_row(model, real: torch.Tensor, train: torch.Tensor, seed: int) -> dict:
    """The model's reconstructions of half the held-out scans against the other half: a scan and its
    own reconstruction in one test would pair up (a classifier that recognises the subject then
    calls the held-out real scan synthetic, and scores below chance)."""
    half = len(real) // 2
    with torch.no_grad():
        recon = torch.cat([model.reconstruct(c).clamp(0, 1) for c in real[half:].split(4)])
    return {**_scores(recon, real[:half], train, seed), "memorised": None}


def run(n_train: int = 64, n_samples: int = 32, seed: int = 0, diffusion_minutes: float = 12.0) -> dict:
    from vae3d.config import LatentDiffusionConfig, ModelConfig
    from vae3d.evaluation import synthesis
    from vae3d.figures import slice_grid
    from vae3d.generation import calibrate_intensity, synthesize
    from vae3d.model import VAE3D
    from vae3d.pretrained import load_pretrained
    from vae3d.prior import fit_prior

    x = preprocessed_tensors(96, 64, seed=0)
    train, real = x[:n_train], x[n_train:][:n_samples]
    model = load_pretrained(VAE3D(input_size=64, **ModelConfig().model_dump())).eval()
    with torch.no_grad():
        latents = torch.cat([model.encode(c)[0] for c in train.split(8)])
    rows = {"reconstructions of held-out scans (floor)": floor_row(model, real, train, seed)}
    pictures = [("real", real[0, 0].numpy())]
    diffusion, diffusion_fit_s, losses = None, 0.0, []
    for name, (kind, rank, temperature, passes) in PRIORS.items():
        t0 = time.perf_counter()
        if kind == "diffusion":  # trained once; the refined row reuses it
            if diffusion is None:
                options = {**LatentDiffusionConfig().model_dump(), "max_minutes": diffusion_minutes, "seed": seed,
                           "train_steps": 100_000, "progress": lambda step, loss: losses.append((step, loss))}
                diffusion = fit_prior(kind, latents, **options)
                diffusion_fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()  # the training is counted once, below
            prior = dataclasses.replace(diffusion, refine=passes)
        else:
            prior = fit_prior(kind, latents, rank, refine=passes)
        if name.endswith("intensity map"):
            prior = calibrate_intensity(model, prior, train, seed=seed)
        fit_s = time.perf_counter() - t0 + (diffusion_fit_s if kind == "diffusion" else 0.0)
        t0 = time.perf_counter()
        samples = synthesize(model, list(range(n_samples)), seed, temperature, prior)
        per_s = n_samples / (time.perf_counter() - t0)
        rows[name] = {**_scores(samples, real, train, seed), "volumes_per_s": per_s, "fit_s": fit_s,
                      "rank": getattr(prior, "rank", None)}
        pictures += [(name[:28], samples[0, 0].numpy()), (name[:26] + " b", samples[1, 0].numpy())]
        print(name, {k: v for k, v in rows[name].items() if k != "tissue_synthetic"}, flush=True)
    real_bands = {k: v[0] for k, v in synthesis.tissue_fractions(real).items()}
    fig = slice_grid(pictures, "priors side by side: the first two samples of each")
    (RESULTS / "prior_figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "prior_figures" / "prior_samples.png", dpi=70)
    return {"n_train": n_train, "n_samples": n_samples, "seed": seed, "tissue_real": real_bands,
            "ms_ssim_real": synthesis.ms_ssim_diversity(real), "rows": rows, "diffusion_minutes": diffusion_minutes,
            "diffusion_loss": losses,
            "model": "shipped pretrained weights (vae3d/pretrained), default architecture"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=64, help="training scans the priors are fitted to")
    ap.add_argument("--samples", type=int, default=32, help="samples per prior (and held-out real scans)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diffusion-minutes", type=float, default=12.0, help="training budget of the latent diffusion")
    a = ap.parse_args()
    print(write_result("prior_ablation", run(a.train, a.samples, a.seed, a.diffusion_minutes)))


if __name__ == "__main__":
    main()
