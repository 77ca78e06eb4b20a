"""The ensemble pipeline and task inference. Router and model pool are in-process fakes (fixed rankings and
answers); the voter is the real one, in process (core.voting) and, for the votes, also a real Voter gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import grpc
import pytest

from avengers.clients.ensemble import GrpcVoterClient
from avengers.config.embedding import EmbeddingConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.config.voting import VotingConfig
from avengers.core import voting
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
from avengers.services.voter.server import start_voter_server


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


class InProcessVoter(VoterClient):
    """The real voter in process: :mod:`avengers.core.voting` behind the VoterClient interface, called as the
    Voter service calls it (model switch when the options carry a threshold). Records what it was asked."""

    def __init__(self, config: VotingConfig | None = None):
        self.config = config or VotingConfig()
        self.calls: list[tuple[str, list[Candidate], VoteOptions]] = []

    async def vote(self, task_type: str, candidates: Sequence[Candidate], options: VoteOptions, *, timeout: float):
        self.calls.append((task_type, list(candidates), options))
        ballots = [voting.Candidate(c.text, c.model, 1.0 if c.weight is None else c.weight) for c in candidates]
        method = options.method or self.config.method
        if options.switch_threshold is None:
            result = voting.vote(task_type, ballots, method, config=self.config)
        else:
            result = voting.model_switch_vote(
                task_type, ballots, options.switch_threshold, method, config=self.config
            )
        return VoteOutcome(result.answer, result.text, result.agreement, result.switched, detail=result)


class RecordingGrpcVoter(GrpcVoterClient):
    """The gateway's gRPC client of a real Voter server; records what it was asked."""

    def __init__(self, channel: grpc.aio.Channel, address: str):
        super().__init__(channel, address)
        self.calls: list[tuple[str, list[Candidate], VoteOptions]] = []

    async def vote(self, task_type: str, candidates: Sequence[Candidate], options: VoteOptions, *, timeout: float):
        self.calls.append((task_type, list(candidates), options))
        return await super().vote(task_type, candidates, options, timeout=timeout)


@pytest.fixture(params=["in_process", "grpc"])
async def voter(request):
    """The real voter, in process and as a Voter gRPC server on a port the OS picked."""
    if request.param == "in_process":
        yield InProcessVoter()
        return
    server = await start_voter_server(VoterServiceConfig(embedding=EmbeddingConfig(backend="hashing")), "127.0.0.1:0")
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield RecordingGrpcVoter(channel, address)
    finally:
        await channel.close()
        await server.stop(0.5)


def query(**kw) -> EnsembleQuery:
    base = {"query": "What is 2 + 3?", "task_type": "math", "sampling": Sampling(n=10, temperature=0.7)}
    return EnsembleQuery(**{**base, **kw})


def pipeline(models, answers, fail=None, **kw):
    voter = kw.pop("voter", None) or InProcessVoter()
    router, pool = FakeRouter(models), FakePool(answers, fail, kw.pop("delay", 0.0))
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


async def test_model_switch_splits_samples_and_reports_switch(voter):
    p, _, pool, voter = pipeline(["a", "b"], {"a": "5", "b": "6"}, voter=voter)
    result = await p.run(query(strategy="model_switch", sampling=Sampling(n=10, temperature=0.7)), Deadline(10))
    assert sorted((c["model"], c["sampling"].n) for c in pool.calls) == [("a", 5), ("b", 5)]
    candidates, options = voter.calls[0][1], voter.calls[0][2]
    assert [c.model for c in candidates] == ["a"] * 5 + ["b"] * 5  # the first model's candidates first
    assert options.switch_threshold == 0.8
    # "a" agrees with itself (5 of 5): no switch, and "b"'s "6" is never counted
    assert result.answer == "5" and result.models == ["a"]
    assert not result.vote.switched and result.vote.agreement == 1.0


class ScriptedPool(FakePool):
    """Each model answers sample i with ``texts[model][i]``."""

    def __init__(self, texts: dict[str, list[str]]):
        super().__init__({model: "" for model in texts})
        self.texts = texts

    async def generate(self, model, messages, sampling, **kw):
        samples = await super().generate(model, messages, sampling, **kw)
        return [Sample(model, s.index, self.texts[model][s.index]) for s in samples]


def model_switch(pool: FakePool, voter: VoterClient, **kw) -> tuple[EnsemblePipeline, EnsembleQuery]:
    return EnsemblePipeline(FakeRouter(["a", "b"]), pool, voter), query(strategy="model_switch", **kw)


async def test_model_switch_votes_over_all_when_first_model_disagrees(voter):
    # "a": 3 of 5 say 5 (agreement 0.6 < 0.8), so the vote goes over all ten: 5 has 3 + 5 = 8 votes
    p, q = model_switch(ScriptedPool({"a": ["5", "5", "5", "7", "7"], "b": ["5"] * 5}), voter)
    result = await p.run(q, Deadline(10))
    assert result.vote.switched and result.models == ["a", "b"] and result.answer == "5"
    assert result.vote.agreement == pytest.approx(0.8)


async def test_model_switch_can_overturn_the_first_models_majority(voter):
    # "a": 3 of 5 say 7 (agreement 0.6); "b" says 5 five times, written differently (the voter's math extraction
    # groups "\\boxed{5.0}", "Answer: 5" and "5"): over all ten, 5 wins 7 to 3
    a = ["The answer is 7", "7", "It is 7.", "Answer: 5", "5"]
    b = ["So the answer is \\boxed{5.0}.", "5", "Answer: 5", "$5$", "5 apples"]
    p, q = model_switch(ScriptedPool({"a": a, "b": b}), voter)
    result = await p.run(q, Deadline(10))
    assert result.vote.switched and result.answer == "5" and result.vote.agreement == pytest.approx(0.7)


