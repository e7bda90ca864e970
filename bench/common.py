"""Shared benchmark helpers: machine facts, the matmul peak, data, result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, trials: int = 5, device: str = "cpu") -> float:
    """Measured fp32 matmul throughput: the denominator of every 'fraction of peak'.

    The best of ``trials`` timings: a shared VM's clock and neighbours move single timings
    by 20% or more, and the best one is the honest (largest) denominator.
    """
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(trials):
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Unlike ru_maxrss it starts afresh at
    exec, so a child started from a large parent does not inherit the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sample_cohort(folder: Path, n: int, spacing: float, seed: int = 0) -> list[Path]:
    """The sample cohort, written once and reused across benchmark runs (``folder`` holds one seed's)."""
    from vae3d.sample_data import CohortSpec, write_cohort

    folder = Path(folder)
    paths = sorted(folder.rglob("sub-*_T1w.nii.gz"))
    if len(paths) >= n:
        return paths[:n]
    return write_cohort(folder, CohortSpec(n=n, seed=seed, spacing_mm=spacing))


def preprocessed_tensors(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size, size) preprocessed sample volumes, cached under bench/results."""
    cache = RESULTS / f"tensors_{n}_{size}_{seed}.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    from vae3d.preprocessing import build_preprocess, preprocess_volume

    spacing = 192.0 / size
    chain = build_preprocess(target_shape=(size,) * 3, target_spacing=(spacing,) * 3)
    paths = sample_cohort(RESULTS / ("cohort_2mm" if seed == 0 else f"cohort_2mm_seed{seed}"), n, 2.0, seed)
    arr = np.stack([preprocess_volume(chain, p)[0] for p in paths])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return torch.from_numpy(arr)


#: another scanner's protocol, as the development scans would come from it (``other_protocol``): their
#: tissue contrast bent by a gamma (grey matter 0.5 -> 0.35, white matter 0.8 -> 0.72) and Rician noise added
OTHER_PROTOCOL = {"gamma": 1.5, "rician_std": 0.03, "seed": 7}


def other_protocol(vols: torch.Tensor, gamma: float, rician_std: float, seed: int) -> torch.Tensor:
    """``vols`` (B, 1, S, S, S), intensities in [0, 1], as another protocol gives them: ``x ** gamma`` with
    Rician noise of ``rician_std`` (``vae3d.corruption.add_noise``), clipped to [0, 1]. A domain shift
    the shipped restorer never saw, for the question its fine-tune answers (``bench.anomaly_restorer_finetune``)."""
    from vae3d.corruption import add_noise

    shifted = add_noise(vols.float().clamp(0, 1) ** gamma, rician_std, "rician", np.random.default_rng(seed))
    return shifted.clamp(0, 1)


def anomaly_dev_data(n: int = 96, protocol: dict | None = None) -> dict:
    """The anomaly benchmarks' development data: the seed-0 cohort's first 7/12 for training, the
    next 2/12 as healthy reference, the rest held out with lesioned copies (seed 1) and their
    masks; ``lesions`` is the lesion settings, as JSON. With ``protocol`` (``OTHER_PROTOCOL``), every
    scan comes through ``other_protocol`` first, and the lesions are drawn into the shifted scans."""
    from vae3d.evaluation.anomaly import LESIONS, lesioned_copies

    vols = preprocessed_tensors(n)
    vols = vols if protocol is None else other_protocol(vols, **protocol)
    held = vols[n * 9 // 12 :]
    lesioned, masks = lesioned_copies(held, seed=1)
    return {"train": vols[: n * 7 // 12], "val": vols[n * 7 // 12 : n * 9 // 12], "held": held,
            "lesioned": lesioned, "masks": masks,
            "lesions": {k: list(v) if isinstance(v, tuple) else v for k, v in LESIONS.items()}}


def dev_meta(d: dict) -> dict:
    """What a development-data result records of ``anomaly_dev_data`` ``d``: its size, split and lesions."""
    return {"n": sum(len(d[k]) for k in ("train", "val", "held")),
            "split": [len(d["train"]), len(d["val"]), len(d["held"])], "lesions": d["lesions"]}


def held_out_overlay(d: dict, amap: torch.Tensor, threshold: float, name: str, k: int = 4) -> Path:
    """The first ``k`` held-out lesioned scans of ``anomaly_dev_data`` ``d`` with their maps ``amap``
    over ``threshold`` and the lesions' contours (``vae3d.figures.anomaly_overlay``): bench/results/NAME.png."""
    from vae3d.figures import anomaly_overlay

    cases = [{"label": f"held-out {i}", "image": d["lesioned"][i, 0].numpy(), "map": amap[i, 0].numpy(),
              "mask": d["masks"][i, 0].numpy()} for i in range(k)]
    path = RESULTS / f"{name}.png"
    anomaly_overlay(cases, threshold).savefig(path, dpi=80)
    return path


def lesion_kept(held: torch.Tensor, lesioned: torch.Tensor, restored: torch.Tensor, masks: torch.Tensor) -> float:
    """The share of the inserted lesion a restoration of ``lesioned`` gives back (1: all of it)."""
    change, inside = lesioned - held, masks.bool()
    return 1 - float(((lesioned - restored)[inside] * change[inside]).sum() / (change[inside] ** 2).sum())


def map_scores(healthy: torch.Tensor, lesioned: torch.Tensor, masks: torch.Tensor, tops: tuple[float, ...],
               calibration: torch.Tensor | None = None) -> dict:
    """How anomaly maps of healthy scans and of their lesioned copies score: voxel AUPRC and best Dice
    on the lesioned maps, and per top fraction ``t`` of voxels (each scan's score) the volume AUROC
    (``volume_auroc[str(t)]``); with the ``calibration`` scans' (out-of-sample) maps, the share of
    lesioned copies flagged at the threshold calibrated on them (``flagged[str(t)]``) and of
    healthy scans (``healthy_flagged[str(t)]``)."""
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics

    out = {**metrics.voxel_metrics(lesioned, masks), "volume_auroc": {}}
    for t in tops:
        sh, sl = anomaly.anomaly_score(healthy, t).numpy(), anomaly.anomaly_score(lesioned, t).numpy()
        out["volume_auroc"][str(t)] = metrics.volume_auroc(sh, sl)
        if calibration is not None:
            threshold = anomaly.score_threshold(anomaly.anomaly_score(calibration, t).numpy())
            out.setdefault("flagged", {})[str(t)] = float(np.mean(sl > threshold))
            out.setdefault("healthy_flagged", {})[str(t)] = float(np.mean(sh > threshold))
    return out


class CachedHead(torch.nn.Module):
    """An anomaly head, its logits remembered per input scan: its input (a scan and its residual) does
    not depend on a benchmark's calibration draw, so each scan's logits are computed once."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head, self.in_channels, self.memo = head, getattr(head, "in_channels", 2), {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for one in x.split(1):
            key = (float(one.sum()), float((one * one).sum()), float(one[..., ::5, ::7, ::3].sum()))
            if key not in self.memo:
                self.memo[key] = self.head(one)
            out.append(self.memo[key])
        return torch.cat(out)


def trained_restorer(train: torch.Tensor, val: torch.Tensor, minutes: float, folder: Path, corruption=None,
                     model=None, lr: float | None = None):
    """An anomaly restorer trained for ``minutes`` of wall clock on ``train`` with the restorer's mix
    (``vae3d.config.COARSE_NOISE``): the shipped one fine-tuned, or with ``model`` (a ``ModelConfig``) one
    of that architecture from scratch; ``corruption`` (``vae3d.corruption.corrupt``'s signature) makes
    the mix in place of ``corrupt``, for this run only; ``lr``: the peak learning rate (``TrainConfig``'s by
    default); checkpoints in ``folder``. Returns (the model
    with its last weights, in eval mode; the training result; seconds)."""
    import vae3d.training.trainer as trainer
    from vae3d.config import COARSE_NOISE, ModelConfig, TrainConfig
    from vae3d.pretrained import load_pretrained
    from vae3d.training import build_model, fit

    cfg = TrainConfig(init="scratch" if model else "pretrained", epochs=10_000, patience=10_000,
                      max_time_s=minutes * 60, restoration=COARSE_NOISE, model=model or ModelConfig(),
                      **({} if lr is None else {"lr": lr}))
    original, trainer.corrupt = trainer.corrupt, corruption or trainer.corrupt
    try:
        net = build_model(cfg, train.shape[-1]) if model else load_pretrained(build_model(cfg, train.shape[-1]),
                                                                               "anomaly")
        t0 = time.perf_counter()
        result = fit(net, train, val, cfg, Path(folder), resume=False, progress=False)
        return net.eval(), result, time.perf_counter() - t0
    finally:
        trainer.corrupt = original


def fine_tuned_restorer(corruption, train: torch.Tensor, val: torch.Tensor, minutes: float, folder: Path):
    """The shipped anomaly restorer fine-tuned with ``corruption`` (``trained_restorer``)."""
    return trained_restorer(train, val, minutes, folder, corruption)


def anomaly_restorer(size: int, path: Path | None = None):
    """The shipped anomaly restorer for ``size``^3 scans, or the one in ``path`` (a file
    ``python -m vae3d.pretrained.build --which anomaly --out`` wrote), in eval mode."""
    from vae3d.config import ModelConfig
    from vae3d.model import VAE3D
    from vae3d.pretrained import load_pretrained

    return load_pretrained(VAE3D(input_size=size, **ModelConfig().model_dump()), "anomaly", path).eval()


def restorer_bench_inputs(n: int = 96, protocol: dict | None = None) -> tuple:
    """What the restorer benchmarks compare on: ``anomaly_dev_data(n, protocol)``, its held-out scans lesioned
    three times and their masks (``lesioned_thrice``), the shipped head, and the shipped anomaly restorer (eval
    mode)."""
    from vae3d.pretrained import load_head

    d = anomaly_dev_data(n, protocol)
    lesioned, masks = lesioned_thrice(d)
    return d, lesioned, masks, load_head(), anomaly_restorer(d["train"].shape[-1])


def trained_fields(result, seconds: float) -> dict:
    """A trained restorer row's training columns: epochs run, seconds, best val SSIM."""
    return {"epochs": result.epochs_run, "train_s": seconds, "val_ssim": result.best_metrics.get("val_ssim")}


def restorer_bench_result(minutes: float, n: int, d: dict, lesioned: torch.Tensor, rows: list[dict], **extra) -> dict:
    """A restorer benchmark's results: its budget, the development split, the lesions and ``rows``."""
    return {"minutes": minutes, "n": n, "split": [len(d["train"]), len(d["val"]), len(d["held"])],
            "lesioned_copies": len(lesioned), "lesions": d["lesions"], **extra, "rows": rows}


def lesioned_thrice(d: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out scans of ``anomaly_dev_data`` ``d`` lesioned three times (seeds 1, 2, 3), and the masks."""
    from vae3d.evaluation.anomaly import lesioned_draws

    lesioned, masks = lesioned_draws(d["held"], [2, 3])  # seed 1's are d's own
    return torch.cat([d["lesioned"], lesioned]), torch.cat([d["masks"], masks])


def dev_restorations(restorer, d: dict, lesioned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``restorer``'s restorations (mirror-averaged, as the anomaly mode makes them) of ``d``'s reference
    and held-out scans and of ``lesioned``."""
    from vae3d import anomaly
    from vae3d.inference import reconstruct_all

    return tuple(reconstruct_all(restorer, v, mirror=anomaly.MIRROR_AVERAGED) for v in (d["val"], d["held"], lesioned))


def restorer_row(name: str, restorer, d: dict, lesioned: torch.Tensor, masks: torch.Tensor, head,
                 restored: tuple[torch.Tensor, ...] | None = None) -> dict:
    """How the product's map (``vae3d.anomaly``, with ``head``; the normalised residual alone with None)
    made from ``restorer`` scores on ``anomaly_dev_data`` ``d``: calibrated leave-one-out on the reference
    scans, the held-out healthy scans against their ``lesioned`` copies (``lesioned_thrice``). The share
    of a lesion given back, the healthy restoration error, voxel AUPRC / best Dice, volume AUROC and the
    shares flagged at the calibrated threshold. ``restored``: ``dev_restorations``, when already made."""
    from vae3d import anomaly
    from vae3d.evaluation import anomaly as metrics

    rv, rh, rl = restored or dev_restorations(restorer, d, lesioned)
    stats, thresholds = anomaly.calibrate(d["val"], rv, head=head)
    m_h, m_l = anomaly.anomaly_map(d["held"], rh, stats), anomaly.anomaly_map(lesioned, rl, stats)
    sh, sl = anomaly.anomaly_score(m_h).numpy(), anomaly.anomaly_score(m_l).numpy()
    held = d["held"].repeat(len(lesioned) // len(d["held"]), 1, 1, 1, 1)
    return {"row": name, "lesion_kept": lesion_kept(held, lesioned, rl, masks),
            "healthy_mae": float((rh - d["held"]).abs().mean()), **metrics.voxel_metrics(m_l, masks),
            "volume_auroc": metrics.volume_auroc(sh, sl),
            "flagged": float(np.mean(sl > thresholds["score_threshold"])),
            "healthy_flagged": float(np.mean(sh > thresholds["score_threshold"]))}


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
