"""Measured costs (Avengers-Pro, arXiv 2508.12631): prices in the pool config (reported by ListModels) or
``--price`` -> ``avengers calibrate`` / ``avengers evaluate`` write each model's mean generated tokens x its
price as the labels' ``costs`` -> ``avengers fit`` -> a route with alpha=1 picks the cheaper model.

The pool is the replay engine over recorded outputs the tests write: "big" is right on every task and
verbose, "small" is right on half of them and terse; a replay token is a whitespace-separated word.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avengers.cli import main
from avengers.config.embedding import EmbeddingConfig
from avengers.config.evaluate import SelectionConfig
from avengers.config.model_pool import ModelConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.embedding import create_embedder
from avengers.core.labels import read_labels
from avengers.tools.costs import PricesError, prices_for, query_cost
from avengers.tools.end_to_end.experiment import evaluate_recording
from avengers.tools.end_to_end.samples import RecordedSample, recording_of, write_samples

BIG = ["The answer is \\boxed{{{a}}}.", "So the final answer is \\boxed{{{a}}} here."]  # 4 and 7 words
SMALL = "Answer: {a}"  # 2 words
PRICES = {"big": 10.0, "small": 1.0}
HASHING = ["--embedder-backend", "hashing", "--no-cache"]
FAST = SelectionConfig(clusters=[1, 2], folds=3, bootstrap=200, min_queries_per_cluster=2)


def write_tasks(path: Path, count: int = 12) -> list[dict]:
    tasks = [
        {"id": f"t{i}", "dataset": "sums" if i % 2 else "products", "task_type": "math",
         "query": f"What is {i} + {i + 2}?" if i % 2 else f"What is {i} * 3?",
         "answer": str(2 * i + 2 if i % 2 else 3 * i)}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return tasks


def write_pool(tmp_path: Path, tasks: list[dict], prices: dict[str, float] | None = None) -> Path:
    """Replay pool: "big" right on every task (two recorded samples, 4 and 7 words), "small" right on the even
    tasks only (one sample, 2 words)."""
    outputs = tmp_path / "outputs.jsonl"
    with outputs.open("w") as fh:
        for i, task in enumerate(tasks):
            gold = task["answer"]
            fh.write(json.dumps({"id": task["id"], "model": "big", "samples": [s.format(a=gold) for s in BIG]}) + "\n")
            small = gold if i % 4 < 2 else str(int(gold) + 1)
            fh.write(json.dumps({"id": task["id"], "model": "small", "samples": [SMALL.format(a=small)]}) + "\n")
    pool = tmp_path / "pool.yaml"
    lines = ["models:"]
    for model in ("big", "small"):
        lines += [f"  - name: {model}", "    backend: replay", "    replay:", f"      outputs_path: {outputs}"]
        if prices and model in prices:
            lines.append(f"    price_per_million_tokens: {prices[model]}")
    pool.write_text("\n".join(lines) + "\n")
    return pool


def calibrate(tmp_path: Path, pool: Path, *extra: str) -> int:
    return main(["calibrate", "--pool", str(pool), "--tasks", str(tmp_path / "tasks.jsonl"), "--out",
                 str(tmp_path / "labels.jsonl"), "--samples", "2", *extra])


def test_cost_rule_and_price_checks():
    assert query_cost([4, 7], 10.0) == pytest.approx(5.5 * 10.0 / 1e6)
    assert query_cost([], 3.0) == 0.0
    assert prices_for(["a", "b"], {}) is None
    assert prices_for(["a", "b"], {"a": 1, "b": 2, "c": 3}) == {"a": 1.0, "b": 2.0}
    with pytest.raises(PricesError, match=r"models \['b'\] have no price"):
        prices_for(["a", "b"], {"a": 1.0})
    with pytest.raises(ValueError):
        ModelConfig(name="m", backend="llama_cpp", price_per_million_tokens=-1.0)


def test_priced_pool_calibrate_fit_then_alpha_one_routes_to_the_cheaper_model(tmp_path, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    pool = write_pool(tmp_path, tasks, PRICES)
    assert calibrate(tmp_path, pool) == 0
    captured = capsys.readouterr()
    assert "costs: mean generated tokens x price per million tokens (big 10, small 1)" in captured.err
    assert "mean cost per task (measured)" in captured.out
    labels = read_labels(tmp_path / "labels.jsonl")
    assert labels.has_costs
    for row in labels.rows:  # by hand: mean words of the two samples x price / 1e6
        assert row.costs == pytest.approx({"big": (4 + 7) / 2 * 10.0 / 1e6, "small": 2 * 1.0 / 1e6})
        assert row.scores["big"] == 1.0

    router_dir = tmp_path / "router"
    assert main(["fit", "--labels", str(tmp_path / "labels.jsonl"), "--k", "2", "--out", str(router_dir),
                 "--strategy", "nearest", "--selectors", "none", *HASHING]) == 0
    assert "with costs" in capsys.readouterr().out
    artifact = RouterArtifact.load(router_dir)
    assert artifact.costs is not None
    router = artifact.router()
    embed = create_embedder(EmbeddingConfig(backend="hashing")).encode
    vectors = embed([t["query"] for t in tasks])
    names = artifact.models
    assert {names[r.models[0]] for r in router.route_batch(vectors, alpha=0.0)} == {"big"}
    assert {names[r.models[0]] for r in router.route_batch(vectors, alpha=1.0)} == {"small"}


def test_prices_from_the_command_line_and_their_errors(tmp_path, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 4)
    unpriced = write_pool(tmp_path, tasks)
    assert calibrate(tmp_path, unpriced) == 0
    captured = capsys.readouterr()
    assert "costs: none (no model has a price" in captured.err and "no costs" in captured.out
    assert not read_labels(tmp_path / "labels.jsonl").has_costs  # as before prices existed

    assert calibrate(tmp_path, unpriced, "--price", "big=2", "--price", "small=0.5") == 0
    capsys.readouterr()
    row = read_labels(tmp_path / "labels.jsonl").rows[0]
    assert row.costs == pytest.approx({"big": 5.5 * 2 / 1e6, "small": 2 * 0.5 / 1e6})

    half = write_pool(tmp_path, tasks, {"big": 10.0})
    assert calibrate(tmp_path, half) == 2
    assert "models ['small'] have no price" in capsys.readouterr().err
    assert calibrate(tmp_path, half, "--price", "small=1") == 0  # --price completes the pool's prices
    capsys.readouterr()
    assert calibrate(tmp_path, half, "--price", "tiny=1") == 2
    assert "--price names models that are not measured: ['tiny']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        calibrate(tmp_path, half, "--price", "small=-1")
    assert "expected MODEL=PRICE" in capsys.readouterr().err


def recorded(tokens: bool = True) -> list[RecordedSample]:
    """Two topics; "big" right everywhere with 9-token samples, "small" right on the first topic with 3."""
    rows = []
    for i in range(24):
        dataset = "sums" if i % 2 else "products"
        query = f"What is {i} + {i + 2}?" if i % 2 else f"What is {i} * 3?"
        gold = str(i)
        for model, count, right in (("big", 9, True), ("small", 3, i % 2 == 0)):
            text = f"Answer: {gold if right else gold + '1'}" + " so" * (count - 2)
            rows.append(RecordedSample(f"q{i}", dataset, query, gold, "math", model, text,
                                       tokens=count if tokens else None))
    return rows


def test_evaluate_labels_carry_measured_costs_and_its_router_routes_with_alpha():
    samples = recorded()
    embed = create_embedder(EmbeddingConfig(backend="hashing")).encode
    vectors = embed([s.query for s in samples if s.model == "big"])
    evaluation = evaluate_recording(recording_of(samples), vectors, "hashing", FAST, n=1, prices=PRICES)
    labels = evaluation.labels
    assert labels is not None and labels.has_costs and len(labels) == int(evaluation.calibration.sum())
    for row in labels.rows:
        assert row.costs == pytest.approx({"big": 9 * 10.0 / 1e6, "small": 3 * 1.0 / 1e6})
    router = evaluation.router.router()
    picks = {evaluation.router.models[r.models[0]] for r in router.route_batch(vectors, alpha=1.0)}
    assert picks == {"small"}

    unpriced = evaluate_recording(recording_of(samples), vectors, "hashing", FAST, n=1)
    assert unpriced.labels is not None and not unpriced.labels.has_costs and unpriced.router.costs is None
    with pytest.raises(ValueError, match="no price for models"):
        evaluate_recording(recording_of(samples), vectors, "hashing", FAST, n=1, prices={"big": 1.0})


def test_evaluate_cli_writes_costed_labels_from_a_priced_pool_and_from_samples(tmp_path, capsys):
    tasks = write_tasks(tmp_path / "bench.jsonl", 16)
    pool = write_pool(tmp_path, tasks, PRICES)
    fast = ["--clusters", "1,2", "--folds", "3", "--bootstrap", "200", "--quiet", "--cache-dir",
            str(tmp_path / "cache"), "--embedder-backend", "hashing"]
    out = tmp_path / "run"
    assert main(["evaluate", "--benchmark", str(tmp_path / "bench.jsonl"), "--pool", str(pool), "--out", str(out),
                 "--n", "2", *fast]) == 0
    assert "calibration labels (with measured costs)" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["costs"] == {"measured": True, "prices_per_million_tokens": PRICES,
                               "labels": "calibration_labels.jsonl"}
    assert report["router"]["has_costs"] is True
    labels = read_labels(out / "calibration_labels.jsonl")
    assert labels.has_costs and len(labels) == sum(d["calibration"] for d in report["datasets"].values())
    for row in labels.rows:  # greedy + 2 sampled samples of the replay: words 4, 4, 7 for big; 2 for small
        assert row.costs == pytest.approx({"big": (4 + 4 + 7) / 3 * 10.0 / 1e6, "small": 2 * 1.0 / 1e6})
    assert "measured costs" in (out / "report.md").read_text()

    # recorded samples without token counts: counts estimated from words, prices from --price only
    write_samples(tmp_path / "words.jsonl", recorded(tokens=False))
    again = tmp_path / "again"
    assert main(["evaluate", "--from-samples", str(tmp_path / "words.jsonl"), "--out", str(again), "--n", "1",
                 "--price", "big=10", "--price", "small=1", *fast]) == 0
    capsys.readouterr()
    row = read_labels(again / "calibration_labels.jsonl").rows[0]
    assert row.costs == pytest.approx({"big": 9 * 10.0 / 1e6, "small": 3 * 1.0 / 1e6})

    plain = tmp_path / "plain"
    assert main(["evaluate", "--from-samples", str(tmp_path / "words.jsonl"), "--out", str(plain), "--n", "1",
                 *fast]) == 0
    assert "no costs (no prices)" in capsys.readouterr().out
    assert json.loads((plain / "report.json").read_text())["costs"]["measured"] is False
    assert not read_labels(plain / "calibration_labels.jsonl").has_costs
    assert "No costs measured" in (plain / "report.md").read_text()
    assert np.isfinite(json.loads((plain / "report.json").read_text())["best_single"]["accuracy"])
