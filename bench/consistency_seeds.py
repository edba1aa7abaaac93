"""The consistency figures over several runs (seeds): mean and spread of each target figure.

Reads ``RUN/experiments/consistency.json`` of every run given (written by ``vrx consistency``) and
prints, per figure, the value of each run and their mean ± standard deviation (population), plus
the paper-form table summed over the runs.

    python bench/consistency_seeds.py runs/s0/run runs/s1/run runs/s2/run
"""

from __future__ import annotations

import argparse
import statistics

from vrx.experiments.consistency_records import EDIT_LABELS, ConsistencyResult
from vrx.run import Run
from vrx.store import read_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    results = [ConsistencyResult.from_dict(read_json(Run(r).experiment_result_path("consistency"))) for r in args.runs]
    figures = {"errors": [r.n_errors for r in results],
               "accuracy on the shifted split": [r.accuracy for r in results],
               "CNN test accuracy": [r.test_accuracy for r in results]}
    for e in results[0].edits_run():
        figures[f"corrected: {EDIT_LABELS[e]}"] = [r.rate(e) for r in results]
    figures["culprit on the planted cause"] = [r.culprit_rate for r in results]
    figures["VRX type = planted type"] = [r.type_rate for r in results]
    print("| figure | " + " | ".join(args.runs) + " | mean ± std |")
    print("|---|" + "---|" * len(args.runs) + "---|")
    for name, vals in figures.items():
        cells = " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals)
        nums = [float(v) for v in vals if v is not None]
        print(f"| {name} | {cells} | {statistics.mean(nums):.3f} ± {statistics.pstdev(nums):.3f} |")
    total: dict[str, dict[str, int]] = {}
    for r in results:
        for row, counts in r.counts().items():
            for k, v in counts.items():
                total.setdefault(row, {}).setdefault(k, 0)
                total[row][k] += v
    print("\n| images still wrong (all runs) | total | concept | structure | both |\n|---|---|---|---|---|")
    for row, c in total.items():
        label = "before the edit" if row == "before" else EDIT_LABELS[row]
        print(f"| {label} | {c['total']} | {c['concept']} | {c['structure']} | {c['both']} |")
    planted: dict[str, dict[str, int]] = {}
    for r in results:
        for p, row in r.planted_vs_vrx().items():
            for k, v in row.items():
                planted.setdefault(p, {}).setdefault(k, 0)
                planted[p][k] += v
    print("\n| planted type (all runs) | VRX: concept | structure | both |\n|---|---|---|---|")
    for p, row in sorted(planted.items()):
        print(f"| {p} | {row['concept']} | {row['structure']} | {row['both']} |")


if __name__ == "__main__":
    main()
