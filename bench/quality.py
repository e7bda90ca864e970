"""Quality: the demo pipeline (sample cohort, 4 CPU minutes of training) then `vae3d evaluate`.

    python -m bench.quality --n 40 --train-minutes 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench.common import write_result


def run(n: int, minutes: float, seed: int = 0) -> dict:
    root = Path(tempfile.mkdtemp(prefix="vae3d-quality-"))
    os.environ.update(PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      MLFLOW_DISABLE_TELEMETRY="true")
    from flows.evaluate import evaluate_flow
    from flows.ingest import run_ingest
    from flows.preprocess import run_preprocess
    from flows.settings import load_settings
    from flows.train import train_flow
    from vae3d.sample_data import CohortSpec, write_cohort

    write_cohort(root / "cohort", CohortSpec(n=n, seed=seed, spacing_mm=2.0))
    settings = load_settings(workspace=root / "ws", train={"max_time_s": minutes * 60, "epochs": 500})
    run_ingest([str(root / "cohort")], settings)
    counts = run_preprocess(settings).counts()
    trained = train_flow(settings)
    results = evaluate_flow(settings)
    shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "train_minutes": minutes, "counts": counts, "train": {k: trained[k] for k in ("best", "epochs_run")},
            "evaluation": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--train-minutes", type=float, default=3.0)
    a = ap.parse_args()
    print(write_result("quality", run(a.n, a.train_minutes)))


if __name__ == "__main__":
    main()
