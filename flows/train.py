"""Train flow: train on the dataset index, track in MLflow, register, gate promotion."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import tempfile
from pathlib import Path

import mlflow
import torch
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from data_contracts import DatasetIndex
from flows.locks import exclusive
from flows.model_card import model_card
from flows.registry import CANDIDATE, code_version, find_version, log_and_register, promote_if_better
from flows.runners import retry_unless_user_error
from flows.settings import Settings
from flows.tracking import MlflowCallback, flatten, init_store, log_figure, mlflow_run_link, prefect_tags, tracking_uri
from flows.workspace import Workspace, route_library_logs
from vae3d import anomaly, figures, inference
from vae3d.checkpoint import save_checkpoint
from vae3d.data import load_volumes
from vae3d.device import resolve_device
from vae3d.evaluation import anatomy
from vae3d.files import atomic_write_text, sha256_file
from vae3d.generation import calibrate_intensity
from vae3d.model import load_model
from vae3d.pretrained import HEAD_WEIGHTS
from vae3d.prior import fit_prior
from vae3d.training import Trained, build_model, fit_with_restorer
from vae3d.training.restorer import pretrained_head

RESTORER_PREFIX = "anomaly_restorer/"  # the restorer's metrics in the training run


def _marker(ws: Workspace, key: str) -> Path:
    """Which MLflow run a training key uses, and the version it registered (None until then)."""
    return ws.checkpoints / key / "mlflow_run.json"


def run_key(index: DatasetIndex, settings: Settings) -> str:
    """Same data + same training settings -> same checkpoint folder, so a re-run resumes."""
    blob = json.dumps([index.manifest_sha256, index.settings_key, settings.train.to_dict()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=[2, 10])
def start_run(settings: Settings, index: DatasetIndex, key: str) -> str:
    """Reuse the MLflow run of an interrupted training with the same key, else start one."""
    ws = Workspace.at(settings.workspace)
    client, exp_id = init_store(ws, settings.mlflow)
    marker = _marker(ws, key)
    with exclusive(ws.locks / f"run-{key}.lock", f"the MLflow run of training {key}"):
        if marker.exists():
            previous = json.loads(marker.read_text())
            if previous.get("registered_version") is None:  # interrupted before registration
                return previous["run_id"]
        return _create_run(client, exp_id, settings, index, key, ws, marker)


def _create_run(client, exp_id: str, settings: Settings, index: DatasetIndex, key: str, ws: Workspace,
                marker: Path) -> str:
    in_flow = prefect_tags()
    run = client.create_run(exp_id, tags={"vae3d.code_version": code_version(), "vae3d.run_key": key, **in_flow})
    run_id = run.info.run_id
    if in_flow:  # (a torchrun rank calls this outside any flow run)
        create_link_artifact(key="mlflow-run", link=mlflow_run_link(settings, exp_id, run_id),
                             link_text=f"MLflow run {run_id}", description="the training run, its metrics and model")
    params = flatten("train", settings.train.to_dict()) | flatten("preprocess", index.settings)
    params |= {"data.manifest_sha256": index.manifest_sha256, "seed": str(settings.seed)}
    for k, v in index.counts().items():
        params[f"data.n_{k}"] = str(v)
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in {
            "system.python": platform.python_version(), "system.torch": torch.__version__,
            "system.cuda": str(torch.cuda.is_available()), "system.machine": platform.machine()}.items()],
    )
    log_splits(run_id, index, ws)
    atomic_write_text(marker, json.dumps({"run_id": run_id, "registered_version": None}))
    return run_id


def log_splits(run_id: str, index: DatasetIndex, ws: Workspace) -> None:
    """Each split as an MLflow dataset (one row per scan: id, source path and sha256, cached
    volume digest) with its context, ``train``, ``val`` or ``test``; the source is the dataset index."""
    import pandas as pd

    datasets, contexts = [], []
    source = LocalArtifactDatasetSource(ws.dataset_index.as_uri())  # a file URI alone reads two ways: MLflow warns
    for split in ("train", "val", "test"):
        fields = {"id", "source_path", "source_sha256", "cache_digest"}
        rows = [i.model_dump(include=fields) for i in index.split(split)]
        if rows:
            datasets.append(mlflow.data.from_pandas(pd.DataFrame(rows), source=source,
                                                    name=f"vae3d-{split}", digest=index.split_digest(split)))
            contexts.append(split)
    with mlflow.start_run(run_id=run_id):  # the public API logs to the active run ...
        mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[{} for _ in datasets])
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")  # ... and ending it must not end training's


@task
def train_model(settings: Settings, index: DatasetIndex, key: str, run_id: str, fresh: bool) -> dict:
    ws = Workspace.at(settings.workspace)
    client, _ = init_store(ws, settings.mlflow)
    train = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("train")])
    val = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("val")])
    model = build_model(settings.train, index.target_shape[0])
    with exclusive(ws.locks / f"train-{key}.lock", f"checkpoint folder {ws.checkpoints / key}"):
        trained = fit_with_restorer(model, train, val, settings.train, ws.checkpoints / key,
                                    callbacks=[MlflowCallback(client, run_id)],
                                    restorer_callbacks=[MlflowCallback(client, run_id, RESTORER_PREFIX)],
                                    resume=not fresh)
    return outcome_of(trained)


def outcome_of(trained: Trained) -> dict:
    """What the review and registration read of a training: the main model's best checkpoint,
    metrics and history, and the anomaly restorer's weights (the chosen ones), its fine-tune's best
    metrics and the choice (if one was trained)."""
    result, restorer = trained.main, trained.restorer
    return {"best_checkpoint": str(result.best_checkpoint), "best": result.best_metrics,
            "history": result.history, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
            "restorer_checkpoint": str(trained.restorer_weights) if restorer else None,
            "restorer_best": restorer.best_metrics if restorer else {}, "restorer_choice": trained.choice}


@task
def log_review(settings: Settings, index: DatasetIndex, run_id: str, outcome: dict) -> str:
    """Figures, the model card, the raw weights and settings, as run artifacts."""
    ws = Workspace.at(settings.workspace)
    client, _ = init_store(ws, settings.mlflow)
    model = load_model(outcome["best_checkpoint"])
    val = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("val")[:3]])
    log_figure(client, run_id, figures.reconstructions(model, val), "reconstructions.png")
    log_figure(client, run_id, figures.restoration_examples(model, val, seed=settings.seed), "restoration.png")
    log_figure(client, run_id, figures.latent_traversal(model, val), "latent_traversal.png")
    log_figure(client, run_id, figures.loss_curves(outcome["history"]), "loss_curves.png")
    card = model_card(settings.mlflow.registered_model, run_id, index.counts(), index.manifest_sha256,
                      settings.train.to_dict(), index.settings, outcome["best"], code_version(),
                      outcome.get("restorer_choice"))
    client.log_text(run_id, card, "model_card.md")
    client.log_artifact(run_id, outcome["best_checkpoint"], "checkpoint")
    client.log_text(run_id, json.dumps(settings.model_dump(mode="json"), indent=1), "settings.json")
    return card


@task(retries=2, retry_condition_fn=retry_unless_user_error, retry_delay_seconds=[2, 10])
def register(settings: Settings, index: DatasetIndex, run_id: str, outcome: dict, card: str) -> dict:
    decision = register_model(settings, index, run_id, outcome, card)
    create_markdown_artifact(
        key="promotion-decision",
        markdown=f"# {settings.mlflow.registered_model} v{decision['version']}\n\n"
                 f"**{decision['decision']}**: {decision['reason']}\n",
    )
    return decision


def log_prior_directions(client, run_id: str, model, prior, voxel_ml: float) -> list[dict]:
    """What each leading direction of the prior changes in the decoded anatomy (brain and
    ventricle volume, grey/white ratio; ``vae3d.evaluation.anatomy``): the MLflow table
    ``prior_directions.json`` and, for the run's charts, each property's correlation as a metric
    (``prior_direction_<property>_corr``, one step per direction)."""
    rows = anatomy.prior_directions(model, prior, voxel_ml)
    client.log_table(run_id, data={k: [r[k] for r in rows] for k in rows[0]}, artifact_file="prior_directions.json")
    for r in rows:
        for p in anatomy.PROPERTIES:
            client.log_metric(run_id, f"prior_direction_{p}_corr", r[f"{p}_corr"], step=r["direction"])
    return rows


def _diffusion_options(settings: Settings) -> dict:
    """``fit_prior``'s keywords for a latent diffusion prior (none for the others): its settings,
    the training seed and device, and a progress line every 100 steps."""
    if settings.train.prior.kind != "diffusion":
        return {}
    log = get_run_logger()
    return {**settings.train.prior.diffusion.model_dump(), "seed": settings.train.seed,
            "device": resolve_device(settings.train.device),
            "progress": lambda step, loss: log.info("latent diffusion prior: step %d, loss %.4f", step, loss)}


def register_model(settings: Settings, index: DatasetIndex, run_id: str, outcome: dict, card: str) -> dict:
    """Calibrate anomaly thresholds, fit the latent prior, log + register the pyfunc, gate promotion,
    close the run."""
    ws = Workspace.at(settings.workspace)
    client, _ = init_store(ws, settings.mlflow)
    cfg = settings.mlflow
    best = outcome["best"]
    model = load_model(outcome["best_checkpoint"])
    restorer = load_model(outcome["restorer_checkpoint"]) if outcome.get("restorer_checkpoint") else model
    val = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("val")])
    head = pretrained_head(settings.train) if restorer is not model else None
    mirror = anomaly.MIRROR_AVERAGED  # how the statistics' restorations are made, and every map's after them
    how = settings.train.anomaly
    healthy, thresholds = anomaly.calibrate(val, inference.reconstruct_all(restorer, val, mirror=mirror), head=head,
                                            mirror_averaged=mirror, false_positive_rate=how.false_positive_rate,
                                            confidence=how.fpr_confidence)
    thresholds["restorer"] = "separate" if restorer is not model else "main model"
    if outcome.get("restorer_choice"):  # which weights the map uses, and the validation figures that chose them
        thresholds["restorer_choice"] = {k: v for k, v in outcome["restorer_choice"].items() if k != "weights"}
    if head is not None:  # which shipped head weighs the map (its weights travel in the anomaly artifact)
        thresholds["head"] = {"weights": HEAD_WEIGHTS.name, **{k: head.description[k] for k in ("cohort", "train")}}
    train = load_volumes([(i.cache_path, i.cache_digest) for i in index.split("train")])
    cfg_prior = settings.train.prior
    prior = fit_prior(cfg_prior.kind, inference.encode_all(model, train), cfg_prior.rank, cfg_prior.refine,
                      cfg_prior.spread, **_diffusion_options(settings))
    if cfg_prior.match_intensity:
        prior = calibrate_intensity(model, prior, train, seed=settings.seed)
    log_figure(client, run_id, figures.prior_samples(model, seed=settings.seed, prior=prior), "prior_samples.png")
    if prior.kind == "lowrank":
        log_figure(client, run_id, figures.prior_traversal(model, prior), "prior_traversal.png")
        log_prior_directions(client, run_id, model, prior, math.prod(index.target_spacing) / 1000.0)
    meta = {"anomaly": thresholds, "prior": {"kind": prior.kind, "rank": getattr(prior, "rank", None),
                                             "refine": prior.refine, "spread": getattr(prior, "spread", None),
                                             "fitted_on": len(train),
                                             "intensity_map": prior.intensity is not None},
            "restoration": {"model_rmse": inference.restoration_error(model, val)},
            "template_affine": index.template_affine, "target_shape": list(index.target_shape),
            "target_spacing": list(index.target_spacing), "preprocess": index.settings, "run_id": run_id,
            "code_version": code_version()}
    tags = {"data.manifest_sha256": index.manifest_sha256, "git_commit": code_version(), "run_id": run_id,
            **{k: f"{v:.6f}" for k, v in best.items() if isinstance(v, float)},
            **{f"anomaly_restorer.{k}": f"{v:.6f}" for k, v in outcome.get("restorer_best", {}).items()
               if k.startswith("val_")}}
    with exclusive(ws.locks / "register.lock", f"registered model {cfg.registered_model}"):
        version = find_version(client, cfg.registered_model, run_id, sha256_file(outcome["best_checkpoint"]))
        if version is None:
            with tempfile.TemporaryDirectory() as tmp:
                extra = {"anomaly": save_checkpoint(Path(tmp) / "anomaly.pt", healthy.state()),
                         "prior": save_checkpoint(Path(tmp) / "prior.pt", prior.state())}
                if restorer is not model:
                    extra["anomaly_restorer"] = Path(outcome["restorer_checkpoint"])
                version = log_and_register(client, run_id, cfg.registered_model, outcome["best_checkpoint"],
                                           meta, tags, index.target_shape[0], extra=extra,
                                           latent_size=math.prod(model.latent_shape))
        else:  # registered before a kill could mark it: the same version, not a second one
            get_run_logger().info("run %s is already registered as v%s: not registered again", run_id, version)
            client.set_registered_model_alias(cfg.registered_model, CANDIDATE, version)
        client.update_model_version(cfg.registered_model, version, description=card)
        decision = promote_if_better(client, cfg.registered_model, version, cfg.promotion_metric,
                                     settings.registry.min_val_ssim)
    client.set_terminated(run_id, "FINISHED")
    atomic_write_text(_marker(ws, run_key(index, settings)),
                      json.dumps({"run_id": run_id, "registered_version": version}))
    return decision


def already_registered(settings: Settings, ws: Workspace, key: str) -> dict | None:
    """The outcome of a finished training with this data and these settings, if its version is
    still registered: a re-run (a weekly schedule on unchanged data) registers nothing new."""
    marker = _marker(ws, key)
    previous = json.loads(marker.read_text()) if marker.exists() else {}
    version, run_id = previous.get("registered_version"), previous.get("run_id")
    if version is None:
        return None
    client, _ = init_store(ws, settings.mlflow)
    name = settings.mlflow.registered_model
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:  # deleted since: register again
        return None
    if mv.run_id != run_id:
        return None
    best = {k: float(v) for k, v in mv.tags.items() if k.startswith("val_")}  # register_model's float tags
    history = client.get_metric_history(run_id, "val_ssim")
    return {"run_id": run_id, "version": str(version), "decision": "unchanged",
            "reason": f"the data and training settings are unchanged since run {run_id}, registered as "
                      f"v{version}: nothing new was trained or registered ('vae3d train --fresh' trains again)",
            "champion": "", "best": best, "epochs_run": max((m.step for m in history), default=0)}


@flow(name="train")
def train_flow(settings: Settings, fresh: bool = False) -> dict:
    """Train, track, register as ``candidate``, promote to ``champion`` if better."""
    route_library_logs()
    logger = get_run_logger()
    ws = Workspace.at(settings.workspace)
    index = DatasetIndex.read(ws.require_index())
    key = run_key(index, settings)
    uri = tracking_uri(ws, settings.mlflow)
    done = None if fresh else already_registered(settings, ws, key)
    if done is not None:
        logger.info("%s", done["reason"])
        return done
    try:
        run_id = start_run(settings, index, key)
    except Exception as exc:
        raise RuntimeError(
            f"MLflow at {uri} is unreachable or refused the run ({type(exc).__name__}: {exc}); nothing "
            "was trained. Start the tracking server or fix VAE3D_MLFLOW__TRACKING_URI, then re-run."
        ) from exc
    try:
        outcome = train_model(settings, index, key, run_id, fresh)
    except Exception:
        try:
            init_store(ws, settings.mlflow)[0].set_terminated(run_id, "FAILED")
        except Exception:
            logger.warning("could not mark MLflow run %s as failed", run_id)
        raise
    restorer = outcome["restorer_checkpoint"]
    restorer = f" (and the anomaly restorer's, {restorer})" if restorer else ""
    try:
        card = log_review(settings, index, run_id, outcome)
        decision = register(settings, index, run_id, outcome, card)
    except Exception as exc:
        raise RuntimeError(
            f"training finished but logging/registering in MLflow at {uri} failed ({type(exc).__name__}: "
            f"{exc}). The trained checkpoint {outcome['best_checkpoint']}{restorer} is kept: re-run "
            "'vae3d train' with the same settings to register it without retraining."
        ) from exc
    logger.info("run %s: %s (%s)", run_id, decision["decision"], decision["reason"])
    return {"run_id": run_id, **decision, "best": outcome["best"], "epochs_run": outcome["epochs_run"]}
