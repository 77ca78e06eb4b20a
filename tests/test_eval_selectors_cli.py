"""`avengers fit/eval` with selectors, costs, bootstrap intervals, the alpha curve and pool pruning; the
evaluation's baselines computed by hand; labels with costs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avengers.cli import main
from avengers.core.labels import LabelsError, read_labels
from avengers.tools.evaluation import bootstrap_interval
from conftest import make_rows, write_jsonl

COMMON = ["--embedder-backend", "hashing", "--no-cache"]
PRICE = {"org/math-7b": 3.0, "org/geo-7b": 1.0, "org/code-7b": 0.5}


@pytest.fixture(scope="module")
def costed(tmp_path_factory):
    d = tmp_path_factory.mktemp("costed")
    for name, n, seed in (("train", 40, 1), ("test", 20, 2)):
        write_jsonl(d / f"{name}.jsonl", [{**r, "costs": PRICE} for r in make_rows(n, seed=seed, split=name)])
    return d


def test_fit_with_selectors_and_costs_then_eval_every_strategy(costed, tmp_path, capsys):
    router = tmp_path / "r"
    assert main(["fit", "--labels", str(costed / "train.jsonl"), "--k", "3", "--out", str(router),
                 "--selectors", "knn,logistic", "--knn-neighbours", "10", *COMMON]) == 0
    out = capsys.readouterr().out
    assert "selectors hknn, knn, logistic, nearest, soft (default hknn)" in out and "with costs" in out
    for strategy in ("nearest", "soft", "knn", "logistic"):
        assert main(["eval", "--router", str(router), "--labels", str(costed / "test.jsonl"), "--json",
                     "--strategy", strategy, "--bootstrap", "200", *COMMON]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["strategy"] == strategy and report["bootstrap"] == 200
        routed = report["intervals"]["routed"]
        assert routed["low"] <= report["average"]["routed"] <= routed["high"]
        assert report["mean_cost"] is not None
    assert main(["eval", "--router", str(router), "--labels", str(costed / "test.jsonl"), "--strategy", "mf",
                 *COMMON]) == 2
    assert "'mf' for this router" in capsys.readouterr().err


def test_alpha_curve_goes_from_accurate_to_cheap(costed, tmp_path, capsys):
    router = tmp_path / "r"
    assert main(["fit", "--labels", str(costed / "train.jsonl"), "--k", "3", "--out", str(router), "--selectors",
                 "none", *COMMON]) == 0
    capsys.readouterr()
    png = tmp_path / "curve.png"
    assert main(["eval", "--router", str(router), "--labels", str(costed / "test.jsonl"), "--alpha", "0,0.5,1",
                 "--plot", str(png), "--json", *COMMON]) == 0
    points = json.loads(capsys.readouterr().out)
    assert [p["alpha"] for p in points] == [0.0, 0.5, 1.0]
    assert points[-1]["mean_cost"] == pytest.approx(0.5)  # alpha 1: always the cheapest model
    assert points[-1]["routed_model_share"]["org/code-7b"] == 1.0
    assert points[0]["routed"] > points[-1]["routed"] and points[0]["mean_cost"] > points[-1]["mean_cost"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", "--router", str(router), "--labels", str(costed / "test.jsonl"), "--alpha", "0,2",
                 *COMMON]) == 2
    assert "--alpha values must be in [0, 1]" in capsys.readouterr().err


def test_eval_baselines_by_hand(labels_dir, tmp_path, capsys):
    router = tmp_path / "r"
    assert main(["fit", "--labels", str(labels_dir / "train.jsonl"), "--k", "3", "--out", str(router),
                 "--selectors", "none", *COMMON]) == 0
    capsys.readouterr()
    assert main(["eval", "--router", str(router), "--labels", str(labels_dir / "test.jsonl"), "--json", *COMMON]) == 0
    report = json.loads(capsys.readouterr().out)
    train, test = read_labels(labels_dir / "train.jsonl"), read_labels(labels_dir / "test.jsonl")
    s_train, s_test = train.score_matrix(), test.score_matrix()
    for row in report["datasets"]:
        d = row["dataset"]
        best_on_train = int(np.argmax(s_train[np.array(train.datasets) == d].mean(axis=0)))
        expected = 100 * s_test[np.array(test.datasets) == d][:, best_on_train].mean()
        assert row["dataset_best_cal_model"] == train.models[best_on_train]
        assert row["dataset_best_cal"] == pytest.approx(expected)
    assert set(report["intervals"]) == {"routed", "routed - best_single", "routed - dataset_best_cal"}


def test_fit_select_models_prints_what_pruning_costs(labels_dir, tmp_path, capsys):
    assert main(["fit", "--labels", str(labels_dir / "train.jsonl"), "--k", "3", "--out", str(tmp_path / "r"),
                 "--select-models", "2", "--selectors", "none", *COMMON]) == 0
    out = capsys.readouterr().out
    assert "pool pruned to 2 of 3 models" in out and "2 models" in out


def test_bootstrap_interval_of_a_constant_is_the_constant():
    values = np.ones(50)
    iv = bootstrap_interval(values, [np.arange(20), np.arange(20, 50)], 100, seed=0)
    assert iv.low == iv.high == 100.0


@pytest.mark.parametrize(
    ("costs", "message"),
    [
        ({"org/math-7b": 1.0}, "'costs' must name the scored models"),
        ({"org/math-7b": -1.0, "org/geo-7b": 1.0, "org/code-7b": 1.0}, "cost of 'org/math-7b' must be a finite"),
        ([1, 2, 3], "field 'costs' must be dict"),
    ],
)
def test_bad_costs_name_the_row(tmp_path, costs, message):
    rows = make_rows(1, seed=0, split="train")
    rows[1]["costs"] = costs
    with pytest.raises(LabelsError, match=message) as err:
        read_labels(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert "bad.jsonl:2" in str(err.value)


def test_fit_with_alpha_needs_costs(labels_dir, tmp_path, capsys):
    assert main(["fit", "--labels", str(labels_dir / "train.jsonl"), "--k", "3", "--out", str(tmp_path / "r"),
                 "--alpha", "0.3", *COMMON]) == 2
    assert "default alpha 0.3 needs 'costs' on every row" in capsys.readouterr().err
