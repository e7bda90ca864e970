"""The model card: what data, what settings, what metrics, and the intended use."""

from __future__ import annotations

import json


def _pretrain_seed() -> int:
    from vae3d.pretrained import PRETRAIN_SEED

    return PRETRAIN_SEED


def _uses_head(train_cfg: dict) -> bool:
    from vae3d.config import TrainConfig
    from vae3d.training.restorer import uses_pretrained_head

    return uses_pretrained_head(TrainConfig.model_validate(train_cfg))


def _choice(choice: dict | None) -> str:
    """What the card says of the restorer choice (``vae3d.training.restorer_choice``): which weights serve the
    map, and the criterion on lesioned validation copies that chose them; nothing when none was made."""
    if not choice:
        return ""
    from vae3d.training.restorer_choice import criteria

    kept = ("the fine-tune was kept" if choice["chosen"] == "fine-tuned"
            else "the shipped restorer was kept, the fine-tune not clearly better")
    return f"; {kept} (criterion on lesions drawn into validation copies: {criteria(choice['figures'])})"


def model_card(name: str, run_id: str, counts: dict, manifest_sha: str, train_cfg: dict,
               preprocess: dict, best: dict, code_version: str, restorer_choice: dict | None = None) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(best.items()) if isinstance(v, float))
    init = train_cfg.get("init", "scratch")
    start = ("**pretrained**: started from the shipped weights of `vae3d/pretrained` (built by "
             "`python -m vae3d.pretrained.build` on a separate sample cohort, seed "
             f"{_pretrain_seed()}), then trained on this data" if init == "pretrained"
             else "**from scratch** (random initialisation, seeded)")
    restorer = train_cfg.get("anomaly", {})
    anomaly = (f"{restorer.get('budget_share', 0):.0%} of the training budget; started from "
               + ("the shipped pretrained restorer" if init == "pretrained" else "the main model's weights")
               + _choice(restorer_choice) if restorer.get("separate", True)
               else "off here: the main model makes the maps")
    head = (", each voxel weighed by the shipped discriminative head trained on synthetic anomalies "
            "(`vae3d/anomaly_head.py`), less the healthy validation scans' mean map" if _uses_head(train_cfg) else "")
    return f"""# Model card: {name} (run `{run_id}`)

## Intended use
A 3D convolutional VAE for T1-weighted brain MRI preprocessed by this pipeline, trained to
restore corrupted inputs (noise, bias field, ringing, lost resolution) to clean ones. It produces
synthetic volumes (prior samples), augmented variants, denoised and super-resolved volumes,
voxel-wise anomaly maps and latent embeddings for
research and for training downstream models. **Not a medical device; not for diagnosis.**
Anomaly maps are the residual to a second network of the same architecture, the anomaly
restorer, fine-tuned to repair coarse noise on every input ({anomaly}){head}; they reflect
deviation from the training cohort, not pathology.

## Data
- manifest sha256: `{manifest_sha}`
- volumes: train {counts.get('train', 0)}, validation {counts.get('val', 0)}, test {counts.get('test', 0)}
- preprocessing: `{json.dumps(preprocess)}`

## Training settings
Starting weights: {start}.

```json
{json.dumps(train_cfg, indent=1)}
```

## Validation metrics (best epoch)
| metric | value |
|---|---|
{metrics}

## Limitations
- Trained at low resolution ({preprocess.get('target_shape')} voxels of {preprocess.get('target_spacing')} mm):
  fine anatomy is smoothed; outputs are only as diverse as the training cohort.
- Synthetic data can memorise training scans: run the evaluation's memorisation audit
  before sharing samples.

code version: `{code_version}`
"""
