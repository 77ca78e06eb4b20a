"""Calibrate -> fit -> evaluate on one recording, with every choice made on the calibration split.

1. **Split** each dataset's queries into calibration and test (rows with a ``split`` keep theirs; the others
   by a seeded hash of their id, ``calibration_fraction`` of each dataset).
2. **Label** every calibration query: each model's share of right samples (the labels format), the router's
   training data; with ``prices`` (per million tokens, every model) also its ``costs``: the model's mean
   generated tokens over its samples x its price (:mod:`avengers.tools.costs`), so the router can route with
   ``alpha``. Test answers are graded only to score strategies, never to choose anything.
3. **Choose on calibration** by k-fold cross-validation inside the calibration split: for each router tried
   (each selector of ``selectors``; the cluster selectors with each K), the router is fitted (``core.fit``) on
   the other folds' labels and routes the held-out fold; every strategy is replayed there. The best single model is the single model with the best calibration accuracy; the best
   ensemble is the (router, strategy) with the best cross-validated accuracy.
4. **Fit** the chosen router on the whole calibration split, route the test queries, replay every
   strategy, and compare each with the best single model by a paired bootstrap.

Accuracy is the mean over datasets of each dataset's accuracy (each dataset weighs the same).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from avengers.config.clustering import ClusteringConfig
from avengers.config.evaluate import SelectionConfig
from avengers.config.routing import CLUSTER_SELECTORS, RoutingConfig, ScoringConfig
from avengers.core import ensemble
from avengers.core.artifact import RouterArtifact
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import LabeledQuery, LabelSet
from avengers.tools.costs import query_cost
from avengers.tools.end_to_end.bootstrap import macro_mean, paired_bootstrap
from avengers.tools.end_to_end.replay import (
    ROUTED,
    SINGLE,
    Replay,
    SpecResults,
    StrategySpec,
    build_specs,
    replay_many,
)
from avengers.tools.end_to_end.samples import Recording

log = logging.getLogger(__name__)

Ranking = tuple[ensemble.RankedModel, ...]


def _hash_order(seed: int, ids: Sequence[str]) -> list[int]:
    keys = [hashlib.sha256(f"{seed}|{i}".encode()).hexdigest() for i in ids]
    return sorted(range(len(ids)), key=lambda j: keys[j])


def assign_splits(recording: Recording, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of calibration queries (see the module docstring)."""
    calibration = np.zeros(len(recording), dtype=bool)
    free: dict[str, list[int]] = {}
    for i, query in enumerate(recording.queries):
        if query.split is not None:
            calibration[i] = query.split == "calibration"
        else:
            free.setdefault(query.dataset, []).append(i)
    for indices in free.values():
        order = _hash_order(seed, [recording.queries[i].id for i in indices])
        take = round(fraction * len(indices))
        if len(indices) >= 2:
            take = min(max(take, 1), len(indices) - 1)
        for rank in order[:take]:
            calibration[indices[rank]] = True
    return calibration


def assign_folds(recording: Recording, indices: Sequence[int], folds: int, seed: int) -> np.ndarray:
    """Fold of each index (stratified by dataset, seeded)."""
    out = np.zeros(len(indices), dtype=np.int64)
    by_dataset: dict[str, list[int]] = {}
    for j, index in enumerate(indices):
        by_dataset.setdefault(recording.queries[index].dataset, []).append(j)
    offset = 0
    for positions in by_dataset.values():
        order = _hash_order(seed + 1, [recording.queries[indices[j]].id for j in positions])
        for rank, k in enumerate(order):
            out[positions[k]] = (rank + offset) % folds
        offset += len(positions)
    return out


