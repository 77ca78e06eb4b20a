"""Offline evaluation of a router on a labels file.

Per dataset (and their unweighted average) it reports, as mean score in percent:

- ``routed``: the router's top model on each query;
- ``best_single``: the one model that was best on the calibration data, averaged over its datasets
  (chosen on train, recorded in the artifact at fit time);
- ``dataset_best_cal``: each dataset's best model chosen on the calibration file (recorded at fit time),
  applied to this file — the honest per-dataset baseline (a dataset the calibration file lacks takes the
  best single model);
- ``dataset_best``: the best single model for that dataset, chosen on this file (an upper bound that
  peeks at the evaluation labels; the usual "best single model" baseline in the routing literature);
- ``oracle``: the best model for each query.

Bootstrap: 95% percentile intervals of the routed average and of its paired differences to both
single-model baselines, resampling rows within each dataset (``bootstrap`` resamples, ``seed``).
With costs in the labels, the mean cost per query of the routed choice; :func:`alpha_curve` traces
accuracy against cost over the cost weight alpha (Avengers-Pro, arXiv 2508.12631).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avengers.config.routing import RoutingConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.labels import LabelSet

DEFAULT_BOOTSTRAP = 1000


@dataclass
class DatasetResult:
    dataset: str
    rows: int
    routed: float
    best_single: float
    dataset_best: float
    dataset_best_model: str
    oracle: float
    dataset_best_cal: float = 0.0
    dataset_best_cal_model: str = ""


@dataclass
class Interval:
    """A 95% bootstrap percentile interval (points in percent)."""

    low: float
    high: float


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
    alpha: float = 0.0
    intervals: dict[str, Interval] = field(default_factory=dict)
    """"routed", "routed - best_single", "routed - dataset_best_cal": 95% bootstrap intervals of the average."""
    bootstrap: int = 0
    seed: int = 0
    mean_cost: float | None = None
    """Mean cost per query of the routed models (labels with costs only)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A Markdown table of the results."""
        head = (
            "| dataset | rows | routed | best single (train) | best per dataset (train) "
            "| best per dataset (this file) | oracle |"
        )
        lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
        for r in [*self.datasets, self.average]:
            name = f"**{r.dataset}**" if r is self.average else r.dataset
            lines.append(
                f"| {name} | {r.rows} | {r.routed:.2f} | {r.best_single:.2f} | {r.dataset_best_cal:.2f} "
                f"| {r.dataset_best:.2f} | {r.oracle:.2f} |"
            )
        return "\n".join(lines)

    def interval_lines(self) -> str:
        if not self.intervals:
            return ""
        parts = [f"{name}: [{iv.low:+.2f}, {iv.high:+.2f}]" if "-" in name else f"{name}: [{iv.low:.2f}, {iv.high:.2f}]"
                 for name, iv in self.intervals.items()]
        return f"95% bootstrap intervals of the average ({self.bootstrap} resamples, seed {self.seed}): " + "; ".join(parts)


def _baselines(artifact: RouterArtifact, labels: LabelSet) -> tuple[int, np.ndarray]:
    """Index of the best single model, and each row's calibration-chosen model of its dataset."""
    best_name = artifact.stats.get("best_single_model")
    best_single = (
        artifact.models.index(best_name)
        if best_name in artifact.models
        else int(np.argmax(artifact.cluster_scores.global_scores))
    )
    per_dataset = artifact.stats.get("dataset_best_models", {})
    chosen = {d: artifact.models.index(m) for d, m in per_dataset.items() if m in artifact.models}
    return best_single, np.array([chosen.get(d, best_single) for d in labels.datasets], dtype=np.int64)


