"""Kept for registered models: a model version stores its pyfunc code (MLflow "models from
code"), and versions registered before ``vae3d.checkpoint`` existed import this path."""

from vae3d.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
