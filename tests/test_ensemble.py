"""The ensemble pipeline and task inference, against in-process fake clients (no gRPC)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from avengers.core.ensemble import (
    Candidate,
    Deadline,
    DeadlineExceeded,
    DependencyError,
    EnsemblePipeline,
    EnsembleQuery,
    ModelPoolClient,
    ModelsUnavailable,
    ModelSwitch,
    RankedModel,
    RouterClient,
    RouteResult,
    Sample,
    Sampling,
    SelfConsistency,
    VoteOptions,
    VoteOutcome,
    VoterClient,
    create_strategy,
    split_count,
)
from avengers.core.tasks import DEFAULT_INSTRUCTIONS, infer_task_type, option_letters, task_messages


class FakeRouter(RouterClient):
    def __init__(self, models: list[str], error: DependencyError | None = None):
        self.models = models
        self.error = error
        self.calls: list[dict] = []

    async def route(self, query: str, *, top_n: int, strategy: str | None, timeout: float) -> RouteResult:
        self.calls.append({"query": query, "top_n": top_n, "strategy": strategy, "timeout": timeout})
        if self.error:
            raise self.error
        ranked = tuple(RankedModel(m, 1.0 - 0.1 * i) for i, m in enumerate(self.models))
        return RouteResult(cluster=3, router_version="r-test", models=ranked)


class FakePool(ModelPoolClient):
    """Each model answers with fixed texts; models listed in ``fail`` raise with that status."""

    def __init__(self, answers: dict[str, str], fail: dict[str, str] | None = None, delay: float = 0.0):
        self.answers = answers
        self.fail = fail or {}
        self.delay = delay
        self.calls: list[dict] = []

    async def generate(self, model, messages, sampling, *, task_id, request_id, timeout) -> list[Sample]:
        self.calls.append({"model": model, "messages": list(messages), "sampling": sampling, "timeout": timeout,
                           "task_id": task_id})
        if self.delay:
            await asyncio.sleep(self.delay)
        if model in self.fail:
            raise DependencyError(f"model pool ({model})", self.fail[model], "engine exploded")
        return [Sample(model=model, index=i, text=self.answers[model]) for i in range(sampling.n)]


class FakeVoter(VoterClient):
    """Majority over candidate texts; with a switch threshold, the first model's vote first."""

    def __init__(self):
        self.calls: list[tuple[str, list[Candidate], VoteOptions]] = []

    async def vote(self, task_type: str, candidates: Sequence[Candidate], options: VoteOptions, *, timeout: float):
        self.calls.append((task_type, list(candidates), options))

        def majority(group: list[Candidate]) -> tuple[str, float]:
            answer, votes = Counter(c.text for c in group).most_common(1)[0]
            return answer, votes / len(group)

        if options.switch_threshold is not None:
            first = [c for c in candidates if c.model == candidates[0].model]
            answer, agreement = majority(first)
            if agreement >= options.switch_threshold:
                return VoteOutcome(answer, answer, agreement, switched=False)
            answer, agreement = majority(list(candidates))
            return VoteOutcome(answer, answer, agreement, switched=True)
        answer, agreement = majority(list(candidates))
        return VoteOutcome(answer, answer, agreement)


def query(**kw) -> EnsembleQuery:
    base = {"query": "What is 2 + 3?", "task_type": "math", "sampling": Sampling(n=10, temperature=0.7)}
    return EnsembleQuery(**{**base, **kw})


def pipeline(models, answers, fail=None, **kw):
    router, pool, voter = FakeRouter(models), FakePool(answers, fail, kw.pop("delay", 0.0)), FakeVoter()
    return EnsemblePipeline(router, pool, voter, **kw), router, pool, voter


