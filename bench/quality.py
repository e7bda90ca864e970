"""Quality: the whole pipeline from scratch on a sample cohort big enough to mean something,
then `vae3d evaluate` on the test split.

The cohort (default 120 subjects) gives a test split of at least 12 volumes; the run stops
with an error if the content-hash split gives fewer. Training has a wall-clock budget on this
machine's cores (default 20 minutes); with cohort writing, preprocessing and evaluation the
whole benchmark stays within 30 CPU-minutes of a 2-core machine.

    python -m bench.quality --n 120 --train-minutes 20

The evaluation report and its figures are kept in bench/results/quality_figures/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, write_result

MIN_TEST = 12


def run(n: int, minutes: float, seed: int = 0, min_test: int = MIN_TEST, init: str = "scratch") -> dict:
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="vae3d-quality-"))
    os.environ.update(PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      MLFLOW_DISABLE_TELEMETRY="true")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.evaluate import evaluate_flow
    from flows.ingest import run_ingest
    from flows.preprocess import run_preprocess
    from flows.settings import load_settings
    from flows.train import train_flow
    from vae3d.sample_data import CohortSpec, write_cohort

    try:
        write_cohort(root / "cohort", CohortSpec(n=n, seed=seed, spacing_mm=2.0))
        settings = load_settings(workspace=root / "ws", allowed_roots=[root], seed=seed,
                                 train={"max_time_s": minutes * 60, "epochs": 10_000, "patience": 10_000,
                                        "init": init})
        run_ingest([str(root / "cohort")], settings)
        counts = run_preprocess(settings).counts()
        if counts["test"] < min_test:
            raise SystemExit(f"the split gave {counts['test']} test volumes (< {min_test}); raise --n")
        trained = train_flow(settings)
        results = evaluate_flow(settings)
        figures = RESULTS / "quality_figures"  # the report's pictures, to look at
        shutil.rmtree(figures, ignore_errors=True)
        shutil.copytree(next((root / "ws" / "evaluation").iterdir()), figures)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "seed": seed, "train_minutes": minutes, "init": init, "counts": counts,
            "total_minutes": (time.perf_counter() - t0) / 60,
            "train": {k: trained[k] for k in ("best", "epochs_run")}, "evaluation": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="subjects in the sample cohort")
    ap.add_argument("--train-minutes", type=float, default=20.0, help="training budget (wall clock)")
    ap.add_argument("--min-test", type=int, default=MIN_TEST, help="fewest test volumes accepted")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample cohort (and of the run): pick one "
                    "whose subjects no design choice was tried on")
    ap.add_argument("--init", choices=("scratch", "pretrained"), default="scratch",
                    help="starting weights: random, or the shipped pretrained ones (trained on another cohort)")
    ap.add_argument("--name", default="quality", help="results file (bench/results/NAME.json): 'quality', or "
                    "'quality_pretrained' for its own section of BENCHMARKS.md")
    a = ap.parse_args()
    print(write_result(a.name, run(a.n, a.train_minutes, seed=a.seed, min_test=a.min_test, init=a.init)))


if __name__ == "__main__":
    main()
