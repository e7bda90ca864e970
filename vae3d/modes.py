"""What each generate mode makes of one prepared input: the output volumes, each on its grid
with the parameters its sidecar records.

A mode is a function ``(model, meta, prep, index, request, call) -> list[Product]``:
``meta`` is the registered model's metadata (preprocessing, restoration error, anomaly
thresholds, and ``healthy``: the anomaly map's healthy-residual statistics; ``prior_model``: the
fitted latent prior, ``vae3d.prior``; ``anomaly_model``: the anomaly restorer), ``prep`` the
input on the model's grid (``prepare_input``), ``index`` the input's position in the
request, and ``call(fn, *args)`` runs a model function (the flow passes one that shares the
process's model lanes). Writing, naming and reuse are the
caller's (``vae3d.outputs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from data_contracts.generation import GenerationRequest
from vae3d import inference
from vae3d.anomaly import anomaly_map, calibrated_score
from vae3d.anomaly import verdict as anomaly_verdict
from vae3d.generation import latent_variants
from vae3d.model import VAE3D
from vae3d.preprocessing import to_original_space
from vae3d.preprocessing.augment import augment as apply_augment
from vae3d.preprocessing.augment import build_augment
from vae3d.preprocessing.inputs import PreparedInput, super_resolution_grid, to_input_scale
from vae3d.seeding import derive_seed


@dataclass(frozen=True)
class Product:
    """One output volume: its voxels on ``affine``, its index in the request, what its sidecar
    adds to the request's parameters, and whether it is an image (a score map is not)."""

    array: np.ndarray
    affine: np.ndarray
    index: int
    parameters: dict = field(default_factory=dict)
    image: bool = True
    codes: tuple[int, int] = (1, 1)  # the header's (qform, sform) codes: an input's, on its grid


def direct(fn: Callable, *args):
    return fn(*args)


def augment(model: VAE3D, meta: dict, prep: PreparedInput, index: int, req: GenerationRequest,
            call: Callable = direct) -> list[Product]:
    """``req.variants`` latent variants of the input (output indices ``index * variants + v``) along
    the model's prior (``meta["prior"]``), each with seeded MRI artifacts when ``req.artifacts``; on
    the model's grid, or with ``req.space == "input"`` on the input's grid and scale."""
    first = index * req.variants
    vols = call(latent_variants, model, prep.x, list(range(first, first + req.variants)), req.seed, req.latent_scale,
                meta.get("prior_model"))
    chain = build_augment(prob=0.8) if req.artifacts else None
    out = []
    for v, vol in enumerate(vols):
        if chain is not None:
            vol = apply_augment(chain, vol, seed=derive_seed(req.seed, "artifacts", first + v))
        if req.space == "input":
            back = to_original_space(vol[0].numpy(), prep.affine, prep.original_affine, prep.original_shape)
            out.append(Product(_scaled(back, prep, req), prep.original_affine, first + v,
                               {"intensity_range": list(prep.intensity_range)}, codes=prep.codes))
        else:
            out.append(Product(vol[0].numpy(), prep.affine, first + v))
    return out


def denoise(model: VAE3D, meta: dict, prep: PreparedInput, index: int, req: GenerationRequest,
            call: Callable = direct) -> list[Product]:
    """The restored input on its own grid; with ``req.fusion``, weighed against the input by
    their expected errors (``inference.fuse``)."""
    result = call(inference.reconstruct, model, prep.x)
    params = {"intensity_range": list(prep.intensity_range)}
    rmse = meta.get("restoration", {}).get("model_rmse")
    if req.fusion and rmse is not None:
        sigma = inference.noise_sigma(prep.x)
        result = inference.fuse(prep.x, result, rmse, sigma=sigma)
        params.update(noise_sigma=float(sigma[0]), model_rmse=rmse)
    back = to_original_space(result[0].numpy(), prep.affine, prep.original_affine, prep.original_shape)
    return [Product(_scaled(back, prep, req), prep.original_affine, index, params, codes=prep.codes)]


def super_resolve(model: VAE3D, meta: dict, prep: PreparedInput, index: int, req: GenerationRequest,
                  call: Callable = direct) -> list[Product]:
    """The input at finer voxels (``super_resolution_grid``); with ``req.fusion``, back-projected
    onto what the input measured, its detail scaled by ``req.detail_gain``."""
    result = call(inference.reconstruct_shift_averaged, model, prep.x)
    affine, shape = super_resolution_grid(prep.original_affine, prep.original_shape, meta["target_spacing"],
                                          req.factor)
    back = to_original_space(result[0].numpy(), prep.affine, affine, shape)
    params = {"intensity_range": list(prep.intensity_range)}
    if req.fusion:  # agree with what the input measured
        back = inference.data_consistent(torch.from_numpy(back)[None, None], prep.measured(),
                                         req.detail_gain)[0, 0].numpy()
        params["back_projected"] = True
    return [Product(_scaled(back, prep, req), affine, index, params, codes=prep.codes)]


def anomaly(model: VAE3D, meta: dict, prep: PreparedInput, index: int, req: GenerationRequest,
            call: Callable = direct) -> list[Product]:
    """The voxel anomaly map on the input's grid, with the volume's score, the calibrated threshold
    and the verdict (``vae3d.anomaly``; ``meta["healthy"]``: the healthy-residual statistics), from
    the anomaly restorer ``meta["anomaly_model"]`` (``model`` for a version without one)."""
    restorer, healthy = meta.get("anomaly_model") or model, meta.get("healthy")
    amap = anomaly_map(prep.x, call(inference.reconstruct_as_fitted, restorer, prep.x, healthy), healthy)
    thresholds = meta.get("anomaly", {})
    verdict = anomaly_verdict(float(calibrated_score(amap, thresholds)[0]), thresholds)
    back = to_original_space(amap[0].numpy(), prep.affine, prep.original_affine, prep.original_shape)
    return [Product(back, prep.original_affine, index, verdict, image=False, codes=prep.codes)]


def _scaled(volume: np.ndarray, prep: PreparedInput, req: GenerationRequest) -> np.ndarray:
    """A restored image on the scale ``req.intensity`` asks for."""
    return to_input_scale(volume, prep.intensity_range) if req.intensity == "input" else volume


#: the modes that make outputs from input volumes, each one function
INPUT_MODES: dict[str, Callable[..., list[Product]]] = {
    "augment": augment, "denoise": denoise, "super-resolve": super_resolve, "anomaly": anomaly,
}
