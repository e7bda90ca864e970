"""Run every benchmark, then write BENCHMARKS.md.  ``make bench`` (about 90 minutes on 2 cores)."""

from __future__ import annotations

import argparse

from bench import generate_bench, model_ablation, preprocess_bench, quality, report, scaling, train_peers
from bench.common import write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-budget", type=float, default=180.0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the harness")
    a = ap.parse_args()
    budget = 10.0 if a.quick else a.train_budget
    write_result("preprocess", preprocess_bench.run(2 if a.quick else 6))
    write_result("generate", generate_bench.run(8 if a.quick else 200, [4, 16] if a.quick else [10, 500],
                                                1 if a.quick else 3))
    write_result("scaling", scaling.run([4, 16] if a.quick else [10, 100, 1000]))
    write_result("model_ablation", model_ablation.run(10.0 if a.quick else 150.0,
                                                      list(model_ablation.ROWS)[:2 if a.quick else None]))
    write_result("quality", quality.run(12 if a.quick else 120, 0.3 if a.quick else 20.0,
                                        min_test=0 if a.quick else quality.MIN_TEST))
    write_result("train_peers", train_peers.run(budget, ["vae3d", "monai_varautoencoder", "monai_autoencoderkl"],
                                                [False, True]))
    print(report.write())


if __name__ == "__main__":
    main()
