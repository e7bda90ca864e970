"""Scale-out on real engines: torchrun (DDP, gloo) for training, Dask for generation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from mlflow.tracking import MlflowClient
from net import free_port

from data_contracts.generation import GenerationRequest
from vae3d import nifti

ROOT = Path(__file__).resolve().parents[2]



def test_torchrun_two_processes_one_checkpoint_one_run(preprocessed, tmp_path):
    settings = preprocessed
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"workspace"})))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "flows.distributed_train",
           "--workspace", str(settings.workspace), "--config", str(config), "--no-register"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]

    folders = list((settings.workspace / "checkpoints").iterdir())
    assert len(folders) == 1
    assert sorted(p.name for p in folders[0].glob("*.pt")) == ["best.pt", "last.pt"]
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("vae3d").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["vae3d.world_size"] == "2" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_ssim")) == settings.train.epochs


def test_generate_on_a_dask_cluster_matches_the_thread_runner(trained, tmp_path):
    from dask.distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.generate import run_generate

    settings, _ = trained
    request = GenerationRequest(mode="synthetic", n=6, seed=11, batch_size=2)
    threads = run_generate(request, settings, str(tmp_path / "threads"))

    # the workers must talk to the same Prefect server instead of starting their own
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_settings = settings.model_copy(update={"prefect": settings.prefect.model_copy(
            update={"task_runner": "dask", "dask_address": cluster.scheduler_address})})
        dask = run_generate(request, dask_settings, str(tmp_path / "dask"))
        workers = len(cluster.scheduler_info["workers"])
    assert workers == 2
    assert [Path(r.path).name for r in dask.outputs] == [Path(r.path).name for r in threads.outputs]
    # Dask workers run torch with another thread count, so the last float bits may differ,
    # and move a value across an int16 rounding boundary: one step at most
    for a, b in zip(dask.outputs, threads.outputs, strict=True):
        np.testing.assert_allclose(nib.load(a.path).get_fdata(), nib.load(b.path).get_fdata(),
                                   atol=nifti.INT16_STEP + 1e-5)
        np.testing.assert_array_equal(nib.load(a.path).affine, nib.load(b.path).affine)
