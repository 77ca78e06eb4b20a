#!/usr/bin/env python3
"""Every routing selector x distance x K side by side, defaults chosen by cross-validation on train only.

    python bench/selector_study.py --train ../shared/data/routerdc/train.jsonl \\
        --eval ../shared/data/routerdc/test.jsonl --eval ../shared/data/routerdc/ood.jsonl --out runs/selectors

1. Each configuration (selector, K, distance, parameters) is scored by 5-fold cross-validation on the
   training file (folds stratified by dataset, seed 0): fit on four folds, route the fifth, macro-average
   over datasets of the routed model's score; the mean over folds ranks the configurations.
2. The configuration with the best cross-validated mean is the default. Only then is every configuration
   fitted on the whole training file and measured once on each evaluation file (same embeddings).
3. The default is fitted the way `avengers fit` does and evaluated with `avengers eval`'s code: bootstrap 95%
   intervals of its average and of its paired differences to the best single model and to each
   dataset's best model chosen on train; then refitted with seeds 0-4 (spread of the average).

Writes OUT/selectors.md (the tables) and OUT/selectors.json. Embeddings come from the on-disk cache shared
with `avengers fit/eval`. Cap threads (OMP_NUM_THREADS=1) on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avengers.config import ClusteringConfig, EmbeddingConfig, RoutingConfig
from avengers.config.routing import SelectorsConfig
from avengers.core.clustering import cluster
from avengers.core.embedding import create_embedder, default_cache_dir
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import LabelSet, read_labels
from avengers.core.routing import Router
from avengers.core.scoring import score_clusters
from avengers.core.selectors import FitData, create_selector
from avengers.tools.evaluation import evaluate

KS = (8, 16, 32, 64)
DISTANCES = ("euclidean", "cosine")
FOLDS = 5


@dataclass
class Config:
    selector: str
    k: int | None
    """None: the selector does not use the clusters (it is fitted with K=16 clusters for feedback)."""
    distance: str | None
    params: dict = field(default_factory=dict)
    """SelectorsConfig fields (fit-time) and RoutingConfig top_k/beta (request-time)."""

    @property
    def label(self) -> str:
        p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return p or "—"

    def routing(self) -> RoutingConfig:
        extra = {k: v for k, v in self.params.items() if k in ("top_k", "beta")}
        return RoutingConfig(strategy=self.selector, distance=self.distance or "euclidean", **extra)

    def selectors(self) -> SelectorsConfig:
        fitted = [] if self.selector in ("nearest", "soft") else [self.selector]
        extra = {k: v for k, v in self.params.items() if k not in ("top_k", "beta")}
        return SelectorsConfig(fit=fitted, **extra)


def configs() -> list[Config]:
    out: list[Config] = []
    for k in KS:
        for dist in DISTANCES:
            out.append(Config("nearest", k, dist))
            for top_k in (3, 5):
                for beta in (3.0, 9.0, 27.0):
                    out.append(Config("soft", k, dist, {"top_k": top_k, "beta": beta}))
            for parent in (4, 8):
                if parent < k:
                    for strength in (5.0, 20.0, 50.0):
                        out.append(Config("shrinkage", k, dist, {"shrinkage_parent_k": parent, "shrinkage_strength": strength}))
    for n in (10, 25, 50, 100, 200):
        out.append(Config("knn", None, None, {"knn_neighbours": n}))
    for n in (10, 25, 50, 100):
        for lam in (25.0, 50.0, 100.0, 200.0, 400.0):
            out.append(Config("hknn", None, None, {"hknn_neighbours": n, "hknn_strength": lam}))
    for c in (0.1, 1.0):
        out.append(Config("logistic", None, None, {"logistic_c": c}))
    for dim, epochs in ((32, 300), (64, 300)):
        out.append(Config("mf", None, None, {"mf_dimension": dim, "mf_epochs": epochs}))
    return out


def macro(scores: np.ndarray, datasets: np.ndarray, choice: np.ndarray) -> float:
    got = scores[np.arange(len(scores)), choice]
    return 100 * float(np.mean([got[datasets == d].mean() for d in dict.fromkeys(datasets)]))


class Split:
    """One fit set and one held-out set; clusterings and fitted selectors cached across configurations."""

    def __init__(self, x: np.ndarray, s: np.ndarray, groups: np.ndarray, xe: np.ndarray, se: np.ndarray, de: np.ndarray):
        self.x, self.s, self.groups, self.xe, self.se, self.de = x, s, groups, xe, se, de
        self._clusterings: dict[int, object] = {}
        self._fitted: dict[tuple, object] = {}

    def clustering(self, k: int):
        if k not in self._clusterings:
            self._clusterings[k] = cluster(self.x, ClusteringConfig(k=k))
        return self._clusterings[k]

    def score(self, cfg: Config) -> float:
        result = self.clustering(cfg.k or 16)
        table = score_clusters(result.labels, self.s, result.k)
        sel_cfg = cfg.selectors()
        selectors = {}
        if cfg.selector not in ("nearest", "soft"):
            # hknn/knn only differ in scoring parameters between configurations: fit once, re-parametrise
            fit_keys = {k: v for k, v in cfg.params.items() if k not in ("knn_neighbours", "hknn_neighbours", "hknn_strength")}
            key = (cfg.selector, cfg.k, tuple(sorted(fit_keys.items())))
            if key not in self._fitted:
                selector = create_selector(cfg.selector, sel_cfg)
                selector.fit(FitData(self.x, self.s, result.labels, result.centroids, table.scores, self.groups))
                self._fitted[key] = selector
            selector = self._fitted[key]
            selector.config = sel_cfg
            selectors[cfg.selector] = selector
        router = Router(result.centroids, table, cfg.routing(), selectors=selectors)
        choice, _ = router.choose(self.xe, cfg.routing())
        return macro(self.se, self.de, choice)


def folds_of(groups: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(groups), dtype=np.int64)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups == g)
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % FOLDS
    return folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", action="append", required=True)
    ap.add_argument("--out", default="runs/selectors")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    emb = create_embedder(EmbeddingConfig(cache_dir=str(default_cache_dir() / "embeddings"), threads=1))
    train = read_labels(args.train)
    xtr = emb.encode(train.queries)
    evals: dict[str, tuple[LabelSet, np.ndarray]] = {}
    for path in args.eval:
        ls = read_labels(path)
        evals[Path(path).stem] = (ls, emb.encode(ls.queries))
    s = train.score_matrix()
    groups = np.array(train.datasets)
    folds = folds_of(groups)
    cv_splits = [
        Split(xtr[folds != f], s[folds != f], groups[folds != f], xtr[folds == f], s[folds == f], groups[folds == f])
        for f in range(FOLDS)
    ]
    grid = configs()
    cv: dict[str, list[float]] = {}
    for i, cfg in enumerate(grid):
        key = f"{cfg.selector}|{cfg.k}|{cfg.distance}|{cfg.label}"
        cv[key] = [split.score(cfg) for split in cv_splits]
        print(f"[{i + 1}/{len(grid)} {time.perf_counter() - t0:.0f}s] {key}: cv {np.mean(cv[key]):.2f}", flush=True)
    keys = list(cv)
    best_i = int(np.argmax([np.mean(cv[k]) for k in keys]))
    chosen = grid[best_i]
    print(f"chosen by cross-validation on train: {keys[best_i]}", flush=True)

    held_out = {
        name: Split(xtr, s, groups, x, ls.score_matrix(train.models), np.array(ls.datasets)) for name, (ls, x) in evals.items()
    }
    measured = {key: {name: split.score(cfg) for name, split in held_out.items()} for key, cfg in zip(keys, grid)}

    # the default, fitted as `avengers fit` does, evaluated with `avengers eval`'s code (bootstrap intervals)
    artifact = fit_router_on_embeddings(
        train, xtr, emb.name, ClusteringConfig(k=chosen.k or 16), routing=chosen.routing(), selectors=chosen.selectors()
    )
    reports = {
        name: evaluate(artifact, ls, x, artifact.routing, bootstrap=args.bootstrap, seed=0) for name, (ls, x) in evals.items()
    }
    baseline = {name: evaluate(artifact, ls, x, RoutingConfig(strategy="nearest")) for name, (ls, x) in evals.items()}
    seeds: dict[str, list[float]] = {name: [] for name in evals}
    for seed in range(5):  # the default refitted with other k-means / selector seeds
        again = fit_router_on_embeddings(
            train, xtr, emb.name, ClusteringConfig(k=chosen.k or 16, seed=seed), routing=chosen.routing(),
            selectors=chosen.selectors().model_copy(update={"seed": seed}),
        )
        for name, (ls, x) in evals.items():
            seeds[name].append(evaluate(again, ls, x, again.routing).average.routed)

    names = list(evals)
    lines = [
        "| selector | K | distance | parameters | CV on train (mean ± sd of 5 folds) | "
        + " | ".join(names)
        + " |",
        "|---|---:|---|---|---:|" + "---:|" * len(names),
    ]
    order = sorted(range(len(keys)), key=lambda i: (grid[i].selector, grid[i].k or 0, grid[i].distance or "", -np.mean(cv[keys[i]])))
    for i in order:
        cfg, key = grid[i], keys[i]
        mark = "**" if i == best_i else ""
        lines.append(
            f"| {mark}{cfg.selector}{mark} | {cfg.k or '—'} | {cfg.distance or '—'} | {cfg.label} | "
            f"{mark}{np.mean(cv[key]):.2f} ± {np.std(cv[key]):.2f}{mark} | "
            + " | ".join(f"{measured[key][n]:.2f}" for n in names)
            + " |"
        )
    summary = [
        (
            f"Chosen by cross-validation on train: **{chosen.selector}** (K={chosen.k or '—'}, distance "
            f"{chosen.distance or '—'}, {chosen.label}); router {artifact.version}."
        ),
        "",
        "| file | routed (default) | 95% interval | best single (train) | routed − best single, 95% | best per dataset chosen on train | routed − it, 95% | best per dataset on the file (peeks) | oracle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in reports.items():
        a, iv = r.average, r.intervals
        summary.append(
            f"| {name} | {a.routed:.2f} | [{iv['routed'].low:.2f}, {iv['routed'].high:.2f}] | {a.best_single:.2f} | "
            f"[{iv['routed - best_single'].low:+.2f}, {iv['routed - best_single'].high:+.2f}] | {a.dataset_best_cal:.2f} | "
            f"[{iv['routed - dataset_best_cal'].low:+.2f}, {iv['routed - dataset_best_cal'].high:+.2f}] | "
            f"{a.dataset_best:.2f} | {a.oracle:.2f} |"
        )
    summary += [
        "",
        "Seeds 0–4 (k-means and selector seeds), default refitted: "
        + "; ".join(f"{n} {np.mean(v):.2f} ± {np.std(v):.2f}" for n, v in seeds.items()),
    ]
    per_dataset = []
    for name, r in reports.items():
        per_dataset += [f"#### {name}, per dataset (default router)", "", r.table(), ""]
    text = "\n".join(
        [*summary, "", *per_dataset, "#### Every configuration", "", *lines, "",
         f"(paper's nearest at K={chosen.k or 16} on the same fit: "
         + ", ".join(f"{n} {baseline[n].average.routed:.2f}" for n in names)
         + f"; study time {time.perf_counter() - t0:.0f} s)"]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selectors.md").write_text(text + "\n")
    (out / "selectors.json").write_text(
        json.dumps(
            {
                "chosen": keys[best_i],
                "cv": cv,
                "measured": measured,
                "reports": {n: r.to_dict() for n, r in reports.items()},
                "seeds": seeds,
            },
            indent=1,
        )
    )
    print(text)


if __name__ == "__main__":
    main()
