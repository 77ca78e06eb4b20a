"""The ensemble strategies of the registry (core.ensemble), served by the pipeline with the real in-process
voter: top-k vote with k per request, score-weighted and log-odds weighted votes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from avengers.core.ensemble import (
    Deadline,
    DependencyError,
    EnsemblePipeline,
    EnsembleQuery,
    LogOddsVote,
    ModelPoolClient,
    RankedModel,
    RouterClient,
    RouteResult,
    Sample,
    Sampling,
    ScoreWeightedVote,
    TopKVote,
    answer_alternatives,
    ballot,
    create_strategy,
    log_odds_weight,
    split_evenly,
    strategy_names,
)
from avengers.tools.end_to_end.voting import LocalVoter


class ScoredRouter(RouterClient):
    """Routes every query to fixed models with fixed scores (the router service is tested elsewhere)."""

    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    async def route(self, query: str, *, top_n: int, strategy: str | None, timeout: float) -> RouteResult:
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])
        return RouteResult(0, "r-test", tuple(RankedModel(m, s) for m, s in ranked))


class AnsweringPool(ModelPoolClient):
    """Model ``m`` always answers ``answers[m]``; models in ``fail`` are unavailable."""

    def __init__(self, answers: dict[str, str], fail: Sequence[str] = ()):
        self.answers = answers
        self.fail = set(fail)
        self.calls: list[tuple[str, int]] = []

    async def generate(self, model, messages, sampling, *, task_id, request_id, timeout) -> list[Sample]:
        self.calls.append((model, sampling.n))
        if model in self.fail:
            raise DependencyError(f"model pool ({model})", "UNAVAILABLE", "down")
        return [Sample(model=model, index=i, text=f"Answer: {self.answers[model]}") for i in range(sampling.n)]


MC_QUERY = "Which one?\nA. one\nB. two\nC. three\nD. four"


def mc_query(strategy: str, n: int, top_k: int = 0, **kw) -> EnsembleQuery:
    return EnsembleQuery(MC_QUERY, "multiple_choice", Sampling(n=n, temperature=0.7), strategy=strategy, top_k=top_k,
                         **kw)


def test_registry_lists_every_served_strategy():
    assert {"self_consistency", "model_switch", "top_k_vote", "score_weighted_vote", "log_odds_vote"} <= set(
        strategy_names()
    )
    with pytest.raises(ValueError, match="unknown ensemble strategy 'nope'"):
        create_strategy("nope")


def test_top_k_allocation_splits_n_over_k_models_at_least_one_each():
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 5) == [1, 1, 1, 1, 1]
    assert TopKVote().allocation(10, 2) == [5, 5]
    assert TopKVote().allocation(9) == [3, 3, 3]  # default k = 3
    assert TopKVote().models(0) == 3 and TopKVote().models(7) == 7


async def test_top_k_vote_beats_the_top_model_when_the_next_ones_agree():
    pool = AnsweringPool({"a": "A", "b": "B", "c": "B", "d": "C"})
    p = EnsemblePipeline(ScoredRouter({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}), pool, LocalVoter())
    top1 = await p.run(mc_query("self_consistency", 1), Deadline(10))
    assert top1.answer == "A"
    voted = await p.run(mc_query("top_k_vote", 3, top_k=3), Deadline(10))
    assert voted.answer == "B" and voted.models == ["a", "b", "c"]
    assert pool.calls[-3:] == [("a", 1), ("b", 1), ("c", 1)]


async def test_top_k_vote_replaces_a_failed_model_with_the_next_ranked():
    pool = AnsweringPool({"a": "A", "b": "B", "c": "B", "d": "B"}, fail=["a"])
    p = EnsemblePipeline(ScoredRouter({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}), pool, LocalVoter())
    result = await p.run(mc_query("top_k_vote", 6, top_k=2), Deadline(10))
    assert result.answer == "B" and result.models == ["b", "c"] and result.failed_models == ["a"]


async def test_log_odds_vote_lets_one_accurate_model_outvote_two_weak_ones():
    scores = {"a": 0.9, "b": 0.45, "c": 0.4}
    pool = AnsweringPool({"a": "A", "b": "B", "c": "B"})
    p = EnsemblePipeline(ScoredRouter(scores), pool, LocalVoter())
    majority = await p.run(mc_query("top_k_vote", 3, top_k=3), Deadline(10))
    assert majority.answer == "B"
    weighted = await p.run(mc_query("log_odds_vote", 3, top_k=3), Deadline(10))
    # log(3*0.9/0.1) = 3.30 > log(3*0.45/0.55) + log(3*0.4/0.6) = 0.90 + 0.69
    assert weighted.answer == "A"
    groups = {g.answer: g.weight for g in weighted.vote.detail.groups}
    assert groups["A"] == pytest.approx(math.log(27)) and groups["B"] == pytest.approx(math.log(3 * 0.45 / 0.55) + math.log(2))


async def test_score_weighted_vote_weights_samples_by_routing_score():
    pool = AnsweringPool({"a": "A", "b": "B", "c": "B"})
    p = EnsemblePipeline(ScoredRouter({"a": 0.9, "b": 0.4, "c": 0.4}), pool, LocalVoter())
    result = await p.run(mc_query("score_weighted_vote", 3, top_k=3), Deadline(10))
    assert result.answer == "A"  # 0.9 > 0.4 + 0.4
    pool = AnsweringPool({"a": "A", "b": "B", "c": "B"})
    p = EnsemblePipeline(ScoredRouter({"a": 0.7, "b": 0.4, "c": 0.4}), pool, LocalVoter())
    assert (await p.run(mc_query("score_weighted_vote", 3, top_k=3), Deadline(10))).answer == "B"


def test_log_odds_weight_and_alternatives():
    assert log_odds_weight(0.5, 2) == 0.0
    assert log_odds_weight(0.2, 2) == 0.0  # worse than chance: no vote
    assert log_odds_weight(0.2, 10) == pytest.approx(math.log(9 * 0.2 / 0.8))
    assert log_odds_weight(1.0, 2) == pytest.approx(math.log(0.98 / 0.02))  # clipped, finite
    assert answer_alternatives(mc_query("log_odds_vote", 1)) == 4
    math_query = EnsembleQuery("What is 2 + 3?", "math", Sampling(n=1, temperature=0.0))
    assert answer_alternatives(math_query) == 2


def test_ballot_is_what_the_voter_gets():
    drawn = [
        (RankedModel("a", 0.9), [Sample("a", 0, "Answer: A")]),
        (RankedModel("b", 0.4), [Sample("b", 0, "Answer: B"), Sample("b", 1, "Answer: B")]),
    ]
    candidates, options = ballot(ScoreWeightedVote(), mc_query("score_weighted_vote", 3), drawn)
    assert [(c.model, c.weight) for c in candidates] == [("a", 0.9), ("b", 0.4), ("b", 0.4)]
    assert options.method == "weighted" and options.switch_threshold is None
    candidates, options = ballot(create_strategy("model_switch"), mc_query("model_switch", 3), drawn)
    assert options.switch_threshold == 0.8 and all(c.weight is None for c in candidates)
    candidates, options = ballot(LogOddsVote(), mc_query("log_odds_vote", 3), drawn[:1])
    assert candidates[0].weight == pytest.approx(math.log(3 * 0.9 / 0.1))
