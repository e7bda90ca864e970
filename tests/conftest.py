"""Shared fixtures: one real Prefect server for the session, tiny NIfTI factories."""

from __future__ import annotations

import os
import shutil

import pytest
from nifti_factory import good

from flows.settings import load_settings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# tiny models trained for seconds stay below the production quality floor; the floor has its own test
os.environ.setdefault("VAE3D_REGISTRY__MIN_VAL_SSIM", "0")


def _share_the_cores() -> None:
    """Each xdist worker is a process whose torch would run an OpenMP team of every core: two workers
    on 2 cores then run 4 threads that spin against each other, and a tiny U-Net's training steps take
    10x longer than with one thread each. A worker takes its share of the cores, and the processes it
    starts (CLI runs, servers, torchrun) inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from flows.resources import cpu_cores

        share = max(1, cpu_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


_share_the_cores()


def pytest_collection_modifyitems(items):
    """Tests of the ``trained`` model share one xdist worker (``--dist loadgroup``): the session
    fixture trains it once instead of once per worker."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained"))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real temporary Prefect API (SQLite) shared by every flow test in the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session", autouse=True)
def _allow_pytest_tmp(tmp_path_factory):
    """Tests keep their scans beside the workspace, under pytest's temporary folder: it is an
    allowed root (a test about confinement passes its own, narrower ``allowed_roots``)."""
    import json

    os.environ["VAE3D_ALLOWED_ROOTS"] = json.dumps([str(tmp_path_factory.getbasetemp())])


@pytest.fixture(autouse=True)
def _restore_environ():
    """CLI commands set PREFECT_/MLFLOW_ defaults in os.environ; keep tests independent."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)

TINY_TRAIN = {
    "epochs": 2, "batch_size": 2, "lr": 3e-3, "warmup_steps": 2, "beta": 0.01, "kl_warmup_steps": 4,
    "augment_prob": 0.0, "channels_last": False,
    "model": {"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4, "patch_size": 4},
}


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """One migrated SQLite store per session, copied per test (migrations take seconds)."""
    from flows.tracking import init_store
    from flows.workspace import Workspace

    ws = Workspace.at(tmp_path_factory.mktemp("mlflow-template"))
    init_store(ws, load_settings(workspace=ws.root).mlflow)
    return ws.mlflow_dir / "mlflow.db"


@pytest.fixture
def preprocessed(prefect_server, tmp_path, mlflow_template):
    """A workspace with 10 phantom volumes ingested and preprocessed to 16^3."""
    from flows.ingest import run_ingest
    from flows.preprocess import run_preprocess

    src = tmp_path / "src"
    for i in range(10):
        good(src / f"v{i}.nii.gz", seed=i, shape=(28, 28, 28))
    ws = tmp_path / "ws"
    (ws / "mlflow").mkdir(parents=True)
    shutil.copy(mlflow_template, ws / "mlflow" / "mlflow.db")
    settings = load_settings(
        workspace=ws,
        preprocess={"target_shape": (16, 16, 16), "target_spacing": (8.0, 8.0, 8.0)},
        train=TINY_TRAIN,
        ingest={"fractions": {"train": 0.6, "val": 0.4, "test": 0.0}},
    )
    run_ingest([str(src)], settings)
    index = run_preprocess(settings)
    assert index.counts()["train"] >= 2 and index.counts()["val"] >= 1, index.counts()
    return settings


@pytest.fixture(scope="session")
def trained(prefect_server, tmp_path_factory, mlflow_template):
    """A workspace with a tiny champion model trained on 24^3 phantoms (once per session)."""
    from flows.ingest import run_ingest
    from flows.preprocess import run_preprocess
    from flows.train import train_flow

    root = tmp_path_factory.mktemp("trained")
    src = root / "src"
    for i in range(16):
        good(src / f"v{i:02d}.nii.gz", seed=i, shape=(32, 32, 32), spacing=4.0)
    (root / "ws" / "mlflow").mkdir(parents=True)
    shutil.copy(mlflow_template, root / "ws" / "mlflow" / "mlflow.db")
    settings = load_settings(
        workspace=root / "ws",
        preprocess={"target_shape": (24, 24, 24), "target_spacing": (6.0, 6.0, 6.0)},
        ingest={"fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
        train={"epochs": 25, "batch_size": 2, "lr": 5e-3, "warmup_steps": 2, "beta": 0.01,
               "kl_warmup_steps": 4, "augment_prob": 0.0, "channels_last": False, "patience": 100,
               "model": {"channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4, "flat_latent": 32,
                         "patch_size": 4},
               "anomaly": {"fpr_confidence": 0.8}},  # not the default: registration and evaluate must follow it
    )
    run_ingest([str(src)], settings)
    counts = run_preprocess(settings).counts()
    assert min(counts.values()) >= 2, counts
    train_flow(settings)
    return settings, src
