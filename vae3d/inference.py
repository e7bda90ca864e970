"""What a trained model is used for: reconstruct/denoise, anomaly maps and scores, embeddings.

Tensors in, tensors out; batching and I/O belong to the caller. Inputs are moved to the
model's device and results come back on the CPU, so a caller never tracks devices.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data_contracts.generation import DETAIL_GAIN
from vae3d.anomaly import (
    HealthyResiduals,
    anomaly_map,  # noqa: F401 - registered models' stored pyfunc code calls it here
)
from vae3d.config import LEFT_RIGHT
from vae3d.intensity import apply_map
from vae3d.model import VAE3D


@torch.no_grad()
def reconstruct(model: VAE3D, x: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """Posterior-mean reconstruction, clipped to the training range [0, 1]. (B,1,S,S,S).

    ``mirror``: averaged with the reconstruction of the left-right mirrored scan, flipped back (two
    passes; test-time augmentation: the two passes' errors partly cancel, a lesion stays where it is).
    """
    out = model.reconstruct(x.to(model.device)).float().clamp_(0.0, 1.0).cpu()
    if mirror:
        out = out.add_(reconstruct(model, x.flip(LEFT_RIGHT)).flip(LEFT_RIGHT)).div_(2)
    return out


def reconstruct_as_fitted(model: VAE3D, x: torch.Tensor, healthy: HealthyResiduals | None) -> torch.Tensor:
    """``reconstruct`` as a version's anomaly statistics ``healthy`` were fitted on: mirror-averaged when
    they record it; one pass for a version without statistics or without the record."""
    return reconstruct(model, x, healthy is not None and healthy.mirror_averaged)


def reconstruct_all(model: VAE3D, volumes: torch.Tensor, batch_size: int = 4, mirror: bool = False) -> torch.Tensor:
    """``reconstruct`` over ``volumes`` (N, 1, S, S, S) in batches of ``batch_size``."""
    return torch.cat([reconstruct(model, chunk, mirror) for chunk in volumes.split(batch_size)])


@torch.no_grad()
def encode_all(model: VAE3D, volumes: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Posterior means of (N, 1, S, S, S) volumes, in batches: (N, *latent_shape) on the CPU."""
    p = next(model.parameters())
    return torch.cat([model.encode(c.to(p.device, p.dtype))[0].float().cpu() for c in volumes.split(batch_size)])


@torch.no_grad()
def decode_refined(model: VAE3D, z: torch.Tensor, passes: int = 0, batch_size: int = 4) -> torch.Tensor:
    """Decode latents ``z`` (B, *latent_shape), then pass the volumes through the model ``passes``
    more times (encode, decode): the restoration pulls a prior sample towards the scans it was
    trained on (sharper tissue borders, truer tissue fractions; BENCHMARKS.md "Latent priors").
    (B, 1, S, S, S) in [0, 1] on the CPU."""
    p = next(model.parameters())
    out = []
    for chunk in z.split(batch_size):
        v = model.decode(chunk.to(p.device, p.dtype)).clamp(0.0, 1.0)
        for _ in range(passes):
            v = model.decode(model.encode(v)[0]).clamp(0.0, 1.0)
        out.append(v.float().cpu())
    return torch.cat(out)


def render(model: VAE3D, z: torch.Tensor, prior) -> torch.Tensor:
    """Latents ``z`` of a latent ``prior`` (``vae3d.prior``) as volumes: decoded, refined
    ``prior.refine`` times, then through the prior's intensity map if it has one
    (``vae3d.intensity``). (B, 1, S, S, S) in [0, 1] on the CPU."""
    vols = decode_refined(model, z, prior.refine, batch_size=len(z))
    return vols if prior.intensity is None else apply_map(vols, prior.intensity)


@torch.no_grad()
def reconstruct_shift_averaged(model: VAE3D, x: torch.Tensor) -> torch.Tensor:
    """``reconstruct`` averaged over every offset of the input within the stem's patch
    (patch_size^3 passes: 8 for the default 2x2x2 stem), each shifted back: cycle spinning
    (Coifman & Donoho 1995). A strided stem sees each voxel at one fixed position in its
    patch; the average removes that grid dependence, and with it part of the error of the
    fine detail (super-resolution gained 0.16 dB on validation, BENCHMARKS.md). (B,1,S,S,S).

    The shifts wrap around (``torch.roll``): the preprocessed volume's border is background.
    """
    p = int(model.hparams().get("patch_size", 1))
    dims, total = (2, 3, 4), None
    for i in range(p):
        for j in range(p):
            for k in range(p):
                r = torch.roll(reconstruct(model, torch.roll(x, (i, j, k), dims)), (-i, -j, -k), dims)
                total = r if total is None else total.add_(r)
    return total.div_(p**3)


def noise_sigma(x: torch.Tensor, head_threshold: float = 0.15) -> torch.Tensor:
    """Each volume's noise standard deviation, estimated from the data: the median absolute
    finest-scale diagonal Haar coefficient over 2x2x2 blocks inside the head, / 0.6745
    (Donoho's MAD estimator; in the head Rician noise is close to Gaussian). (B, 1, D, H, W) -> (B,).

    Hand-written: scikit-image's ``estimate_sigma`` needs PyWavelets, and the Haar band is one line.
    """
    v = x.float()[:, 0]
    v = v[:, : v.shape[1] // 2 * 2, : v.shape[2] // 2 * 2, : v.shape[3] // 2 * 2]
    b = v.unfold(1, 2, 2).unfold(2, 2, 2).unfold(3, 2, 2).flatten(-3)  # (B, d, h, w, 8) blocks
    signs = torch.tensor([(-1) ** (i + j + k) for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=b.dtype)
    hhh = (b * signs).sum(-1) / 8**0.5
    inside = b.mean(-1) > head_threshold
    out = []
    for c, m in zip(hhh, inside, strict=True):
        vals = c[m] if int(m.sum()) >= 64 else c.flatten()
        out.append(vals.abs().median() / 0.6745)
    return torch.stack(out)


def fuse(x: torch.Tensor, restored: torch.Tensor, model_rmse: float, head_threshold: float = 0.1,
         sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Combine the input and the model's restoration by their expected errors, inside the head.

    The input's error is its noise (``noise_sigma``), the model's is its in-head reconstruction
    error on the validation split (``model_rmse``, stored at registration); inside the head
    (where the restoration exceeds ``head_threshold``) the output is ``w * restored + (1 - w) * x``
    with ``w = s^2 / (s^2 + e^2)``, the lower expected error of the two (a Wiener-style fusion,
    as data consistency in MRI reconstruction). Outside it is the restoration: there Rician
    noise is biased, not zero-mean, so the input carries nothing worth keeping
    (``bench.denoise_fusion`` measures both choices). A clean scan comes back nearly
    unchanged, never blurred; a noisy one mostly restored. ``sigma``: ``noise_sigma(x)``,
    when the caller has it already.
    """
    s2 = (noise_sigma(x) if sigma is None else sigma).pow(2).view(-1, *([1] * (x.dim() - 1)))
    w = (s2 / (s2 + float(model_rmse) ** 2)).expand_as(restored)
    w = torch.where(restored > head_threshold, w, torch.ones_like(w))
    return (w * restored.float() + (1 - w) * x.float()).clamp_(0.0, 1.0)


def fuse_whole_volume(x: torch.Tensor, restored: torch.Tensor, model_rmse: float) -> torch.Tensor:
    """``fuse`` without the head mask (the background weighed like the head): the variant
    ``bench.denoise_fusion`` measured against it."""
    return fuse(x, restored, model_rmse, head_threshold=-1.0)


def cubic_resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Cubic B-spline interpolation (scipy ``zoom``, order 3, cell-centred grids) of
    (B, 1, d, h, w) onto ``size``, unclipped (it also carries residuals)."""
    from scipy.ndimage import zoom

    out = []
    for v in x.float():
        arr = v[0].numpy().astype(np.float64)
        factors = [s / d for s, d in zip(size, arr.shape, strict=True)]
        out.append(zoom(arr, factors, order=3, mode="nearest", grid_mode=True)[None])
    return torch.from_numpy(np.stack(out).astype(np.float32))


def back_project(estimate: torch.Tensor, low: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """Make a super-resolved ``estimate`` (B, 1, D, H, W) agree with the low-resolution data
    it came from (B, 1, d, h, w): iterative back-projection (Irani & Peleg 1991), the data
    consistency step of MRI reconstruction.

    The acquisition is modelled as block averaging onto the low grid (adaptive average
    pooling, which also fits non-integer ratios). Each step adds the cubic B-spline upsampled
    disagreement, so the result keeps the model's fine detail where the data cannot see it
    and the data's content where it can. Back-projection alone gives cubic interpolation most of
    the gain too (+1.0 dB on the test split); what the model adds beyond it comes with shift
    averaging and ``amplify_detail`` (``super_resolve``; ``vae3d evaluate``'s super-resolution
    table, BENCHMARKS.md).
    """
    x = estimate.float()
    size = tuple(low.shape[2:])
    for _ in range(steps):
        x = x + cubic_resize(low.float() - F.adaptive_avg_pool3d(x, size), tuple(x.shape[2:]))
    return x.clamp_(0.0, 1.0)




def amplify_detail(estimate: torch.Tensor, low: torch.Tensor, gain: float = DETAIL_GAIN) -> torch.Tensor:
    """Scale a back-projected super-resolved ``estimate`` (B, 1, D, H, W)'s departure from
    back-projected cubic B-spline interpolation of ``low`` (B, 1, d, h, w) by ``gain``.

    Trained for L1 + SSIM, the model draws fine detail at about a third of its true amplitude
    (regression to the mean: its high frequencies correlate with the truth's, but are weaker),
    so scaling them up brings the output closer; both terms agree with ``low``, so the result
    still does. A gain of 2 was best on validation (1.75 to 2.5 within 0.02 dB; BENCHMARKS.md);
    1 returns ``estimate``.
    """
    if gain == 1.0:
        return estimate
    base = back_project(cubic_resize(low, tuple(estimate.shape[2:])), low)
    return (base + float(gain) * (estimate.float() - base)).clamp_(0.0, 1.0)


def data_consistent(estimate: torch.Tensor, low: torch.Tensor, detail_gain: float = DETAIL_GAIN) -> torch.Tensor:
    """A super-resolved ``estimate`` back-projected onto the ``low`` data it came from
    (``back_project``), its detail then scaled by ``detail_gain`` (``amplify_detail``): what
    ``generate super-resolve`` writes, on whatever grid ``estimate`` is."""
    return amplify_detail(back_project(estimate, low), low, detail_gain)


def super_resolve(model: VAE3D, upsampled: torch.Tensor, low: torch.Tensor,
                  detail_gain: float = DETAIL_GAIN) -> torch.Tensor:
    """Super-resolution on the model's grid: the shift-averaged reconstruction of ``upsampled``
    (``low`` resampled onto the model's grid), made ``data_consistent`` with ``low``. (B, 1, S, S, S)."""
    return data_consistent(reconstruct_shift_averaged(model, upsampled), low, detail_gain)


@torch.no_grad()
def restoration_error(model: VAE3D, volumes: torch.Tensor, batch_size: int = 4, head_threshold: float = 0.15) -> float:
    """The model's in-head reconstruction RMSE on clean volumes (the validation split): the
    ``model_rmse`` that ``fuse`` weighs the model by, stored with the model version."""
    se, n = 0.0, 0
    for chunk in volumes.split(batch_size):
        r = reconstruct(model, chunk)
        head = chunk > head_threshold
        se += float(((r - chunk)[head]).pow(2).sum())
        n += int(head.sum())
    return (se / max(n, 1)) ** 0.5


@torch.no_grad()
def embed(model: VAE3D, x: torch.Tensor) -> torch.Tensor:
    """Latent means flattened to vectors: (B, prod(latent_shape))."""
    return model.encode(x.to(model.device))[0].float().flatten(1).cpu()