def evaluate(
    artifact: RouterArtifact,
    labels: LabelSet,
    embeddings: np.ndarray,
    routing: RoutingConfig | None = None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> EvalReport:
    """Score the router's choices on ``labels`` (whose queries are embedded as ``embeddings``)."""
    routing = routing or artifact.routing
    missing = [m for m in artifact.models if m not in labels.models]
    if missing:
        raise ValueError(f"{labels.source}: does not score the router's models {missing}")
    scores = labels.score_matrix(artifact.models)
    chosen, _ = artifact.router(routing).choose(embeddings, routing)
    best_single, cal_choice = _baselines(artifact, labels)
    rows = np.arange(len(scores))
    datasets = np.array(labels.datasets)
    routed_scores = scores[rows, chosen]
    cal_scores = scores[rows, cal_choice]
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
                dataset_best_cal=100 * float(cal_scores[mask].mean()),
                dataset_best_cal_model=artifact.models[int(cal_choice[mask][0])],
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
        dataset_best_cal=float(np.mean([r.dataset_best_cal for r in results])),
    )
    intervals = {}
    if bootstrap > 0:
        groups = [np.flatnonzero(datasets == name) for name in labels.dataset_names]
        series = {
            "routed": routed_scores,
            "routed - best_single": routed_scores - scores[:, best_single],
            "routed - dataset_best_cal": routed_scores - cal_scores,
        }
        intervals = {name: bootstrap_interval(values, groups, bootstrap, seed) for name, values in series.items()}
    costs = labels.cost_matrix(artifact.models)
    share = np.bincount(chosen, minlength=len(artifact.models)) / len(chosen)
    return EvalReport(
        router_version=artifact.version,
        labels=labels.source,
        strategy=routing.strategy,
        best_single_model=artifact.models[best_single],
        datasets=results,
        average=average,
        routed_model_share={m: round(float(s), 4) for m, s in zip(artifact.models, share)},
        alpha=routing.alpha,
        intervals=intervals,
        bootstrap=bootstrap,
        seed=seed,
        mean_cost=None if costs is None else float(costs[rows, chosen].mean()),
    )


def bootstrap_interval(values: np.ndarray, groups: list[np.ndarray], resamples: int, seed: int) -> Interval:
    """95% percentile interval of the mean over groups of each group's mean, resampling within groups."""
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for idx in groups:
        draws = rng.integers(0, len(idx), size=(resamples, len(idx)))
        means += values[idx][draws].mean(axis=1)
    means *= 100 / len(groups)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(round(float(low), 3), round(float(high), 3))


@dataclass
class CurvePoint:
    alpha: float
    routed: float
    """Average over datasets of the routed score (%)."""
    mean_cost: float
    """Mean cost per query of the routed models."""
    routed_model_share: dict[str, float]


def alpha_curve(
    artifact: RouterArtifact, labels: LabelSet, embeddings: np.ndarray, alphas: list[float], routing: RoutingConfig | None = None
) -> list[CurvePoint]:
    """Accuracy and cost of the routed choice for each alpha (labels with costs; router fitted with costs)."""
    if labels.cost_matrix(artifact.models) is None:
        raise ValueError(f"{labels.source}: an accuracy-versus-cost curve needs 'costs' on every row")
    routing = routing or artifact.routing
    points = []
    for alpha in alphas:
        report = evaluate(artifact, labels, embeddings, routing.model_copy(update={"alpha": alpha}))
        assert report.mean_cost is not None
        points.append(CurvePoint(alpha, report.average.routed, report.mean_cost, report.routed_model_share))
    return points


def curve_table(points: list[CurvePoint]) -> str:
    lines = ["| alpha | routed avg (%) | mean cost per query |", "|---:|---:|---:|"]
    lines += [f"| {p.alpha:g} | {p.routed:.2f} | {p.mean_cost:.4g} |" for p in points]
    return "\n".join(lines)


def curve_plot(points: list[CurvePoint], path: Path, title: str = "Accuracy vs cost over alpha") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([p.mean_cost for p in points], [p.routed for p in points], "o-")
    for p in points:
        ax.annotate(f"α={p.alpha:g}", (p.mean_cost, p.routed), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean cost per query")
    ax.set_ylabel("average score over datasets (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