async def test_self_consistency_samples_best_model_n_times():
    p, router, pool, _ = pipeline(["a", "b"], {"a": "5", "b": "6"})
    result = await p.run(query(), Deadline(10))
    assert result.answer == "5" and result.models == ["a"]
    assert [c["model"] for c in pool.calls] == ["a"] and pool.calls[0]["sampling"].n == 10
    assert router.calls[0]["top_n"] == 0  # every model, for fallback
    assert len(result.samples) == 10 and {s.model for s in result.samples} == {"a"}
    assert result.cluster == 3 and result.router_version == "r-test" and not result.failed_models
    # the task's instruction goes as the system message, the query unchanged as the user message
    assert pool.calls[0]["messages"] == [("system", DEFAULT_INSTRUCTIONS["math"]), ("user", "What is 2 + 3?")]


async def test_model_switch_splits_samples_and_reports_switch():
    p, _, pool, voter = pipeline(["a", "b"], {"a": "5", "b": "6"})
    result = await p.run(query(strategy="model_switch", sampling=Sampling(n=10, temperature=0.7)), Deadline(10))
    assert sorted((c["model"], c["sampling"].n) for c in pool.calls) == [("a", 5), ("b", 5)]
    candidates, options = voter.calls[0][1], voter.calls[0][2]
    assert [c.model for c in candidates] == ["a"] * 5 + ["b"] * 5  # the first model's candidates first
    assert options.switch_threshold == 0.8
    assert result.models == ["a"] and not result.vote.switched  # "a" agrees with itself: no switch


async def test_model_switch_votes_over_all_when_first_model_disagrees():
    class Split(FakePool):
        async def generate(self, model, messages, sampling, **kw):
            samples = await super().generate(model, messages, sampling, **kw)
            if model == "a":  # 3 of 5 say "5": agreement 0.6 < 0.8
                return [Sample(model, s.index, "5" if s.index < 3 else "7") for s in samples]
            return samples

    voter = FakeVoter()
    p = EnsemblePipeline(FakeRouter(["a", "b"]), Split({"a": "5", "b": "5"}), voter)
    result = await p.run(query(strategy="model_switch", sampling=Sampling(n=10, temperature=0.7)), Deadline(10))
    assert result.vote.switched and result.models == ["a", "b"] and result.answer == "5"


async def test_fallback_to_next_ranked_model():
    p, *_ = pipeline(["a", "b", "c"], {"a": "1", "b": "2", "c": "3"}, fail={"a": "UNAVAILABLE"})
    result = await p.run(query(), Deadline(10))
    assert result.answer == "2" and result.models == ["b"] and result.failed_models == ["a"]
    assert "UNAVAILABLE" in result.failures["a"]


async def test_model_switch_fallback_keeps_two_models():
    p, _, _, _ = pipeline(["a", "b", "c"], {"a": "1", "b": "2", "c": "2"}, fail={"b": "INTERNAL"})
    result = await p.run(query(strategy="model_switch", switch_threshold=1.0), Deadline(10))
    assert result.failed_models == ["b"]
    assert {s.model for s in result.samples} == {"a", "c"}


@pytest.mark.parametrize("status", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "NOT_FOUND"])
async def test_all_models_failing_lists_them(status):
    p, *_ = pipeline(["a", "b"], {"a": "1", "b": "2"}, fail={"a": status, "b": "UNAVAILABLE"})
    with pytest.raises(ModelsUnavailable) as info:
        await p.run(query(), Deadline(10))
    assert "a:" in str(info.value) and "b:" in str(info.value) and set(info.value.failures) == {"a", "b"}


def test_models_unavailable_says_a_shared_error_once():
    error = ModelsUnavailable({"a": "UNAVAILABLE from pool: down", "b": "UNAVAILABLE from pool: down", "c": "NOT_FOUND"})
    assert str(error) == "no routed model could answer (a, b: UNAVAILABLE from pool: down; c: NOT_FOUND)"


async def test_invalid_argument_from_pool_is_not_retried_on_other_models():
    p, _, pool, _ = pipeline(["a", "b"], {"a": "1", "b": "2"}, fail={"a": "INVALID_ARGUMENT"})
    with pytest.raises(DependencyError) as info:
        await p.run(query(), Deadline(10))
    assert info.value.status == "INVALID_ARGUMENT" and [c["model"] for c in pool.calls] == ["a"]


