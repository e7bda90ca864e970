"""The model card: what data, what settings, what metrics, and the intended use."""

from __future__ import annotations

import json


def model_card(name: str, run_id: str, counts: dict, manifest_sha: str, train_cfg: dict,
               preprocess: dict, best: dict, code_version: str) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(best.items()) if isinstance(v, float))
    return f"""# Model card: {name} (run `{run_id}`)

## Intended use
A 3D convolutional VAE for T1-weighted brain MRI preprocessed by this pipeline. It produces
synthetic volumes (prior samples), augmented variants, posterior-mean denoised volumes,
voxel-wise anomaly maps (residual to the reconstruction) and latent embeddings for
research and for training downstream models. **Not a medical device; not for diagnosis.**
Anomaly maps reflect deviation from the training cohort, not pathology.

## Data
- manifest sha256: `{manifest_sha}`
- volumes: train {counts.get('train', 0)}, validation {counts.get('val', 0)}, test {counts.get('test', 0)}
- preprocessing: `{json.dumps(preprocess)}`

## Training settings
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
