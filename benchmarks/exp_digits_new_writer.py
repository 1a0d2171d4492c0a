"""A new writer's pages read by `predict.py CKPT page.png` (issue 39's goal): for each fold of a
leave-one-writer-out run, the held-out writer's sheets are read whole by the fold's checkpoint, as a
user would read a page of their own (the sheet reader finds the digits, no grid given), and scored
against the sheets' labels (hybridlearn.digits.manifest.builtin_sheets).

    python train.py -m experiment=lenet_digits_transfer cv.folds=3 cv.group_by=writer seed=0,1,2 \\
        hydra.sweep.dir=lightning_logs/lowo_default
    DATA_DIR=../shared/data python benchmarks/exp_digits_new_writer.py lightning_logs/lowo_default

(or a study's runs: `.../digits/study/runs/lowo_transfer_seed*`). Prints one row per (run, writer): digits found against the sheets' count, the accuracy on the pages
read by predict.py, and the fold's test accuracy on the data set's cells (the same digits, cut by the
sheets' known grid). Accuracies, not timings: any machine gives the same numbers.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from pathlib import Path

import numpy as np

from hybridlearn.core.stats import wilson_interval
from hybridlearn.digits.cli import MAX_SIDE
from hybridlearn.digits.images import load_grey
from hybridlearn.digits.manifest import builtin_sheets
from hybridlearn.digits.predict import load_model, read_digits

CV_TABLE = "cv_folds.csv"  # core.cv's table of the folds (fold, n_test, writer, metrics)


def cv_runs(paths: list[Path]) -> list[Path]:
    """The leave-one-writer-out runs (folders with core.cv's cv_folds.csv) in or under `paths`."""
    return sorted(
        {f.parent for p in paths for f in ([p / CV_TABLE] if (p / CV_TABLE).is_file() else p.rglob(CV_TABLE))}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="leave-one-writer-out runs, or folders holding them")
    a = ap.parse_args()
    sheets = builtin_sheets(os.environ.get("DATA_DIR", "data"))
    print("| run | held-out writer | pages | found / expected | read right on the pages | the fold's test cells |")
    print("|---|---|---|---|---|---|")
    pooled: dict[str, list[int]] = {}
    for run in cv_runs(a.runs):
        with open(run / CV_TABLE) as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            writer, fold = row["writer"], run / f"fold_{row['fold']}"
            model, prep = load_model(str(fold / "checkpoints" / "last.ckpt"))
            own = [s for s in sheets if s.writer == writer]
            found = expected = right = 0
            for s in own:
                reading = read_digits(model, prep, load_grey(s.file, max_side=MAX_SIDE), None)
                found, expected = found + len(reading.digits), expected + len(s.labels)
                if len(reading.digits) == len(s.labels):  # in reading order: row-major, as the labels
                    right += int(np.sum(np.asarray(reading.digits) == np.asarray(s.labels)))
            pooled.setdefault(writer, [0, 0])
            pooled[writer][0] += right
            pooled[writer][1] += expected
            print(
                f"| {run.name} | {writer} | {len(own)} | {found} / {expected} | {right / expected:.3f} | "
                f"{float(row['test/acc']):.3f} |",
                flush=True,
            )
    print()
    for writer, (right, n) in pooled.items():
        lo, hi = wilson_interval(right, n)
        print(f"{writer}: {right}/{n} = {right / n:.3f} read right on the pages, 95 % CI [{lo:.3f}, {hi:.3f}]")
    rates = [r / n for r, n in pooled.values()]
    print(f"lowest writer: {min(rates):.3f}; mean over writers: {statistics.mean(rates):.3f}")


if __name__ == "__main__":
    main()
