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


def wait_all(futures: list, desc: str, key: str, description: str) -> BaseException | None:
    """Wait for every future with a progress bar and a Prefect progress artifact (``key``).

    An interrupt (Ctrl-C, SIGTERM) asks the tasks to stop between volumes and waits for what
    they finished; it is returned (not raised) so the caller can record that work first.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed
    from tqdm.auto import tqdm

    from flows import interrupts

    progress = create_progress_artifact(progress=0.0, key=key, description=description)
    try:
        with tqdm(total=len(futures), desc=desc, unit="batch", disable=None) as bar:
            for n, future in enumerate(as_completed(futures), 1):
                future.wait()
                bar.update(1)
                update_progress_artifact(progress, progress=100.0 * n / len(futures))
    except interrupts.signals() as exc:  # tasks stop between volumes; what they finished is collected
        interrupts.request_stop()
        interrupts.note(exc)
        for future in futures:
            future.wait()
        return exc
    return None