async def test_model_switch_keeps_the_first_model_at_the_threshold(voter):
    # "a": 4 of 5 say 7 (agreement 0.8 = the threshold): "a" is trusted although "b" says 5 five times
    p, q = model_switch(ScriptedPool({"a": ["7", "7", "7", "7", "5"], "b": ["5"] * 5}), voter)
    result = await p.run(q, Deadline(10))
    assert not result.vote.switched and result.answer == "7" and result.models == ["a"]
    assert result.vote.agreement == pytest.approx(0.8)


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
    p = EnsemblePipeline(router, FakePool({}), InProcessVoter())
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_deadline_expiring_during_generation_is_not_a_fallback():
    clock = FakeClock()

    class Slow(FakePool):
        async def generate(self, model, messages, sampling, *, timeout, **kw):
            self.calls.append(model)
            clock.now += timeout  # the call takes all the time it was given
            raise DependencyError("pool", "DEADLINE_EXCEEDED", "too slow")

    pool = Slow({})
    p = EnsemblePipeline(FakeRouter(["a", "b"]), pool, InProcessVoter())
    with pytest.raises(DeadlineExceeded):
        await p.run(query(), Deadline(0.05, clock=clock))
    assert pool.calls == ["a"]  # no time left for "b"


async def test_a_model_timing_out_within_the_deadline_falls_back():
    clock = FakeClock()

    class SlowFirst(FakePool):
        async def generate(self, model, messages, sampling, *, timeout, **kw):
            if model == "a":
                clock.now += 1.0  # "a" gives up after its own 1 s cap; 9 s of the deadline remain
                raise DependencyError("pool", "DEADLINE_EXCEEDED", "too slow")
            return await super().generate(model, messages, sampling, timeout=timeout, **kw)

    p = EnsemblePipeline(FakeRouter(["a", "b"]), SlowFirst({"b": "2"}), InProcessVoter())
    result = await p.run(query(), Deadline(10, clock=clock))
    assert result.answer == "2" and result.failed_models == ["a"]


async def test_large_n_is_split_into_calls_with_offset_seeds():
    p, _, pool, _ = pipeline(["a"], {"a": "1"}, max_samples_per_call=4)
    result = await p.run(query(sampling=Sampling(n=10, temperature=0.5, seed=100)), Deadline(10))
    assert sorted((c["sampling"].n, c["sampling"].seed) for c in pool.calls) == [(2, 108), (4, 100), (4, 104)]
    assert [s.index for s in result.samples] == list(range(10))


class PrefillingPool(FakePool):
    """As the model pool's client reports it: a call's prompt tokens (7) on its first sample only."""

    async def generate(self, *args, **kwargs) -> list[Sample]:
        samples = await super().generate(*args, **kwargs)
        return [replace(s, prompt_tokens=7 if i == 0 else 0, completion_tokens=2) for i, s in enumerate(samples)]


async def test_the_answer_counts_the_prompt_once_per_pool_call():
    pool = PrefillingPool({"a": "1", "b": "1"})
    p = EnsemblePipeline(FakeRouter(["a", "b"]), pool, InProcessVoter(), max_samples_per_call=4)
    result = await p.run(query(strategy="model_switch", sampling=Sampling(n=10, temperature=0.5)), Deadline(10))
    assert sorted((c["model"], c["sampling"].n) for c in pool.calls) == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    assert result.prompt_tokens == 4 * 7 and result.completion_tokens == 10 * 2  # four prefills, ten samples


async def test_weighted_vote_gets_routing_scores_as_weights(voter):
    p, _, _, voter = pipeline(["a", "b"], {"a": "1", "b": "1"}, voter=voter)
    await p.run(query(vote_method="weighted", strategy="model_switch"), Deadline(10))
    weights = {c.model: c.weight for c in voter.calls[0][1]}
    assert weights == {"a": 1.0, "b": pytest.approx(0.9)}


async def test_weighted_vote_breaks_a_tie_in_count_by_routing_score(voter):
    # Weights are the routing scores: "a" 1.0, "b" 0.9. Over all ten (threshold 1.0: "a" alone agrees 0.6):
    # "1" has 2 + 3 = 5 votes and "2" 3 + 2 = 5. By count it is a tie, which goes to the earliest candidate ("1");
    # by weight "2" wins: 3 * 1.0 + 2 * 0.9 = 4.8 against 2 * 1.0 + 3 * 0.9 = 4.7, agreement 4.8 / 9.5.
    pool = ScriptedPool({"a": ["1", "1", "2", "2", "2"], "b": ["1", "1", "1", "2", "2"]})
    p, q = model_switch(pool, voter, switch_threshold=1.0)
    majority = await p.run(q, Deadline(10))
    assert majority.vote.switched and majority.answer == "1" and majority.vote.agreement == pytest.approx(0.5)
    p, q = model_switch(pool, voter, switch_threshold=1.0, vote_method="weighted")
    weighted = await p.run(q, Deadline(10))
    assert weighted.vote.switched and weighted.answer == "2" and weighted.vote.agreement == pytest.approx(4.8 / 9.5)


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