def dataset_groups(recording: Recording, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Positions in ``indices`` of each dataset's queries."""
    groups: dict[str, list[int]] = {}
    for j, index in enumerate(indices):
        groups.setdefault(recording.queries[index].dataset, []).append(j)
    return {d: np.array(g, dtype=np.int64) for d, g in groups.items()}


@dataclass(frozen=True)
class RouterChoice:
    """A router the command may pick: a selector and, for the cluster selectors, the number of clusters."""

    selector: str
    clusters: int = 1

    @property
    def label(self) -> str:
        return f"{self.selector} K={self.clusters}" if self.selector in CLUSTER_SELECTORS else self.selector


def cost_matrix(recording: Recording, indices: Sequence[int], prices: Mapping[str, float]) -> np.ndarray:
    """(len(indices), models) cost of each model on each query: its mean generated tokens over its samples (the
    samples its score is measured on; counts estimated from words where not recorded) x its price."""
    out = np.zeros((len(indices), len(recording.models)))
    for row, index in enumerate(indices):
        per_model = recording.samples[index]
        for col, model in enumerate(recording.models):
            out[row, col] = query_cost([s.token_count for s in per_model[model]], prices[model])
    return out


def calibration_labels(
    recording: Recording, indices: Sequence[int], scores: np.ndarray, costs: np.ndarray | None = None
) -> LabelSet:
    """The labels of the queries ``indices`` (rows of ``scores`` and ``costs`` in that order)."""
    models = recording.models
    rows = [
        LabeledQuery(
            q.id, q.dataset, "calibration", q.query, {m: float(v) for m, v in zip(models, scores[j])},
            costs=None if costs is None else {m: float(c) for m, c in zip(models, costs[j])},
        )
        for j, q in enumerate(recording.queries[i] for i in indices)
    ]
    return LabelSet(rows=rows, models=list(models), source="calibration split")


@dataclass
class RouterFit:
    """A router fitted with ``core.fit`` on calibration labels, and the ranking of every model per query."""

    artifact: RouterArtifact
    rankings: list[Ranking]
    labels: LabelSet
    """The labels it was fitted on."""


def fit_and_route(
    recording: Recording,
    scores: np.ndarray,
    embeddings: np.ndarray,
    fit_indices: Sequence[int],
    route_indices: Sequence[int],
    choice: RouterChoice,
    selection: SelectionConfig,
    embedder_name: str,
    costs: np.ndarray | None = None,
) -> RouterFit:
    """Fit on the labels of ``fit_indices`` (rows of ``scores`` and ``costs`` in that order) and rank every
    model for each query of ``route_indices``."""
    models = recording.models
    labels = calibration_labels(recording, fit_indices, scores, costs)
    routing = RoutingConfig(**{**selection.routing.to_dict(), "strategy": choice.selector, "top_n": len(models)})
    artifact = fit_router_on_embeddings(
        labels,
        embeddings[list(fit_indices)],
        embedder_name,
        ClusteringConfig(k=min(choice.clusters, len(labels)), seed=selection.seed),
        ScoringConfig(smoothing=selection.smoothing),
        routing,
    )
    router = artifact.router(routing)
    routes = router.route_batch(embeddings[list(route_indices)], top_n=len(models))
    rankings = [
        tuple(ensemble.RankedModel(models[m], float(s)) for m, s in zip(route.models, route.scores)) for route in routes
    ]
    return RouterFit(artifact, rankings, labels)


@dataclass
class StrategyScore:
    """A strategy on the test split."""

    spec: StrategySpec
    results: SpecResults
    accuracy: float
    per_dataset: dict[str, float]
    tokens_per_dataset: dict[str, int]
    calibration_accuracy: float | None = None
    """Routed: cross-validated accuracy at the chosen K; others: accuracy on the calibration split."""
    difference: float | None = None
    ci95: tuple[float, float] | None = None
    """95% paired bootstrap interval of accuracy minus the best single model's."""


@dataclass
class Evaluation:
    recording: Recording
    calibration: np.ndarray
    test_indices: np.ndarray
    specs: list[StrategySpec]
    scores: dict[str, StrategyScore]
    best_single: str
    best_ensemble: str
    choice: RouterChoice
    """The router chosen on calibration (with the best ensemble)."""
    cv_accuracy: dict[str, dict[str, float]]
    """Cross-validated calibration accuracy of every routed strategy per router tried (by label)."""
    calibration_accuracy: dict[str, float]
    """Calibration accuracy of the single-model baselines and the oracle."""
    router: RouterArtifact
    selection: SelectionConfig
    labels: LabelSet | None = None
    """The calibration labels the chosen router was fitted on (with ``costs`` when prices were given)."""
    prices: dict[str, float] | None = None
    """Price per million generated tokens of each model the costs were measured with; None: no costs."""
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)
    """Queries per dataset in each split."""
    test_by_router: dict[str, dict[str, float]] = field(default_factory=dict)
    """Test accuracy of every routed strategy with each router tried (for reading only: nothing is chosen by
    it)."""

    @property
    def clusters(self) -> int:
        return self.choice.clusters


