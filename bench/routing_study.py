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
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.tools.evaluation import evaluate


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
    out.append(beyond_the_recipe(train, xtr, evals))
    print(out[-1], flush=True)
    out.append(f"\n(study time {time.perf_counter() - t0:.0f} s)\n")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "study.md").write_text("\n".join(out))


def beyond_the_recipe(train, xtr, evals) -> str:
    """Variants outside the library, to see where the ceiling is (k-means with seed 42, n_init 3).

    - cluster oracle: each cluster takes the model that is best on the EVALUATION rows routed to it (an upper
      bound for routing with that clustering; it peeks at the evaluation labels);
    - kNN: the mean scores of the n nearest calibration queries (no clustering);
    - seed ensemble: scores averaged over 10 k-means runs with different seeds;
    - hierarchical shrinkage: each K=64/128 cluster's means shrunk toward its K=16 parent cluster's means
      with 100 pseudo-counts.
    """
    from sklearn.cluster import KMeans

    s = train.score_matrix()
    m = s.shape[1]

    def cluster_means(labels, k, prior=None, alpha=0.0):
        sums = np.zeros((k, m))
        np.add.at(sums, labels, s)
        counts = np.bincount(labels, minlength=k)[:, None]
        return (sums + alpha * prior) / (counts + alpha) if prior is not None else sums / np.maximum(counts, 1)

    def macro(ls, choice):
        got = ls.score_matrix(train.models)[np.arange(len(ls)), choice]
        ds = np.array(ls.datasets)
        return 100 * np.mean([got[ds == d].mean() for d in ls.dataset_names])

    names = list(evals)
    rows: list[tuple[str, list[float]]] = []
    fits = {k: KMeans(k, n_init=3, random_state=42).fit(xtr) for k in (16, 64, 128)}
    for k, f in fits.items():
        vals = []
        for ls, x in evals.values():
            assigned = f.predict(x)
            test_sums = np.zeros((k, m))
            np.add.at(test_sums, assigned, ls.score_matrix(train.models))
            vals.append(macro(ls, test_sums.argmax(1)[assigned]))
        rows.append((f"cluster oracle, K={k}", vals))
    for n in (50, 200, 400):
        vals = []
        for ls, x in evals.values():
            near = np.argsort(-(x @ xtr.T), axis=1)[:, :n]
            vals.append(macro(ls, s[near].mean(axis=1).argmax(1)))
        rows.append((f"kNN, n={n}", vals))
    for k in (16, 64):
        runs = [KMeans(k, n_init=1, random_state=seed).fit(xtr) for seed in range(10)]
        vals = []
        for ls, x in evals.values():
            avg = np.mean([cluster_means(r.labels_, k)[r.predict(x)] for r in runs], axis=0)
            vals.append(macro(ls, avg.argmax(1)))
        rows.append((f"seed ensemble (10 k-means), K={k}", vals))
    parent = fits[16]
    parent_means = cluster_means(parent.labels_, 16)
    for k in (64, 128):
        f = fits[k]
        up = np.array([np.bincount(parent.labels_[f.labels_ == c], minlength=16).argmax() for c in range(k)])
        shrunk = cluster_means(f.labels_, k, parent_means[up], alpha=100.0)
        rows.append((f"hierarchical shrinkage to K=16, K={k}", [macro(ls, shrunk[f.predict(x)].argmax(1)) for ls, x in evals.values()]))
    lines = ["### Beyond the recipe (exploration; not library features)", "", "| variant | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for label, vals in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
