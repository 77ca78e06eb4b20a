"""The report of ``avengers evaluate``: ``report.json``, ``report.md`` and PNG bar charts, written atomically.

``report.json``::

    {
      "strategies": {NAME: {"accuracy": float, "tokens": int, "per_dataset": {DATASET: {"accuracy", "tokens",
                     "queries"}}, "kind", "strategy", "params", "engine_calls", "generation_seconds",
                     "latency_seconds", "vote_seconds", "calibration_accuracy", "difference_to_best_single",
                     "ci95"}},
      "best_single": {"name", "accuracy", "calibration_accuracy"},
      "best_ensemble": {"name", "accuracy", "calibration_accuracy", "difference", "ci95": [low, high],
                        "strategy", "params", "router", "selector", "clusters"},
      "datasets": {DATASET: {"calibration": int, "test": int}}, "models": [...], "router": {...},
      "selection": {...}, "tokens_estimated": bool,
      "costs": {"measured": bool, "prices_per_million_tokens": {MODEL: float} | null, "labels": FILE}, ...
    }

``accuracy`` is the test accuracy averaged over datasets; ``tokens`` the generated tokens of the samples the
strategy used on the test split; ``ci95`` the paired bootstrap 95% interval of the accuracy minus the best
single model's. ``best_single`` and ``best_ensemble`` are chosen on the calibration split.

``calibration_labels.jsonl`` holds the labels the chosen router was fitted on (the labels format, ready for
``avengers fit``), with measured ``costs`` when every model had a price (:mod:`avengers.tools.costs`).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avengers.core.labels import write_labels
from avengers.tools.end_to_end.experiment import Evaluation, StrategyScore
from avengers.tools.end_to_end.replay import ORACLE, ROUTED, SINGLE
from avengers.tools.end_to_end.samples import write_atomically, write_bytes_atomically

REPORT_FORMAT = "avengers-evaluate"
REPORT_VERSION = 1
LABELS_FILE = "calibration_labels.jsonl"
"""The calibration labels the chosen router was fitted on, next to the report."""


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _seconds(values: np.ndarray) -> float | None:
    return None if np.isnan(values).any() else round(float(values.sum()), 3)


def strategy_entry(score: StrategyScore, groups: dict[str, int]) -> dict[str, Any]:
    result = score.results
    latency = None if np.isnan(result.latency).any() else round(float(result.latency.mean()), 4)
    return {
        "accuracy": _round(score.accuracy),
        "tokens": int(result.tokens.sum()),
        "per_dataset": {
            d: {"accuracy": _round(a), "tokens": score.tokens_per_dataset[d], "queries": groups[d]}
            for d, a in score.per_dataset.items()
        },
        "kind": score.spec.kind,
        "strategy": score.spec.strategy if score.spec.kind == ROUTED else None,
        "params": score.spec.params,
        "engine_calls": int(result.calls.sum()),
        "generation_seconds": _seconds(result.seconds),
        "latency_seconds": latency,
        "vote_seconds": round(result.vote_seconds, 3),
        "calibration_accuracy": _round(score.calibration_accuracy),
        "difference_to_best_single": _round(score.difference),
        "ci95": None if score.ci95 is None else [_round(score.ci95[0]), _round(score.ci95[1])],
    }


def report_json(evaluation: Evaluation, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    groups = {d: counts["test"] for d, counts in evaluation.datasets.items() if counts["test"]}
    scores = evaluation.scores
    single = scores[evaluation.best_single]
    best = scores[evaluation.best_ensemble]
    router = evaluation.router
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        **(extra or {}),
        "models": evaluation.recording.models,
        "datasets": evaluation.datasets,
        "tokens_estimated": not evaluation.recording.tokens_recorded,
        "costs": {
            "measured": evaluation.prices is not None,
            "prices_per_million_tokens": evaluation.prices,
            "labels": LABELS_FILE if evaluation.labels is not None else None,
        },
        "strategies": {name: strategy_entry(score, groups) for name, score in scores.items()},
        "best_single": {
            "name": evaluation.best_single,
            "model": single.spec.model,
            "accuracy": _round(single.accuracy),
            "calibration_accuracy": _round(single.calibration_accuracy),
        },
        "best_ensemble": {
            "name": evaluation.best_ensemble,
            "strategy": best.spec.strategy,
            "params": best.spec.params,
            "router": evaluation.choice.label,
            "selector": evaluation.choice.selector,
            "clusters": evaluation.clusters,
            "accuracy": _round(best.accuracy),
            "calibration_accuracy": _round(best.calibration_accuracy),
            "difference": _round(best.difference),
            "ci95": [_round(best.ci95[0]), _round(best.ci95[1])] if best.ci95 else None,
        },
        "router": {
            "version": router.version,
            "clusters": router.k,
            "embedder": router.embedder_model,
            "routing": router.routing.to_dict(),
            "smoothing": evaluation.selection.smoothing,
            "has_costs": router.costs is not None,
        },
        "selection": {
            "method": f"{evaluation.selection.folds}-fold cross-validation inside the calibration split",
            "calibration_fraction": evaluation.selection.calibration_fraction,
            "seed": evaluation.selection.seed,
            "bootstrap_resamples": evaluation.selection.bootstrap,
            "routers_tried": list(evaluation.cv_accuracy),
            "cv_accuracy": {
                str(k): {name: _round(v) for name, v in table.items()} for k, table in evaluation.cv_accuracy.items()
            },
            "test_accuracy_by_router": {
                label: {name: _round(v) for name, v in table.items()} for label, table in evaluation.test_by_router.items()
            },
        },
    }


def chosen_per_family(evaluation: Evaluation) -> list[str]:
    """The strategies a chart shows: every single model (greedy), each routed family's strategy with the best
    calibration accuracy, the oracle."""
    names: list[str] = []
    best: dict[str, str] = {}
    for spec in evaluation.specs:
        score = evaluation.scores[spec.name]
        if spec.kind == SINGLE and spec.mode == "greedy":
            names.append(spec.name)
        elif spec.kind == SINGLE or spec.kind == ROUTED:
            family = spec.family
            current = best.get(family)
            if current is None or (score.calibration_accuracy or 0) > (
                evaluation.scores[current].calibration_accuracy or 0
            ):
                best[family] = spec.name
    names += list(best.values())
    names += [s.name for s in evaluation.specs if s.kind == ORACLE]
    return names


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _verdict(score: StrategyScore) -> str:
    if score.ci95 is None:
        return ""
    low, high = score.ci95
    if low > 0:
        return "wins"
    if high < 0:
        return "loses"
    return "ties"


def report_markdown(evaluation: Evaluation, report: dict[str, Any], command: str = "") -> str:
    scores = evaluation.scores
    datasets = [d for d, c in evaluation.datasets.items() if c["test"]]
    best = report["best_ensemble"]
    single = report["best_single"]
    out = io.StringIO()
    out.write("# avengers evaluate\n\n")
    if command:
        out.write(f"Command: `{command}`\n\n")
    out.write(
        f"{len(evaluation.recording.models)} models, {len(evaluation.recording)} queries "
        f"({sum(c['calibration'] for c in evaluation.datasets.values())} calibration, "
        f"{sum(c['test'] for c in evaluation.datasets.values())} test) in {len(evaluation.datasets)} datasets. "
        "Accuracy = test accuracy averaged over datasets (%). Every choice (best single model, router K, best "
        f"ensemble strategy and its k) was made on the calibration split ({report['selection']['method']}).\n\n"
    )
    ci = best["ci95"] or [float("nan"), float("nan")]
    out.write(
        f"**Best single model** (chosen on calibration): `{single['name']}` — {_percent(single['accuracy'])}.  \n"
        f"**Best ensemble** (chosen on calibration): `{best['name']}` with router {best['router']} — "
        f"{_percent(best['accuracy'])}, difference {100 * (best['difference'] or 0):+.2f} points, "
        f"95% interval [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] "
        f"({_verdict(scores[evaluation.best_ensemble])}).\n\n"
    )
    if report.get("tokens_estimated"):
        out.write("Token counts were not recorded for every sample: they are estimated as whitespace-separated words.\n\n")
    if evaluation.prices is not None:
        prices = ", ".join(f"`{m}` {p:g}" for m, p in evaluation.prices.items())
        out.write(f"Calibration labels carry measured costs (mean generated tokens x price per million tokens: "
                  f"{prices}); the router can route with alpha.\n\n")
    else:
        out.write("No costs measured (no model has a price): the router routes on quality only.\n\n")
    out.write("| strategy | accuracy | vs best single (95% CI) | calibration | tokens | engine calls | " +
              " | ".join(datasets) + " |\n")
    out.write("|---|---:|---|---:|---:|---:|" + "---:|" * len(datasets) + "\n")
    for name, score in scores.items():
        entry = report["strategies"][name]
        diff = score.difference
        ci95 = score.ci95
        versus = (
            "–" if name == evaluation.best_single or diff is None or ci95 is None
            else f"{100 * diff:+.2f} [{100 * ci95[0]:+.2f}, {100 * ci95[1]:+.2f}] {_verdict(score)}"
        )
        marks = " (best single)" if name == evaluation.best_single else " (best ensemble)" if name == evaluation.best_ensemble else ""
        cells = " | ".join(_percent(score.per_dataset.get(d)) for d in datasets)
        out.write(
            f"| `{name}`{marks} | {_percent(score.accuracy)} | {versus} | {_percent(score.calibration_accuracy)} | "
            f"{entry['tokens']} | {entry['engine_calls']} | {cells} |\n"
        )
    out.write(routers_table(evaluation))
    return out.getvalue()


def routers_table(evaluation: Evaluation) -> str:
    """Per router tried and routed family: the member with the best cross-validated calibration accuracy, as
    "calibration / test" (the test value is for reading only: the router and k are chosen on calibration)."""
    families: dict[str, list[str]] = {}
    for spec in evaluation.specs:
        if spec.kind == ROUTED:
            families.setdefault(spec.family, []).append(spec.name)
    if not evaluation.cv_accuracy or not families:
        return ""
    lines = [
        "",
        ("Routers tried (rows) and each routed family's best member on calibration: cross-validated calibration "
         "accuracy / test accuracy (%). The router is chosen by the best calibration value of any family."),
        "",
        "| router | " + " | ".join(families) + " |",
        "|---:|" + "---|" * len(families),
    ]
    for label, table in evaluation.cv_accuracy.items():
        cells = []
        for members in families.values():
            best = max(members, key=lambda name: table.get(name, float("-inf")))
            test = evaluation.test_by_router.get(label, {}).get(best)
            cells.append(f"`{best.split(':', 1)[1]}` {_percent(table.get(best))} / {_percent(test)}")
        mark = " (chosen)" if label == evaluation.choice.label else ""
        lines.append(f"| {label}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(names: Sequence[str], values: Sequence[float], title: str, highlight: dict[str, str]) -> bytes:
    """A horizontal bar chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(2.5, 0.28 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    colours = [highlight.get(n, "#8da0cb") for n in names]
    y = np.arange(len(names))
    ax.barh(y, [100 * v for v in values], color=colours)
    ax.set_yticks(y, labels=list(names), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    for yi, v in zip(y, values):
        ax.text(100 * v + 0.3, yi, f"{100 * v:.1f}", va="center", fontsize=6)
    ax.set_xlim(0, min(100, max(100 * max(values, default=0) * 1.15, 1)))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _file_name(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset) or "dataset"


def write_report(
    evaluation: Evaluation, directory: str | Path, extra: dict[str, Any] | None = None, command: str = ""
) -> dict[str, Any]:
    """Write report.json, report.md, report.png (average) and charts/<dataset>.png; return the JSON report."""
    directory = Path(directory)
    report = report_json(evaluation, extra)
    names = chosen_per_family(evaluation)
    highlight = {evaluation.best_single: "#66c2a5", evaluation.best_ensemble: "#fc8d62"}
    charts = {
        directory / "report.png": (
            [evaluation.scores[n].accuracy for n in names], "average over datasets (test split)"
        )
    }
    for dataset in (d for d, c in evaluation.datasets.items() if c["test"]):
        charts[directory / "charts" / f"{_file_name(dataset)}.png"] = (
            [evaluation.scores[n].per_dataset[dataset] for n in names], f"{dataset} (test split)"
        )
    for path, (values, title) in charts.items():
        write_bytes_atomically(path, bar_chart(names, values, title, highlight))
    if evaluation.labels is not None:
        partial = directory / f".{LABELS_FILE}.tmp"
        write_labels(partial, evaluation.labels.rows)
        os.replace(partial, directory / LABELS_FILE)
    write_atomically(directory / "report.md", lambda fh: fh.write(report_markdown(evaluation, report, command)))
    write_atomically(directory / "report.json", lambda fh: fh.write(json.dumps(report, indent=2) + "\n"))
    return report
