"""Multi-process training under torchrun (DistributedDataParallel).

    torchrun --nproc-per-node 2 -m flows.distributed_train --workspace ./workspace   # CPU (gloo)
    torchrun --nproc-per-node 8 -m flows.distributed_train --workspace /workspace    # GPUs (NCCL)

Every rank trains on its share of each global batch; rank 0 alone talks to MLflow, writes
checkpoints and (unless ``--no-register``) registers the model and gates promotion.
Run it after ``vae3d preprocess``; the settings come from the environment / ``--config``.
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from data_contracts import DatasetIndex
from flows.allocator import tune_allocator
from flows.settings import load_settings
from flows.workspace import Workspace, configure_environment

log = logging.getLogger("vae3d.distributed_train")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--no-register", action="store_true", help="train and track only")
    ap.add_argument("--fresh", action="store_true", help="ignore an interrupted run's checkpoint")
    a = ap.parse_args(argv)
    if "RANK" not in os.environ:
        raise SystemExit("run me under torchrun, e.g.: torchrun --nproc-per-node 2 -m flows.distributed_train")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank" + os.environ["RANK"] + " %(message)s")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    try:
        _train(a, dist.get_rank())
    finally:
        dist.destroy_process_group()


def _train(a, rank: int) -> None:
    settings = load_settings(a.config, workspace=a.workspace)
    ws = Workspace.at(settings.workspace)
    configure_environment(ws)
    tune_allocator()
    from flows.tracking import MlflowCallback, init_store
    from flows.train import RESTORER_PREFIX, log_review, outcome_of, register_model, run_key, start_run
    from vae3d.data import load_volumes
    from vae3d.training import build_model, fit_with_restorer

    index = DatasetIndex.read(ws.dataset_index)
    key = run_key(index, settings)
    callbacks, restorer_callbacks, run_id = [], [], None
    if rank == 0:
        run_id = start_run.fn(settings, index, key)
        client, _ = init_store(ws, settings.mlflow)
        callbacks = [MlflowCallback(client, run_id)]
        restorer_callbacks = [MlflowCallback(client, run_id, RESTORER_PREFIX)]
    train = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("train")])
    val = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("val")])
    model = build_model(settings.train, index.target_shape[0])
    trained = fit_with_restorer(model, train, val, settings.train, ws.checkpoints / key, callbacks=callbacks,
                                restorer_callbacks=restorer_callbacks, resume=not a.fresh, progress=rank == 0)
    if rank == 0:
        client.set_tag(run_id, "vae3d.world_size", str(dist.get_world_size()))
        outcome = outcome_of(trained)
        card = log_review.fn(settings, index, run_id, outcome)
        if a.no_register:
            client.set_terminated(run_id, "FINISHED")
        else:
            decision = register_model(settings, index, run_id, outcome, card)
            log.info("run %s: v%s %s (%s)", run_id, decision["version"], decision["decision"], decision["reason"])
    dist.barrier()


if __name__ == "__main__":
    main()
