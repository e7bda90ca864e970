"""Task runner choice (a setting): threads by default, Dask for a cluster address."""

from __future__ import annotations

from flows.settings import PrefectSettings


def task_runner(settings: PrefectSettings):
    if settings.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "task_runner='dask' needs the 'dask' extra: pip install 'vae3d-pipeline[dask]'"
            ) from exc
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": settings.max_workers, "processes": True})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.max_workers)


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def retry_unless_user_error(task, task_run, state) -> bool:
    """A task's ``retry_condition_fn``: retry what may pass next time (a busy server, a
    full disk being freed), never a mistake in the input or the settings, which fails the
    same way on every try."""
    from pydantic import ValidationError

    from data_contracts import ContractViolation, PipelineError

    return not isinstance(state.data, (PipelineError, ContractViolation, ValidationError))
