"""Review figures as matplotlib Figures: arrays in, figures out (no files, no tracking)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from vae3d.model import VAE3D


def _slices(vol: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(np.take(vol, vol.shape[a] // 2, axis=a)) for a in range(3)]


def slice_grid(rows: Sequence[tuple[str, np.ndarray]], title: str = "") -> plt.Figure:
    """One row per (label, (D, H, W) volume): sagittal, coronal and axial mid-slices."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for r, (label, vol) in enumerate(rows):
        for c, sl in enumerate(_slices(np.asarray(vol))):
            axes[r, c].imshow(sl, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def reconstructions(model: VAE3D, x: torch.Tensor, k: int = 3) -> plt.Figure:
    recon = model.reconstruct(x[:k]).clamp(0, 1)
    rows = []
    for i in range(min(k, len(x))):
        rows += [(f"input {i}", x[i, 0].cpu().numpy()), (f"recon {i}", recon[i, 0].cpu().numpy())]
    return slice_grid(rows, "validation inputs and posterior-mean reconstructions")


@torch.no_grad()
def prior_samples(model: VAE3D, n: int = 4, seed: int = 0, prior=None) -> plt.Figure:
    """Decoded samples of ``prior`` (``vae3d.prior``; the model's N(0, I) when None)."""
    from vae3d.generation import synthesize

    s = synthesize(model, list(range(n)), seed, prior=prior)
    kind = getattr(prior, "kind", "normal")
    return slice_grid([(f"sample {i}", s[i, 0].numpy()) for i in range(n)], f"samples of the {kind} prior")


@torch.no_grad()
def prior_traversal(model: VAE3D, prior, directions: int = 3, amounts: Sequence[float] = (-2, 0, 2)) -> plt.Figure:
    """The mean latent moved along the prior's leading principal directions (``directions`` rows of
    ``amounts`` standard deviations), decoded: what each direction changes in the anatomy."""
    p = next(model.parameters())
    rows = []
    for k in range(min(directions, prior.rank)):
        for a in amounts:
            vol = model.decode(prior.direction(k, a).to(p.device, p.dtype)).clamp(0, 1)[0, 0].float().cpu().numpy()
            rows.append((f"dir {k} {a:+g} sd", vol))
    return slice_grid(rows, "the prior's principal directions")


@torch.no_grad()
def latent_traversal(model: VAE3D, x: torch.Tensor, channel: int = 0,
                     steps: Sequence[float] = (-3, -1.5, 0, 1.5, 3)) -> plt.Figure:
    """Decode the posterior mean of ``x[0]`` with one latent channel shifted by +-sigma units."""
    mu = model.encode(x[:1])[0]
    rows = []
    for d in steps:
        z = mu.clone()
        z[:, channel] += d
        rows.append((f"ch{channel} {d:+g}", model.decode(z).clamp(0, 1)[0, 0].cpu().numpy()))
    return slice_grid(rows, f"latent traversal along channel {channel}")


def restoration_review(cases: Sequence[dict], residual_max: float = 0.2) -> plt.Figure:
    """One row per restoration case, axial mid-slices: clean, corrupted, the model's
    restoration, the classical baseline, and both residuals |result - clean| (hot colours,
    0 to ``residual_max``).

    Each case: ``{"label", "clean", "corrupted", "restored", "baseline", "baseline_name"}``,
    volumes (D, H, W) in [0, 1].
    """
    cols = ["clean", "corrupted", "model", "baseline", "|model - clean|", "|baseline - clean|"]
    fig, axes = plt.subplots(len(cases), len(cols), figsize=(1.9 * len(cols), 2.0 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        clean = np.asarray(case["clean"])
        images = [clean, case["corrupted"], case["restored"], case["baseline"]]
        panels = [(np.asarray(v), "gray", 1.0) for v in images]
        panels += [(np.abs(np.asarray(v) - clean), "hot", residual_max) for v in (case["restored"], case["baseline"])]
        for c, (vol, cmap, vmax) in enumerate(panels):
            axes[r, c].imshow(np.rot90(vol[:, :, vol.shape[2] // 2]), cmap=cmap, vmin=0, vmax=vmax)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(cols[c], fontsize=8)
        axes[r, 0].set_ylabel(case["label"], fontsize=8)
        axes[r, 3].set_xlabel(case["baseline_name"], fontsize=7)
    fig.suptitle("restoration: input, corrupted, model, classical baseline, residuals", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def restoration_examples(model: VAE3D, x: torch.Tensor, seed: int = 0) -> plt.Figure:
    """The review figure of a trained model on ``x[0]``: 5% and 10% Rician noise against
    Gaussian smoothing (sigma 1 voxel), and x2 resolution loss (back-projected) against cubic B-spline."""
    from vae3d import inference
    from vae3d.evaluation import denoising, superres

    clean = x[:1].float().cpu()
    cases = []
    for sigma in (0.05, 0.10):
        noisy = denoising.add_rician(clean, sigma, seed)
        cases.append({"label": f"Rician {sigma:.0%}", "corrupted": noisy,
                      "restored": inference.reconstruct(model, noisy),
                      "baseline": denoising.gaussian(noisy, 1.0), "baseline_name": "Gaussian, sigma 1"})
    low = superres.downsample(clean, 2)
    linear = superres.trilinear_upsample(low, clean.shape[2:])
    cases.append({"label": "low-res x2", "corrupted": linear,
                  "restored": inference.super_resolve(model, linear, low),
                  "baseline": superres.cubic_upsample(low, clean.shape[2:]), "baseline_name": "cubic B-spline"})
    for c in cases:
        c.update({k: c[k][0, 0].clamp(0, 1).numpy() for k in ("corrupted", "restored", "baseline")},
                 clean=clean[0, 0].numpy())
    return restoration_review(cases)


def loss_curves(history: Sequence[dict]) -> plt.Figure:
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("train_loss", "train_recon", "val_l1"):
        if history and key in history[0]:
            a.plot(epochs, [h[key] for h in history], label=key)
    a.set_xlabel("epoch")
    a.set_yscale("log")
    a.legend()
    b.plot(epochs, [h["val_ssim"] for h in history], label="val SSIM")
    b2 = b.twinx()
    b2.plot(epochs, [h["val_psnr"] for h in history], color="tab:orange", label="val PSNR (dB)")
    b.set_xlabel("epoch")
    b.set_ylabel("SSIM")
    b2.set_ylabel("PSNR dB")
    fig.tight_layout()
    return fig


def embedding_scatter(xy: np.ndarray, labels: Sequence[str]) -> plt.Figure:
    """2D projection of latent embeddings, one colour per label."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    labels = [label or "unlabelled" for label in labels]
    for name in sorted(set(labels)):
        sel = np.array([label == name for label in labels])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=18, label=name, alpha=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("latent means, PCA")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def anomaly_overlay(cases: Sequence[dict], threshold: float) -> plt.Figure:
    """One row per case (``label``, ``image``, ``map``, ``mask``; (D, H, W) arrays): the three
    slices through the centre of the case's lesion (the image's centre when it has none), the
    anomaly map over the image where it exceeds ``threshold`` (hot colours), and the true lesion's
    contour in cyan."""
    fig, axes = plt.subplots(len(cases), 3, figsize=(7, 2.4 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        image, amap, mask = (np.asarray(case[k], dtype=np.float32) for k in ("image", "map", "mask"))
        centre = (np.argwhere(mask > 0).mean(0).round().astype(int) if mask.any()
                  else np.array(image.shape) // 2)
        for c in range(3):
            take = lambda v: np.rot90(np.take(v, centre[c], axis=c))  # noqa: B023 - used in this iteration
            ax = axes[r, c]
            ax.imshow(take(image), cmap="gray", vmin=0, vmax=1)
            shown = np.ma.masked_less_equal(take(amap), threshold)
            ax.imshow(shown, cmap="hot", alpha=0.6, vmin=threshold, vmax=max(threshold * 3, float(amap.max())))
            if mask.any():
                ax.contour(take(mask), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(case["label"], fontsize=8)
    fig.suptitle(f"anomaly map above the voxel threshold ({threshold:.2f}, hot) and the true lesion (cyan)",
                 fontsize=9)
    fig.tight_layout()
    return fig
