"""The per-dataset baselines of a labels split, without embedding anything: what a router that recognised each
query's dataset perfectly (and nothing finer) would score.

    .venv/bin/python bench/dataset_baseline.py --train ../shared/data/routerdc/train.jsonl \
        --eval ../shared/data/routerdc/test.jsonl [--eval ../shared/data/routerdc/ood.jsonl]

For each evaluation file and each of its datasets: the score (mean correctness) of the model that is best on
that dataset in the TRAIN file (``avengers.core.fit.dataset_best_models``, what ``avengers fit`` records and
``avengers eval`` reports as "best per dataset (train)"), of the best model chosen on the evaluation file
itself (the target, which peeks at the test labels), and of the one best model overall on train. Averages
weigh every dataset the same, as in docs/BENCHMARKS.md. A dataset absent from train takes the best model
overall. Prints a Markdown table per evaluation file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avengers.core.fit import best_single_model, dataset_best_models, macro_means
from avengers.core.labels import read_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--eval", type=Path, action="append", required=True)
    args = parser.parse_args()

    train = read_labels(args.train)
    models = train.models
    train_scores = train.score_matrix(models)
    on_train = dataset_best_models(train, train_scores, models)
    best_overall = best_single_model(train, train_scores, models)
    for path in args.eval:
        labels = read_labels(path)
        scores = labels.score_matrix(models)
        means = macro_means(labels, scores)
        print(f"\n{path.name} (best single model on train: {best_overall})\n")
        print("| dataset | rows | best per dataset (train) | best per dataset (this file) | best single (train) |")
        print("|---|---:|---:|---:|---:|")
        columns = []
        for dataset, mean in means.items():
            rows = sum(1 for d in labels.datasets if d == dataset)
            chosen = models.index(on_train.get(dataset, best_overall))
            values = (100 * mean[chosen], 100 * mean.max(), 100 * mean[models.index(best_overall)])
            columns.append(values)
            print(f"| {dataset} | {rows} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        average = np.mean(columns, axis=0)
        print(f"| **average** | {len(labels)} | " + " | ".join(f"**{v:.2f}**" for v in average) + " |")


if __name__ == "__main__":
    main()
