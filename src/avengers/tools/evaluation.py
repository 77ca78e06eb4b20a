"""Offline evaluation of a router on a labels file.

Per dataset (and their unweighted average) it reports, as mean score in percent:

- ``routed``: the router's top model on each query;
- ``best_single``: the one model that was best on the calibration data, averaged over its datasets
  (chosen on train, recorded in the artifact at fit time);
- ``dataset_best``: the best single model for that dataset, chosen on this file (an upper bound that
  peeks at the evaluation labels; the usual "best single model" baseline in the routing literature);
- ``oracle``: the best model for each query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from avengers.config.routing import RoutingConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.labels import LabelSet


@dataclass
class DatasetResult:
    dataset: str
    rows: int
    routed: float
    best_single: float
    dataset_best: float
    dataset_best_model: str
    oracle: float


@dataclass
class EvalReport:
    router_version: str
    labels: str
    strategy: str
    best_single_model: str
    datasets: list[DatasetResult]
    average: DatasetResult
    routed_model_share: dict[str, float]
    """Share of queries routed to each model."""

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A Markdown table of the results."""
        head = "| dataset | rows | routed | best single (train) | best single (per dataset) | oracle |"
        lines = [head, "|---|---:|---:|---:|---:|---:|"]
        for r in [*self.datasets, self.average]:
            name = f"**{r.dataset}**" if r is self.average else r.dataset
            lines.append(
                f"| {name} | {r.rows} | {r.routed:.2f} | {r.best_single:.2f} | {r.dataset_best:.2f} | {r.oracle:.2f} |"
            )
        return "\n".join(lines)


def evaluate(
    artifact: RouterArtifact,
    labels: LabelSet,
    embeddings: np.ndarray,
    routing: RoutingConfig | None = None,
) -> EvalReport:
    """Score the router's choices on ``labels`` (whose queries are embedded as ``embeddings``)."""
    routing = routing or artifact.routing
    missing = [m for m in artifact.models if m not in labels.models]
    if missing:
        raise ValueError(f"{labels.source}: does not score the router's models {missing}")
    scores = labels.score_matrix(artifact.models)
    router = artifact.router(routing)
    chosen = np.array([r.models[0] for r in router.route_batch(embeddings, top_n=1)])
    best_name = artifact.stats.get("best_single_model")
    best_single = (
        artifact.models.index(best_name)
        if best_name in artifact.models
        else int(np.argmax(artifact.cluster_scores.global_scores))
    )
    datasets = np.array(labels.datasets)
    routed_scores = scores[np.arange(len(scores)), chosen]
    results = []
    for name in labels.dataset_names:
        mask = datasets == name
        per_model = scores[mask].mean(axis=0)
        results.append(
            DatasetResult(
                dataset=name,
                rows=int(mask.sum()),
                routed=100 * float(routed_scores[mask].mean()),
                best_single=100 * float(per_model[best_single]),
                dataset_best=100 * float(per_model.max()),
                dataset_best_model=artifact.models[int(per_model.argmax())],
                oracle=100 * float(scores[mask].max(axis=1).mean()),
            )
        )
    average = DatasetResult(
        dataset="average",
        rows=len(labels),
        routed=float(np.mean([r.routed for r in results])),
        best_single=float(np.mean([r.best_single for r in results])),
        dataset_best=float(np.mean([r.dataset_best for r in results])),
        dataset_best_model="",
        oracle=float(np.mean([r.oracle for r in results])),
    )
    share = np.bincount(chosen, minlength=len(artifact.models)) / len(chosen)
    return EvalReport(
        router_version=artifact.version,
        labels=labels.source,
        strategy=routing.strategy,
        best_single_model=artifact.models[best_single],
        datasets=results,
        average=average,
        routed_model_share={m: round(float(s), 4) for m, s in zip(artifact.models, share)},
    )
