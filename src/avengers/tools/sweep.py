"""Sweep the number of clusters K: fit on calibration data, evaluate on each evaluation file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avengers.config.clustering import ClusteringConfig
from avengers.config.routing import RoutingConfig, ScoringConfig, SelectorsConfig
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import LabelSet
from avengers.tools.evaluation import EvalReport, evaluate

CLUSTER_SELECTORS = ("nearest", "soft", "shrinkage")
"""Selectors that score from the router's clusters, so K changes their answers; kNN, hknn, logistic and MF
score from the embeddings alone and give the same result for every K."""


@dataclass
class SweepPoint:
    k: int
    reports: dict[str, EvalReport]
    """Evaluation name -> report."""


def sweep_k(
    train: LabelSet,
    train_embeddings: np.ndarray,
    evals: dict[str, tuple[LabelSet, np.ndarray]],
    ks: list[int],
    embedder_name: str,
    clustering: ClusteringConfig,
    scoring: ScoringConfig,
    routing: RoutingConfig,
    show_progress: bool = True,
    selectors: SelectorsConfig | None = None,
) -> list[SweepPoint]:
    """One fit per K (with ``selectors`` fitted too, when the routing strategy needs one)."""
    points = []
    for k in tqdm(ks, desc="sweep K", disable=not show_progress):
        artifact = fit_router_on_embeddings(
            train, train_embeddings, embedder_name, clustering.model_copy(update={"k": k}), scoring, routing,
            selectors=selectors,
        )
        points.append(SweepPoint(k, {name: evaluate(artifact, ls, emb, routing) for name, (ls, emb) in evals.items()}))
    return points


def sweep_table(points: list[SweepPoint]) -> str:
    names = list(points[0].reports)
    head = "| K | " + " | ".join(f"{n}: routed avg" for n in names) + " |"
    lines = [head, "|---:|" + "---:|" * len(names)]
    for p in points:
        lines.append(f"| {p.k} | " + " | ".join(f"{p.reports[n].average.routed:.2f}" for n in names) + " |")
    lines.append("")
    for n in names:
        ref = points[0].reports[n].average
        lines.append(
            f"{n}: best single (train) {ref.best_single:.2f}, best per dataset chosen on train "
            f"{ref.dataset_best_cal:.2f}, best per dataset on this file {ref.dataset_best:.2f}, oracle {ref.oracle:.2f}"
        )
    return "\n".join(lines)


def sweep_plot(points: list[SweepPoint], path: Path, title: str = "Routed accuracy vs K") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = [p.k for p in points]
    for i, name in enumerate(points[0].reports):
        color = f"C{i}"
        ax.plot(ks, [p.reports[name].average.routed for p in points], "o-", color=color, label=f"{name}: routed")
        ref = points[0].reports[name].average
        ax.axhline(ref.dataset_best, color=color, ls="--", lw=1, label=f"{name}: best single per dataset")
        ax.axhline(ref.dataset_best_cal, color=color, ls="-.", lw=1, label=f"{name}: best per dataset (train)")
        ax.axhline(ref.best_single, color=color, ls=":", lw=1, label=f"{name}: best single (train)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel("average score over datasets (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
