"""Training throughput and quality against MONAI's own VAEs, same data, same wall clock.

Each model trains in its own subprocess (so peak memory is its own) on the same
preprocessed sample volumes (64^3, the pipeline's default batch size unless ``--batch``),
with the same loss (L1 + KL), optimiser and time budget; then its posterior-mean
reconstructions of held-out volumes are scored with MONAI's SSIM/PSNR. Achieved GFLOP/s in
the training step (FLOPs counted by PyTorch's FlopCounterMode) is reported as a fraction of
the fp32 matmul peak measured in this run.

    python -m bench.train_peers --budget 240
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from bench.common import matmul_peak_gflops, peak_rss_mb, preprocessed_tensors, write_result

SIZE = 64


def _build(name: str, channels_last: bool, vae3d_kwargs: dict | None = None):
    from monai.networks.nets import AutoencoderKL, VarAutoEncoder

    from vae3d.config import ModelConfig
    from vae3d.model import VAE3D

    torch.manual_seed(0)
    if name == "vae3d":  # the pipeline's default architecture (train.model), with any overrides
        model = VAE3D(input_size=SIZE, **{**ModelConfig().model_dump(), **(vae3d_kwargs or {})})

        def train_out(x):
            r, mu, lv = model(x)
            return r, mu, lv

        recon = model.reconstruct
    elif name == "monai_varautoencoder":
        model = VarAutoEncoder(spatial_dims=3, in_shape=(1, SIZE, SIZE, SIZE), out_channels=1,
                               latent_size=128, channels=(16, 32, 64, 64), strides=(2, 2, 2, 2))

        def train_out(x):
            r, mu, lv, _ = model(x)
            return r, mu, lv

        def recon(x):  # eval-mode forward adds noise (MONAI issue 8413): decode mu
            mu, _ = model.encode_forward(x)
            return model.decode_forward(mu, use_sigmoid=True)
    elif name == "monai_autoencoderkl":
        model = AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=(16, 32, 64, 64),
                              latent_channels=8, num_res_blocks=(1, 1, 1, 1), norm_num_groups=8,
                              attention_levels=(False,) * 4, with_encoder_nonlocal_attn=False,
                              with_decoder_nonlocal_attn=False)

        def train_out(x):
            r, mu, sigma = model(x)
            return r, mu, 2 * torch.log(sigma.clamp_min(1e-8))

        recon = model.reconstruct
    else:
        raise ValueError(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model, train_out, recon


def _run(name: str, budget: float, channels_last: bool, queue, vae3d_kwargs: dict | None, batch: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from vae3d.losses import VAELoss
    from vae3d.training.trainer import validate

    data = preprocessed_tensors(48, SIZE)
    train, val = data[:40], data[40:]
    model, train_out, recon = _build(name, channels_last, vae3d_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = VAELoss("l1")
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)

    def step(x):
        r, mu, lv = train_out(x)
        loss = loss_fn(r, x, mu, lv, 0.05)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    x0 = train[:batch].contiguous(memory_format=fmt)
    with FlopCounterMode(display=False) as counter:
        step(x0)
    flops = counter.get_total_flops()
    step(x0)  # warm
    t_steps, n_steps = 0.0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget:
        idx = torch.randint(len(train), (batch,), generator=g)
        x = train[idx].contiguous(memory_format=fmt)
        t = time.perf_counter()
        step(x)
        t_steps += time.perf_counter() - t
        n_steps += 1

    class _Recon(torch.nn.Module):  # validate() expects .reconstruct
        def reconstruct(self, x):
            with torch.no_grad():
                return recon(x)

    holder = _Recon()
    model.eval()
    metrics = validate(holder, val, 4, torch.device("cpu"))
    queue.put({
        "model": name, "channels_last": channels_last,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "steps": n_steps, "samples_per_s": n_steps * batch / t_steps,
        "step_s": t_steps / n_steps, "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / 1e9 / (t_steps / n_steps),
        "val_ssim": metrics["val_ssim"], "val_psnr": metrics["val_psnr"],
        "peak_rss_mb": peak_rss_mb(),
    })


def run(budget: float, models: list[str], layouts: list[bool], vae3d_kwargs: dict | None = None,
        batch: int | None = None) -> dict:
    from vae3d.config import TrainConfig

    batch = batch or TrainConfig().batch_size
    preprocessed_tensors(48, SIZE)  # build the data once, outside the timed runs
    peak = matmul_peak_gflops()
    rows = []
    ctx = mp.get_context("spawn")
    for name in models:
        # the layout choice is ours to measure; peers run in the faster (channels_last) one
        for cl in (layouts if name == "vae3d" else [True]):
            q = ctx.Queue()
            p = ctx.Process(target=_run, args=(name, budget, cl, q, vae3d_kwargs, batch))
            p.start()
            row = q.get()
            p.join()
            if name == "vae3d":
                row["vae3d_kwargs"] = vae3d_kwargs or {}
            row["fraction_of_matmul_peak"] = row["achieved_gflops"] / peak
            rows.append(row)
            print(json.dumps(row))
    return {"budget_s": budget, "matmul_peak_gflops": peak, "size": SIZE, "batch": batch, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=180.0, help="seconds of training per model")
    ap.add_argument("--models", nargs="+", default=["vae3d", "monai_varautoencoder", "monai_autoencoderkl"])
    ap.add_argument("--layouts", default="both", choices=["both", "channels_last", "contiguous"])
    ap.add_argument("--vae3d-kwargs", type=json.loads, default={},
                    help='VAE3D constructor overrides as JSON, e.g. \'{"num_res_blocks": 1}\'')
    ap.add_argument("--batch", type=int, default=None, help="batch size of every model (default: train.batch_size)")
    a = ap.parse_args()
    layouts = {"both": [False, True], "channels_last": [True], "contiguous": [False]}[a.layouts]
    result = run(a.budget, a.models, layouts, a.vae3d_kwargs, a.batch)
    print(write_result("train_peers", result))


if __name__ == "__main__":
    main()
