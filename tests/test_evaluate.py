"""``avengers evaluate`` on recordings whose strategy results are known by construction (no real model).

Models answer by construction: "math" is right on math and wrong on multiple choice, "mc" the reverse; three
"voters" are each wrong on a different third of the queries (so their majority is always right and beats each
of them); under model switch the first model's split vote switches to the second model's unanimous answer.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from avengers.cli import main
from avengers.config.evaluate import SelectionConfig
from avengers.core.embedding import l2_normalize
from avengers.core.ensemble import RankedModel
from avengers.tools.end_to_end.bootstrap import paired_bootstrap
from avengers.tools.end_to_end.experiment import assign_splits, evaluate_recording
from avengers.tools.end_to_end.replay import ROUTED, SAMPLED, Replay, StrategySpec, build_specs
from avengers.tools.end_to_end.samples import (
    RecordedSample,
    SamplesError,
    read_recording,
    recording_of,
    write_samples,
)

FAST = SelectionConfig(clusters=[1, 2], folds=3, bootstrap=200, min_queries_per_cluster=2)


def math_row(i: int) -> tuple[str, str]:
    return f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?", str(2 * i + 3)


def mc_row(i: int) -> tuple[str, str]:
    return f"Which option names the colour number {i}?\nA. red\nB. blue\nC. green\nD. black", "ABCD"[i % 4]


def wrong_mc(gold: str) -> str:
    return "ABCD"[("ABCD".index(gold) + 1) % 4]


def answer_text(task_type: str, answer: str) -> str:
    return f"The answer is \\boxed{{{answer}}}." if task_type == "math" else f"Answer: {answer}"


def specialists(count: int = 24) -> tuple[list[RecordedSample], np.ndarray]:
    """Model "math" right on math only, "mc" right on multiple choice only; embeddings by construction."""
    rows, vectors = [], []
    rng = np.random.default_rng(0)
    for i in range(count):
        is_math = i % 2 == 0
        query, gold = math_row(i) if is_math else mc_row(i)
        task_type, dataset = ("math", "arith") if is_math else ("multiple_choice", "colours")
        wrong = str(int(gold) + 1) if is_math else wrong_mc(gold)
        for model in ("math", "mc"):
            right = (model == "math") == is_math
            text = answer_text(task_type, gold if right else wrong)
            rows.append(RecordedSample(f"q{i}", dataset, query, gold, task_type, model, text, tokens=7))
        vectors.append(np.eye(16)[0 if is_math else 1] + 0.05 * rng.normal(size=16))
    return rows, l2_normalize(np.array(vectors))


def test_routing_sends_each_query_to_its_specialist():
    rows, vectors = specialists()
    evaluation = evaluate_recording(recording_of(rows), vectors, "test-vectors", FAST, n=1)
    scores = evaluation.scores
    assert scores["single:math"].per_dataset == {"arith": 1.0, "colours": 0.0}
    assert scores["single:mc"].per_dataset == {"arith": 0.0, "colours": 1.0}
    assert scores["single:math"].accuracy == 0.5
    assert scores["self_consistency:n=1"].accuracy == 1.0  # routed top-1
    assert scores["oracle"].accuracy == 1.0
    assert evaluation.clusters == 2  # K=1 cannot tell the topics apart: chosen by cross-validation
    assert evaluation.best_ensemble == "self_consistency:n=1"
    best = scores[evaluation.best_ensemble]
    assert best.difference == pytest.approx(0.5) and best.ci95[0] > 0
    assert scores["single:math"].results.tokens.sum() == 7 * len(evaluation.test_indices)


def three_voters(count: int = 30) -> list[RecordedSample]:
    """Each voter is wrong on a different third (with its own wrong answer): the majority is always right."""
    rows = []
    for i in range(count):
        query, gold = mc_row(i)
        for v, model in enumerate(("v0", "v1", "v2")):
            answer = "ABCD"[("ABCD".index(gold) + 1 + v) % 4] if i % 3 == v else gold
            rows.append(RecordedSample(f"q{i}", "colours", query, gold, "multiple_choice", model, f"Answer: {answer}"))
    return rows


def test_a_top_k_vote_beats_every_single_model():
    rows = three_voters()
    vectors = l2_normalize(np.ones((30, 4)) + 0.01 * np.random.default_rng(1).normal(size=(30, 4)))
    evaluation = evaluate_recording(recording_of(rows), vectors, "test-vectors", FAST, n=1)
    scores = evaluation.scores
    assert max(scores[f"single:v{v}"].accuracy for v in range(3)) < 0.75
    assert scores["top_k_vote:k=3"].accuracy == 1.0
    assert scores["log_odds_vote:k=3"].accuracy == 1.0
    assert evaluation.best_ensemble.endswith("k=3")
    assert evaluation.recording.tokens_recorded is False  # no token counts: estimated from words
    assert scores["top_k_vote:k=3"].results.tokens.sum() == 2 * 3 * len(evaluation.test_indices)


def test_model_switch_votes_flip_when_the_first_model_disagrees_with_itself():
    query, gold = mc_row(1)  # gold "B"
    rows = [RecordedSample("q", "colours", query, gold, "multiple_choice", "first", f"Answer: {a}") for a in "CCBB"]
    rows += [RecordedSample("q", "colours", query, gold, "multiple_choice", "second", "Answer: B") for _ in range(4)]
    recording = recording_of(rows)
    replay = Replay(recording)
    ranked = [RankedModel("first", 0.9), RankedModel("second", 0.8)]
    top1 = StrategySpec("sc", ROUTED, "self_consistency", SAMPLED, n=4)
    assert replay.run(top1, 0, ranked).correct is False  # 2-2 tie: the earliest candidate, "C"
    switch = StrategySpec("ms", ROUTED, "model_switch", SAMPLED, n=8, switch_threshold=0.8)
    outcome = replay.run(switch, 0, ranked)
    assert outcome.correct is True and outcome.calls == 2 and outcome.tokens == 16
    lenient = StrategySpec("ms", ROUTED, "model_switch", SAMPLED, n=8, switch_threshold=0.5)
    assert replay.run(lenient, 0, ranked).correct is False  # agreement 0.5 >= 0.5: no switch


def test_specs_cover_every_family_and_sampled_modes():
    names = {s.name for s in build_specs(["a", "b", "c"], samples_per_model=5, n=10)}
    assert {"single:a", "self_consistency:n=1", "model_switch:n=2", "top_k_vote:k=2", "top_k_vote:k=3",
            "score_weighted_vote:k=3", "log_odds_vote:k=2", "oracle", "self_consistency:a:n=5",
            "self_consistency:n=5", "model_switch:n=5", "top_k_vote:k=3,n=5"} <= names
    assert not any(":n=5" in s.name for s in build_specs(["a", "b"], samples_per_model=1, n=10))


def test_splits_are_stratified_and_a_recorded_split_wins():
    rows, _ = specialists(20)
    rows = [r if r.id != "q0" else RecordedSample(**{**r.__dict__, "split": "test"}) for r in rows]
    recording = recording_of(rows)
    calibration = assign_splits(recording, 0.5, seed=3)
    assert not calibration[0]
    for dataset in ("arith", "colours"):
        mask = np.array([q.dataset == dataset for q in recording.queries])
        assert 4 <= calibration[mask].sum() <= 6
    assert (assign_splits(recording, 0.5, seed=3) == calibration).all()


def test_bootstrap_interval_holds_the_observed_difference():
    difference = np.array([1, 0, 0, 1, 0, -1, 1, 0] * 5, dtype=float)
    groups = [np.arange(0, 20), np.arange(20, 40)]
    observed, low, high = paired_bootstrap(difference, groups, 2000, seed=0)
    assert low < observed < high and observed == pytest.approx(0.25)
    assert paired_bootstrap(np.zeros(10), [np.arange(10)], 500) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------------------
# The recorded-samples format


def test_samples_round_trip_and_gzip(tmp_path: Path):
    rows, _ = specialists(6)
    path = write_samples(tmp_path / "samples.jsonl", rows)
    assert read_recording(tmp_path).models == ["math", "mc"]  # a directory means DIR/samples.jsonl
    packed = tmp_path / "s.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    recording = read_recording(packed)
    assert len(recording) == 6 and list(recording.rows()) == rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer": 3}, "field 'answer' must be a string"),
        ({"task_type": "poetry"}, "task_type 'poetry' is not one of"),
        ({"split": "train"}, "split must be one of"),
        ({"tokens": -1}, "tokens must be an integer >= 0"),
        ({"query": "another query"}, "has another query than on"),
        ({"model": ""}, "empty model"),
    ],
)
def test_a_bad_row_names_file_and_line(tmp_path: Path, change: dict, message: str):
    rows = [r.to_json() for r in specialists(4)[0]]
    rows[5] = {**rows[5], **change}
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SamplesError, match=rf"bad.jsonl:6: .*{message}"):
        read_recording(path)


def test_a_model_missing_on_a_query_is_named(tmp_path: Path):
    rows = [r for r in specialists(4)[0] if not (r.id == "q2" and r.model == "mc")]
    path = write_samples(tmp_path / "gap.jsonl", rows)
    with pytest.raises(SamplesError, match=r"gap.jsonl:5: id 'q2' has no sample of model\(s\) \['mc'\]"):
        read_recording(path)


# --------------------------------------------------------------------------------------------------------
# The command, end to end: a replay pool (recorded outputs, no model) and --from-samples


def tiny_benchmark(path: Path, count: int = 16) -> list[dict]:
    items = []
    for i in range(count):
        is_math = i % 2 == 0
        query, gold = math_row(i) if is_math else mc_row(i)
        items.append({"id": f"t{i}", "dataset": "arith" if is_math else "colours", "query": query, "answer": gold,
                      "task_type": "math" if is_math else "multiple_choice"})
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return items


def replay_pool(tmp_path: Path, items: list[dict]) -> Path:
    """Recorded outputs: "math" right on math, "mc" right on multiple choice."""
    outputs = tmp_path / "outputs.jsonl"
    with outputs.open("w") as fh:
        for item in items:
            gold, task_type = item["answer"], item["task_type"]
            wrong = str(int(gold) + 1) if task_type == "math" else wrong_mc(gold)
            for model in ("math", "mc"):
                right = (model == "math") == (task_type == "math")
                text = answer_text(task_type, gold if right else wrong)
                fh.write(json.dumps({"id": item["id"], "model": model, "samples": [text]}) + "\n")
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n"
        + "".join(f"  - name: {m}\n    backend: replay\n    replay:\n      outputs_path: {outputs}\n" for m in ("math", "mc"))
    )
    return pool


FAST_ARGS = ["--clusters", "1,2", "--folds", "3", "--bootstrap", "200", "--embedder-backend", "hashing", "--quiet"]


def test_cli_generates_records_and_votes_again_from_samples(tmp_path: Path, capsys):
    items = tiny_benchmark(tmp_path / "bench.jsonl")
    pool = replay_pool(tmp_path, items)
    out = tmp_path / "run"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    code = main(["evaluate", "--benchmark", str(tmp_path / "bench.jsonl"), "--pool", str(pool), "--out", str(out),
                 "--n", "2", *FAST_ARGS, *cache])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["strategies"]) >= {"single:math", "single:mc", "self_consistency:n=1", "oracle",
                                        "top_k_vote:k=2", "self_consistency:n=2", "model_switch:n=2"}
    for entry in report["strategies"].values():
        assert 0.0 <= entry["accuracy"] <= 1.0 and isinstance(entry["tokens"], int)
        assert set(entry["per_dataset"]) == {"arith", "colours"}
    assert report["strategies"]["single:math"]["per_dataset"]["arith"]["accuracy"] == 1.0
    assert report["strategies"]["single:mc"]["per_dataset"]["arith"]["accuracy"] == 0.0
    assert report["best_single"]["name"] in ("single:math", "single:mc")
    best = report["best_ensemble"]
    assert set(best) >= {"name", "accuracy", "ci95"} and best["ci95"][0] <= best["difference"] <= best["ci95"][1]
    assert report["strategies"]["self_consistency:n=1"]["engine_calls"] == report["datasets"]["arith"]["test"] * 2
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 16 * 2 * 3  # items x models x (1 greedy + n=2 sampled)
    assert sum(r.get("greedy", False) for r in rows) == 16 * 2
    assert not list(out.glob("*.partial*"))
    assert (out / "report.md").read_text().startswith("# avengers evaluate")
    assert (out / "report.png").stat().st_size > 0 and sorted(p.name for p in (out / "charts").iterdir()) == [
        "arith.png", "colours.png"]

    again = tmp_path / "again"
    assert main(["evaluate", "--from-samples", str(out), "--out", str(again), "--n", "2", *FAST_ARGS, *cache]) == 0
    revoted = json.loads((again / "report.json").read_text())
    assert {n: s["accuracy"] for n, s in revoted["strategies"].items()} == {
        n: s["accuracy"] for n, s in report["strategies"].items()}
    assert not (again / "samples.jsonl").exists()


def test_cli_bad_rows_stop_with_one_line_and_write_nothing(tmp_path: Path, capsys):
    bench = tmp_path / "bench.jsonl"
    tiny_benchmark(bench, 4)
    bench.write_text(bench.read_text() + '{"id": "x", "query": "q", "answer": "1", "task_type": "maths"}\n')
    out = tmp_path / "out"
    code = main(["evaluate", "--benchmark", str(bench), "--pool", str(tmp_path / "none.yaml"), "--out", str(out)])
    assert code == 2
    assert f"{bench}:5: task_type 'maths' is not one of" in capsys.readouterr().err
    assert not out.exists()

    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"id": "a"}\n')
    code = main(["evaluate", "--from-samples", str(samples), "--out", str(out), *FAST_ARGS])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"avengers evaluate: error: {samples}:1: missing field 'dataset'"
    assert not out.exists()


def test_cli_needs_one_source(tmp_path: Path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "o")]) == 2
    assert "--benchmark" in capsys.readouterr().err
    bench = tmp_path / "b.jsonl"
    tiny_benchmark(bench, 2)
    assert main(["evaluate", "--benchmark", str(bench), "--out", str(tmp_path / "o")]) == 2
    assert "exactly one of --pool" in capsys.readouterr().err


def test_code_is_graded_by_the_gold_tests_in_the_sandbox_never_voted_with_them():
    from avengers.sandbox import create_sandbox

    prompt = 'def add(a, b):\n    """Sum of a and b."""\n'
    tests = ("def check(candidate):\n    assert candidate(2, 3) == 5\n",)
    texts = {
        "whole": "```python\ndef add(a, b):\n    return a + b\n```",
        "completion": "    return a + b\n",  # HumanEval style: the body of the prompt's function
        "wrong": "```python\ndef add(a, b):\n    return a - b\n```",
    }
    rows = [RecordedSample("h0", "humaneval", prompt, "", "code", m, t, tests=tests, entry_point="add")
            for m, t in texts.items()]
    replay = Replay(recording_of(rows), sandbox=create_sandbox())
    assert [replay.text_correct(0, t) for t in texts.values()] == [True, True, False]
    single = StrategySpec("single:wrong", "single", model="wrong")
    assert replay.run(single, 0).correct is False
    ranked = [RankedModel("wrong", 0.9), RankedModel("whole", 0.5), RankedModel("completion", 0.4)]
    vote = StrategySpec("v", ROUTED, "top_k_vote", n=3, top_k=3)
    assert replay.run(vote, 0, ranked).correct is False  # three different programs: the best-ranked one wins


def test_cli_rejects_out_of_range_options_in_one_line(tmp_path: Path, capsys):
    assert main(["evaluate", "--from-samples", str(tmp_path), "--out", str(tmp_path / "o"), "--n", "0"]) == 2
    assert capsys.readouterr().err.strip() == "avengers evaluate: error: --n 0 is outside [1, 64]"


def test_free_text_votes_by_medoid_and_grades_by_normalised_text():
    from avengers.config.embedding import EmbeddingConfig
    from avengers.core.embedding import create_embedder

    embed = create_embedder(EmbeddingConfig(backend="hashing")).encode
    texts = {"a": "Paris  is the capital", "b": "Paris is the capital", "c": "Lyon is a city on the Rhone"}
    rows = [RecordedSample("f0", "geo", "Capital of France?", "Paris is the capital", "free_text", m, t)
            for m, t in texts.items()]
    replay = Replay(recording_of(rows), embed=embed)
    assert [replay.text_correct(0, t) for t in texts.values()] == [True, True, False]
    ranked = [RankedModel("c", 0.9), RankedModel("a", 0.5), RankedModel("b", 0.4)]
    assert replay.run(StrategySpec("v", ROUTED, "top_k_vote", n=3, top_k=3), 0, ranked).correct is True
    assert replay.run(StrategySpec("t", ROUTED, "self_consistency"), 0, ranked).correct is False