async def test_router_failure_names_the_router():
    router = FakeRouter([], DependencyError("router at x", "UNAVAILABLE", "connection refused"))
    p = EnsemblePipeline(router, FakePool({}), FakeVoter())
    with pytest.raises(DependencyError, match="router at x"):
        await p.run(query(), Deadline(10))


async def test_empty_route_is_a_failed_precondition():
    p, *_ = pipeline([], {})
    with pytest.raises(DependencyError) as info:
        await p.run(query(), Deadline(10))
    assert info.value.status == "FAILED_PRECONDITION"


async def test_deadline_is_propagated_and_enforced():
    p, router, pool, _ = pipeline(["a"], {"a": "1"})
    await p.run(query(), Deadline(5))
    assert 0 < router.calls[0]["timeout"] <= 5 and 0 < pool.calls[0]["timeout"] <= 5
    with pytest.raises(DeadlineExceeded):
        await p.run(query(), Deadline(0))


async def test_deadline_expiring_during_generation_is_not_a_fallback():
    class Slow(FakePool):
        async def generate(self, model, messages, sampling, *, timeout, **kw):
            await asyncio.sleep(timeout)
            raise DependencyError("pool", "DEADLINE_EXCEEDED", "too slow")

    p = EnsemblePipeline(FakeRouter(["a", "b"]), Slow({}), FakeVoter())
    with pytest.raises(DeadlineExceeded):
        await p.run(query(), Deadline(0.05))


async def test_large_n_is_split_into_calls_with_offset_seeds():
    p, _, pool, _ = pipeline(["a"], {"a": "1"}, max_samples_per_call=4)
    result = await p.run(query(sampling=Sampling(n=10, temperature=0.5, seed=100)), Deadline(10))
    assert sorted((c["sampling"].n, c["sampling"].seed) for c in pool.calls) == [(2, 108), (4, 100), (4, 104)]
    assert [s.index for s in result.samples] == list(range(10))


async def test_weighted_vote_gets_routing_scores_as_weights():
    p, _, _, voter = pipeline(["a", "b"], {"a": "1", "b": "1"})
    await p.run(query(vote_method="weighted", strategy="model_switch"), Deadline(10))
    weights = {c.model: c.weight for c in voter.calls[0][1]}
    assert weights == {"a": 1.0, "b": pytest.approx(0.9)}


def test_strategies_and_allocation():
    assert SelfConsistency().allocation(10) == [10]
    assert ModelSwitch().allocation(10) == [5, 5] and ModelSwitch().allocation(5) == [3, 2]
    assert ModelSwitch().allocation(1) == [1]
    assert split_count(10, 4) == [4, 4, 2]
    with pytest.raises(ValueError, match="unknown ensemble strategy"):
        create_strategy("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Which planet is red?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn", "multiple_choice"),
        ("Pick one:\n(A) yes\n(B) no", "multiple_choice"),
        ("What is 17 + 25?", "math"),
        ("Solve for x: 2x + 3 = 7.", "math"),
        ("Compute $\\frac{1}{2} + \\frac{1}{3}$.", "math"),
        ("How many legs do 3 spiders have?", "math"),
        ("A garden measures 12 m by 30 m. Find its area in square metres.", "math"),
        ("def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n", "code"),
        ("Write a Python function that reverses a list.", "code"),
        ("Fix this:\n```python\nprint(1\n```", "code"),
        ("Tell me about the history of Rome.", "free_text"),
        ("Who wrote Hamlet?", "free_text"),
    ],
)
def test_task_type_inference(text, expected):
    assert infer_task_type(text) == expected


def test_task_type_inference_with_tests_is_code():
    assert infer_task_type("Anything at all", tests=["assert f(1) == 2"]) == "code"
    assert infer_task_type("Anything at all", entry_point="f") == "code"
    assert option_letters("A. x\nB. y\nnot C. an option") == ["A", "B"]


def test_task_messages():
    assert task_messages("Hi there", "free_text") == [("user", "Hi there")]
    assert task_messages("2+2?", "math", {"math": "Be brief."}) == [("system", "Be brief."), ("user", "2+2?")]
    with pytest.raises(ValueError, match="unknown task type"):
        task_messages("x", "poetry")
