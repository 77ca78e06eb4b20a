#!/usr/bin/env python3
"""Accuracy versus cost over the cost weight alpha (Avengers-Pro, arXiv 2508.12631) on recorded MMLU-Pro outputs.

    python bench/cost_curve.py --recorded ../shared/data/recorded/mmlupro_even_half.jsonl.gz --out runs/cost

The recorded file holds one published output of each of 14 open 6-9B models per question (see its README).
This script turns it into labels with costs, outside the repository (OUT/mmlupro_{calibration,test}.jsonl):

- score: 1 when the multiple-choice extractor of the voter (:mod:`avengers.core.answers`) reads the gold
  letter from the model's output, else 0;
- cost: output length in whitespace-separated words (the replay engine's token count; token counts were
  not published) x the model's parameters in billions / 1000 — a price per token proportional to model
  size, the usual shape of open-model price lists;
- split by question id: ids with (id / 2) even calibrate, the others test.

Then it fits a router on the calibration half the way `avengers fit` does (default selectors and routing)
and prints, for alpha = 0, 0.1, ..., 1, the average over categories of the routed model's score and the mean
cost per query, next to every single model; writes OUT/cost_curve.md and OUT/cost_curve.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from avengers.config import ClusteringConfig, EmbeddingConfig
from avengers.config.routing import SelectorsConfig
from avengers.core.answers import create_extractor
from avengers.core.embedding import create_embedder, default_cache_dir
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.tools.evaluation import alpha_curve, curve_plot, curve_table

PARAMS_B = {
    "Llama-2-7b-hf": 6.7, "Mistral-7B-v0.1": 7.2, "Mistral-7B-v0.2-hf": 7.2, "Mistral-7B-Instruct-v0.1": 7.2,
    "Mistral-7B-Instruct-v0.2": 7.2, "Meta-Llama-3-8B": 8.0, "Meta-Llama-3_1-8B": 8.0,
    "Meta-Llama-3_1-8B-Instruct": 8.0, "Qwen1.5-7B-Chat": 7.7, "Yi-6B": 6.1, "Yi-6b-Chat": 6.1, "gemma-7b": 8.5,
    "mathstral-7B": 7.2, "Phi-3-mini-4k-instruct": 3.8,
}
"""Parameters (billions) of each recorded model: the price per output token is proportional to them."""


def build_labels(recorded: Path, out: Path) -> tuple[Path, Path]:
    extractor = create_extractor("multiple_choice")
    questions: dict[str, dict] = {}
    per_model: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    with gzip.open(recorded, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            questions.setdefault(r["id"], {"dataset": r["dataset"], "query": r["query"]})
            got = extractor.extract(r["text"])
            correct = float(got is not None and extractor.normalise(got) == r["answer"])
            cost = len(r["text"].split()) * PARAMS_B[r["model"]] / 1000
            per_model[r["id"]][r["model"]] = (correct, round(cost, 6))
    paths = (out / "mmlupro_calibration.jsonl", out / "mmlupro_test.jsonl")
    with paths[0].open("w") as cal, paths[1].open("w") as test:
        for qid, q in questions.items():
            models = per_model[qid]
            if set(models) != set(PARAMS_B):
                continue
            number = int(qid.rsplit("-", 1)[1])
            split, fh = ("calibration", cal) if (number // 2) % 2 == 0 else ("test", test)
            row = {"id": qid, "dataset": q["dataset"], "split": split, "query": q["query"],
                   "scores": {m: v[0] for m, v in sorted(models.items())},
                   "costs": {m: v[1] for m, v in sorted(models.items())}}
            fh.write(json.dumps(row) + "\n")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recorded", required=True)
    ap.add_argument("--out", default="runs/cost")
    ap.add_argument("--k", type=int, default=32, help="clusters (default: %(default)s, as `avengers fit`)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cal_path, test_path = build_labels(Path(args.recorded), out)
    cal, test = read_labels(cal_path), read_labels(test_path)
    emb = create_embedder(EmbeddingConfig(cache_dir=str(default_cache_dir() / "embeddings"), threads=1))
    x_cal, x_test = emb.encode(cal.queries), emb.encode(test.queries)
    artifact = fit_router_on_embeddings(
        cal, x_cal, emb.name, ClusteringConfig(k=args.k), selectors=SelectorsConfig()
    )
    alphas = [round(a, 1) for a in np.arange(0, 1.01, 0.1)]
    points = alpha_curve(artifact, test, x_test, alphas)
    scores, costs = test.score_matrix(artifact.models), test.cost_matrix(artifact.models)
    assert costs is not None
    datasets = np.array(test.datasets)
    singles = []
    for j, model in enumerate(artifact.models):
        acc = 100 * np.mean([scores[datasets == d, j].mean() for d in test.dataset_names])
        singles.append((acc, float(costs[:, j].mean()), model))
    singles.sort(reverse=True)
    lines = [
        (f"Router {artifact.version} ({artifact.routing.strategy}, K={args.k}) fitted on {len(cal)} calibration "
        f"questions, measured on {len(test)} test questions ({len(test.dataset_names)} categories, each weighs "
        "the same)."),
        "",
        curve_table(points),
        "",
        "| single model | score avg (%) | mean cost per query |",
        "|---|---:|---:|",
        *[f"| {m} | {a:.2f} | {c:.4g} |" for a, c, m in singles],
        "",
        f"(time {time.perf_counter() - t0:.0f} s)",
    ]
    text = "\n".join(lines)
    (out / "cost_curve.md").write_text(text + "\n")
    curve_plot(points, out / "cost_curve.png", title="MMLU-Pro (recorded outputs): accuracy vs cost over alpha")
    print(text)


if __name__ == "__main__":
    main()
