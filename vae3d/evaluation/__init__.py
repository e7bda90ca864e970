"""Evaluation: reconstruction, denoising vs classical baselines, anomaly detection on
synthetic lesions, and synthesis quality with a memorisation audit. Arrays in, numbers out."""
