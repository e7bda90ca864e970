"""The registered model, as MLflow "models from code": usable by any MLflow user.

    model = mlflow.pyfunc.load_model("models:/vae3d@champion")
    recon = model.predict(x)                                  # x: (B, 1, S, S, S) float32 in [0, 1]
    amap = model.predict(x, params={"mode": "anomaly"})      # voxel anomaly map, same shape
    z = model.predict(x, params={"mode": "embed"})           # (B, latent size)
    s = model.predict(np.zeros((8, 1, S, S, S), np.float32), params={"mode": "synthetic", "seed": 0})
                                                              # 8 samples of the registered prior

Modes: ``reconstruct`` (default), ``denoise`` (the same posterior-mean reconstruction),
``anomaly`` (the map of the anomaly restorer registered with the version, trained with
coarse noise; the main model for a version without one), ``embed``, ``synthetic`` (as many
samples of the latent prior fitted at registration as the input has volumes, whose values are
not read; ``seed`` and ``temperature`` parameters; the latents ``vae3d generate synthetic``
decodes for indices 0..B-1). The weights and every artifact are verified against the sha256
recorded at registration before they are loaded (``weights_only=True``).

Output shapes by mode (also in the model's metadata, ``output_shapes``): (B, 1, S, S, S) float32
for ``reconstruct``, ``denoise``, ``anomaly`` and ``synthetic``; (B, latent size) float32 for
``embed``. The signature states the input and the parameters only, since one output schema
cannot describe both shapes.

This file and what it imports (``vae3d.model``, ``vae3d.inference``, ``vae3d.anomaly``,
``vae3d.generation``, ``vae3d.prior``, ``vae3d.intensity``, ``vae3d.latent_diffusion``, ``vae3d.files``,
``data_contracts``) need only the logged
requirements: torch, monai, numpy, pydantic, mlflow and einops (MONAI's diffusion UNet, for a latent
diffusion prior; ``tests/flows/test_model_env.py`` loads the model in such a venv).
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

MODES = ("reconstruct", "denoise", "anomaly", "embed", "synthetic")


class VAE3DPyfunc(PythonModel):
    def load_context(self, context) -> None:
        from vae3d.model import load_model

        with open(context.artifacts["meta"]) as fh:
            self.meta = json.load(fh)
        self.model = load_model(_verified(context.artifacts["weights"], self.meta["weights_sha256"]))
        from vae3d.anomaly import HealthyResiduals
        from vae3d.prior import prior_from_state

        # the anomaly map's healthy-residual statistics and the latent prior; None for a version
        # registered before them (a plain residual map; N(0, I))
        healthy, prior = self._artifact(context, "anomaly"), self._artifact(context, "prior")
        self.healthy = HealthyResiduals.from_state(healthy) if healthy is not None else None
        self.prior = prior_from_state(prior) if prior is not None else None
        # the anomaly map's own restorer (trained with coarse noise); the main model for a version without one
        restorer = context.artifacts.get("anomaly_restorer")
        self.restorer = (load_model(_verified(restorer, self.meta["artifacts_sha256"]["anomaly_restorer"]))
                         if restorer else self.model)

    def _artifact(self, context, name: str) -> dict | None:
        """The tensors of the registered artifact ``name``, verified against its recorded sha256."""
        if name not in context.artifacts:
            return None
        from vae3d.checkpoint import load_checkpoint

        return load_checkpoint(_verified(context.artifacts[name], self.meta["artifacts_sha256"][name]))

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        from vae3d import anomaly, inference

        mode = (params or {}).get("mode", "reconstruct")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; use one of {MODES}")
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        size = self.model.input_size
        if x.ndim != 5 or tuple(x.shape[1:]) != (1, size, size, size):
            raise ValueError(f"expected input of shape (B, 1, {size}, {size}, {size}), got {tuple(x.shape)}")
        if mode == "synthetic":  # as `vae3d generate synthetic` (N(0, I) for a version without a prior)
            from vae3d.generation import synthesize

            return synthesize(self.model, range(len(x)), int((params or {}).get("seed", 0)),
                              float((params or {}).get("temperature", 1.0)), self.prior).numpy()
        outs = []
        with torch.no_grad():
            for chunk in x.split(4):
                if mode == "embed":
                    outs.append(inference.embed(self.model, chunk))
                    continue
                if mode == "anomaly":
                    restored = inference.reconstruct_as_fitted(self.restorer, chunk, self.healthy)
                    outs.append(anomaly.anomaly_map(chunk, restored, self.healthy))
                    continue
                recon = inference.reconstruct(self.model, chunk)
                rmse = self.meta.get("restoration", {}).get("model_rmse")
                if mode == "denoise" and rmse is not None:  # as `vae3d generate denoise`
                    recon = inference.fuse(chunk, recon, rmse)
                outs.append(recon)
        return torch.cat(outs).numpy()


def _verified(path: str, sha256: str) -> str:
    """``path``, after checking its sha256 against the one recorded at registration."""
    from vae3d.files import sha256_file

    digest = sha256_file(path)
    if digest != sha256:
        raise RuntimeError(f"{path} has sha256 {digest}, registration recorded {sha256}: the artifact was "
                           "altered; re-register the model")
    return path


mlflow.models.set_model(VAE3DPyfunc())
