#!/usr/bin/env python3
"""What moves routed accuracy on a labels dataset: K, clustering algorithm, soft routing, score smoothing, seed.

    python bench/routing_study.py --train ../shared/data/routerdc/train.jsonl \
        --eval ../shared/data/routerdc/test.jsonl --eval ../shared/data/routerdc/ood.jsonl --out runs/study

Prints Markdown tables (average over datasets of the mean score, %) and writes them to OUT/study.md.
Embeddings come from the on-disk cache shared with `avengers fit/eval`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from avengers.config import ClusteringConfig, EmbeddingConfig, RoutingConfig, ScoringConfig
from avengers.core.embedding import create_embedder, default_cache_dir
from avengers.core.evaluation import evaluate
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", action="append", required=True)
    ap.add_argument("--out", default="runs/study")
    args = ap.parse_args()
    emb = create_embedder(EmbeddingConfig(cache_dir=str(default_cache_dir() / "embeddings")))
    train = read_labels(args.train)
    xtr = emb.encode(train.queries)
    evals = {Path(p).stem: (ls := read_labels(p), emb.encode(ls.queries)) for p in args.eval}
    names = list(evals)
    out: list[str] = []

    def run(clustering: ClusteringConfig, scoring: ScoringConfig | None = None, routing: RoutingConfig | None = None) -> dict[str, float]:
        scoring, routing = scoring or ScoringConfig(), routing or RoutingConfig()
        art = fit_router_on_embeddings(train, xtr, emb.name, clustering, scoring, routing)
        return {n: evaluate(art, ls, x, routing).average.routed for n, (ls, x) in evals.items()}

    def table(title: str, header: str, rows: list[tuple[str, dict[str, float]]]) -> None:
        lines = [f"### {title}", "", f"| {header} | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {label} | " + " | ".join(f"{r[n]:.2f}" for n in names) + " |" for label, r in rows]
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        out.append(text)

    single = fit_router_on_embeddings(train, xtr, emb.name, ClusteringConfig(k=1))
    for n, (ls, x) in evals.items():
        a = evaluate(single, ls, x).average
        out.append(f"- {n}: best single (train) {a.best_single:.2f}, best single per dataset {a.dataset_best:.2f}, oracle {a.oracle:.2f}\n")
    print("".join(out))

    t0 = time.perf_counter()
    table("K (k-means, nearest)", "K", [(str(k), run(ClusteringConfig(k=k))) for k in (1, 4, 8, 16, 24, 32, 48, 64, 128, 256)])
    seeds = {}
    for k in (16, 64):
        runs = [run(ClusteringConfig(k=k, seed=s)) for s in range(5)]
        seeds[k] = {n: f"{np.mean([r[n] for r in runs]):.2f} ± {np.std([r[n] for r in runs]):.2f}" for n in names}
    out.append("### Seed spread (k-means seeds 0–4, mean ± std)\n\n| K | " + " | ".join(names) + " |\n|---|"
               + "---:|" * len(names) + "\n" + "".join(f"| {k} | " + " | ".join(v[n] for n in names) + " |\n" for k, v in seeds.items()))
    print(out[-1], flush=True)
    table("Clustering algorithm (nearest)", "algorithm, K",
          [(f"{a}, {k}", run(ClusteringConfig(algorithm=a, k=k))) for k in (16, 64) for a in ("kmeans", "gmm", "agglomerative", "spectral", "birch")])
    table("Soft routing (k-means)", "K, top_k, beta",
          [(f"{k}, {tk}, {b}", run(ClusteringConfig(k=k), routing=RoutingConfig(strategy="soft", top_k=tk, beta=b)))
           for k in (16, 64) for tk in (3, 5) for b in (3.0, 9.0, 20.0)])
    table("Score smoothing toward each model's global mean (k-means, nearest)", "K, pseudo-count",
          [(f"{k}, {s}", run(ClusteringConfig(k=k), ScoringConfig(smoothing=s))) for k in (16, 64, 128) for s in (0.0, 5.0, 20.0, 50.0)])
    out.append(f"\n(study time {time.perf_counter() - t0:.0f} s)\n")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "study.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