def router_choices(selection: SelectionConfig, fit_size: int) -> list[RouterChoice]:
    """The routers tried: each cluster selector with every K that leaves enough queries per cluster, the
    other selectors once."""
    ks = [k for k in selection.clusters if k * selection.min_queries_per_cluster <= fit_size] or [1]
    choices = []
    for selector in selection.selectors:
        if selector in CLUSTER_SELECTORS:
            choices += [RouterChoice(selector, k) for k in ks]
        else:
            choices.append(RouterChoice(selector, 1))
    return choices


def evaluate_recording(
    recording: Recording,
    embeddings: np.ndarray,
    embedder_name: str,
    selection: SelectionConfig | None = None,
    *,
    n: int = 10,
    replay: Replay | None = None,
    progress: bool = False,
    status: Callable[[str], None] | None = None,
    test_every_k: bool = True,
    prices: Mapping[str, float] | None = None,
) -> Evaluation:
    """Split, choose on calibration, evaluate on test (the module docstring). ``prices``: per million generated
    tokens of every model, for the labels' costs (None: no costs)."""
    if prices is not None and (unpriced := [m for m in recording.models if m not in prices]):
        raise ValueError(f"no price for models {unpriced}")
    selection = selection or SelectionConfig()
    say = status or (lambda message: log.info("%s", message))
    replay = replay or Replay(recording)
    calibration = assign_splits(recording, selection.calibration_fraction, selection.seed)
    cal_indices = np.flatnonzero(calibration)
    test_indices = np.flatnonzero(~calibration)
    if len(cal_indices) < 2:
        raise ValueError(f"{recording.source}: {len(cal_indices)} calibration queries; at least 2 are needed")
    if len(test_indices) < 1:
        raise ValueError(f"{recording.source}: no test queries")
    specs = build_specs(recording.models, recording.samples_per_model(), n)
    say(f"grading {sum(1 for _ in recording.rows())} samples of {len(recording.models)} models")
    cal_scores = replay.score_matrix(cal_indices)
    cal_costs = None if prices is None else cost_matrix(recording, cal_indices, prices)

    cal_groups = list(dataset_groups(recording, cal_indices).values())
    fixed = replay_many(replay, [s for s in specs if s.kind != ROUTED], cal_indices)
    calibration_accuracy = {name: macro_mean(r.correct.astype(float), cal_groups) for name, r in fixed.items()}

    folds = assign_folds(recording, cal_indices, min(selection.folds, len(cal_indices)), selection.seed)
    fold_ids = sorted(set(folds.tolist()))
    smallest_fit = min(int((folds != f).sum()) for f in fold_ids) if len(fold_ids) > 1 else len(cal_indices)
    routed = [s for s in specs if s.kind == ROUTED]
    cv_accuracy: dict[str, dict[str, float]] = {}
    tried = router_choices(selection, smallest_fit)
    bar = tqdm(total=len(tried) * len(fold_ids), desc="choosing on calibration", unit="fold", disable=not progress)
    for choice in tried:
        correct = {s.name: np.zeros(len(cal_indices), dtype=bool) for s in routed}
        for fold in fold_ids:
            held = np.flatnonzero(folds == fold)
            train = np.flatnonzero(folds != fold) if len(fold_ids) > 1 else held
            fitted = fit_and_route(
                recording, cal_scores[train], embeddings, cal_indices[train], cal_indices[held], choice, selection,
                embedder_name, None if cal_costs is None else cal_costs[train],
            )
            results = replay_many(replay, routed, cal_indices[held], fitted.rankings)
            for name, result in results.items():
                correct[name][held] = result.correct
            bar.update()
        cv_accuracy[choice.label] = {name: macro_mean(c.astype(float), cal_groups) for name, c in correct.items()}
    bar.close()

    singles = [s for s in specs if s.kind == SINGLE and s.mode == "greedy"]
    best_single = max(singles, key=lambda s: (calibration_accuracy[s.name], -singles.index(s))).name
    order = {s.name: i for i, s in enumerate(routed)}
    cost = {s.name: s.n for s in routed}
    position = {c.label: i for i, c in enumerate(tried)}
    choice, best_ensemble = max(
        ((c, name) for c in tried for name in cv_accuracy[c.label]),
        key=lambda cn: (round(cv_accuracy[cn[0].label][cn[1]], 12), -cost[cn[1]], -position[cn[0].label], -order[cn[1]]),
    )
    say(
        f"chosen on calibration: best single {best_single} ({calibration_accuracy[best_single]:.4f}); "
        f"best ensemble {best_ensemble} with router {choice.label} "
        f"(cross-validated {cv_accuracy[choice.label][best_ensemble]:.4f})"
    )

    fitted = fit_and_route(
        recording, cal_scores, embeddings, cal_indices, test_indices, choice, selection, embedder_name, cal_costs
    )
    results = replay_many(replay, specs, test_indices, fitted.rankings)
    groups = dataset_groups(recording, test_indices)
    group_list = list(groups.values())
    base = results[best_single].correct.astype(float)
    scores: dict[str, StrategyScore] = {}
    for spec in specs:
        result = results[spec.name]
        correct = result.correct.astype(float)
        observed, low, high = paired_bootstrap(correct - base, group_list, selection.bootstrap, selection.seed)
        scores[spec.name] = StrategyScore(
            spec=spec,
            results=result,
            accuracy=macro_mean(correct, group_list),
            per_dataset={d: float(correct[g].mean()) for d, g in groups.items()},
            tokens_per_dataset={d: int(result.tokens[g].sum()) for d, g in groups.items()},
            calibration_accuracy=(
                cv_accuracy[choice.label].get(spec.name) if spec.kind == ROUTED else calibration_accuracy.get(spec.name)
            ),
            difference=observed,
            ci95=(low, high),
        )
    test_by_router = {choice.label: {name: scores[name].accuracy for name in cv_accuracy[choice.label]}}
    for other_choice in tried if test_every_k else []:
        if other_choice == choice:
            continue
        other = fit_and_route(
            recording, cal_scores, embeddings, cal_indices, test_indices, other_choice, selection, embedder_name,
            cal_costs,
        )
        routed_results = replay_many(replay, routed, test_indices, other.rankings)
        test_by_router[other_choice.label] = {
            name: macro_mean(r.correct.astype(float), group_list) for name, r in routed_results.items()
        }
    datasets: dict[str, dict[str, int]] = {}
    for i, query in enumerate(recording.queries):
        entry = datasets.setdefault(query.dataset, {"calibration": 0, "test": 0})
        entry["calibration" if calibration[i] else "test"] += 1
    return Evaluation(
        recording=recording,
        calibration=calibration,
        test_indices=test_indices,
        specs=specs,
        scores=scores,
        best_single=best_single,
        best_ensemble=best_ensemble,
        choice=choice,
        cv_accuracy=cv_accuracy,
        calibration_accuracy=calibration_accuracy,
        router=fitted.artifact,
        selection=selection,
        labels=fitted.labels,
        prices=None if prices is None else {m: float(prices[m]) for m in recording.models},
        datasets=datasets,
        test_by_router={c.label: test_by_router[c.label] for c in tried if c.label in test_by_router},
    )
