"""The routed ensemble: route a query, sample the routed models, vote — with fallback and one deadline.

This is the recipe of the paper at request time, written against three small client interfaces
(:class:`RouterClient`, :class:`ModelPoolClient`, :class:`VoterClient`) so it runs the same over gRPC (the
Gateway service's adapters), in process, or against fakes in unit tests.

Strategies (registry :data:`STRATEGIES`: :func:`register_strategy`, factory: :func:`create_strategy`) — the one
definition that both Ask and ``avengers evaluate`` use:

- ``self_consistency``: the best routed model samples n times; majority (or weighted) vote.
- ``model_switch``: the top two models sample ceil(n/2) and floor(n/2) concurrently; the voter first votes
  over the first model's samples and, when that vote's agreement is below ``switch_threshold``, over all.
- ``top_k_vote``: the top-k routed models (k per request, ``EnsembleQuery.top_k``) share the n samples; one
  majority vote over all of them.
- ``score_weighted_vote``: the same, each sample weighted by its model's routing score.
- ``log_odds_vote``: the same, each sample weighted by the log-odds of its model's routed accuracy
  (Nitzan & Paroush 1982).

Fallback: a model whose generation fails with a status in :data:`FALLBACK_STATUSES` is recorded in
``failed_models`` and replaced by the next-ranked model of the route (the router is asked for every model);
other statuses (e.g. INVALID_ARGUMENT) are the request's fault and end the call. When no routed model can
answer, :class:`ModelsUnavailable` lists each model and why.

Deadline: every downstream call gets the time left of one :class:`Deadline` (capped by the per-call timeout
of its kind); once it runs out, :class:`DeadlineExceeded` ends the call instead of trying further models.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from avengers.config.voting import DEFAULT_SWITCH_THRESHOLD
from avengers.core.tasks import MULTIPLE_CHOICE, option_letters, task_messages
from avengers.registry import registry

log = logging.getLogger(__name__)

T = TypeVar("T")

FALLBACK_STATUSES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "NOT_FOUND", "UNKNOWN", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED",
     "ABORTED", "CANCELLED"}
)
"""gRPC status names of a failed generation after which the next-ranked model is tried."""


# ---------------------------------------------------------------------------------------------------------
# Errors and the deadline


class DependencyError(Exception):
    """A downstream call failed; ``status`` is its gRPC status name ("UNAVAILABLE", "DEADLINE_EXCEEDED", ...)."""

    def __init__(self, dependency: str, status: str, message: str):
        super().__init__(f"{dependency} failed ({status}): {message}")
        self.dependency = dependency
        self.status = status
        self.message = message


class DeadlineExceeded(TimeoutError):
    """The request's deadline ran out."""


class ModelsUnavailable(Exception):
    """Every routed model failed; ``failures`` maps each model to its error."""

    def __init__(self, failures: dict[str, str]):
        by_error: dict[str, list[str]] = {}
        for model, error in failures.items():
            by_error.setdefault(error, []).append(model)
        detail = "; ".join(f"{', '.join(models)}: {error}" for error, models in by_error.items())
        super().__init__(f"no routed model could answer ({detail or 'the route has no models'})")
        self.failures = failures


class Deadline:
    """An absolute point in time (monotonic clock) every downstream call of one request must finish by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._end = clock() + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self, what: str, cap: float | None = None) -> float:
        """Timeout for the next call (the time left, at most ``cap``); DeadlineExceeded when none is left."""
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded(f"deadline exceeded before {what}")
        return left if cap is None else min(left, cap)


# ---------------------------------------------------------------------------------------------------------
# Values exchanged with the clients


@dataclass(frozen=True)
class RankedModel:
    name: str
    score: float
    """Routing score (higher is better); the vote weight of its samples under weighted voting."""


@dataclass(frozen=True)
class RouteResult:
    cluster: int
    router_version: str
    models: tuple[RankedModel, ...]
    """Every routed model, best first (the fallback order)."""


@dataclass(frozen=True)
class Sampling:
    """Sampling of one ensemble call; ``n`` is the total over all models."""

    n: int
    temperature: float
    top_p: float | None = None
    """None: the model pool's default."""
    max_tokens: int = 0
    """0: the model pool's default."""
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Sample:
    model: str
    index: int
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 0
    prompt_tokens: int = 0
    """Prompt tokens of the model pool call that drew this sample, on the call's first sample only (0 on the
    others: the call's n samples share one prefill), so a sum over samples counts each prefill once."""


@dataclass(frozen=True)
class Candidate:
    text: str
    model: str
    weight: float | None = None
    """Vote weight (weighted voting only)."""


@dataclass(frozen=True)
class VoteOptions:
    method: str | None = None
    """"majority", "weighted", or None for the voter's default."""
    tests: tuple[str, ...] = ()
    entry_point: str = ""
    switch_threshold: float | None = None


@dataclass(frozen=True)
class VoteOutcome:
    answer: str
    text: str
    agreement: float
    switched: bool = False
    detail: Any = None
    """The transport's full vote (e.g. the gRPC VoteResponse), handed back to the caller untouched."""


@dataclass(frozen=True)
class EnsembleQuery:
    """One validated request with every default resolved."""

    query: str
    task_type: str
    sampling: Sampling
    strategy: str = "self_consistency"
    switch_threshold: float = DEFAULT_SWITCH_THRESHOLD
    routing: str | None = None
    """"nearest", "soft", or None for the router's default."""
    vote_method: str | None = None
    tests: tuple[str, ...] = ()
    entry_point: str = ""
    task_id: str = ""
    request_id: str = ""
    top_k: int = 0
    """Routed models that share the n samples (strategies top_k_vote, score_weighted_vote, log_odds_vote);
    0: the strategy's default."""
    alpha: float | None = None
    """Routing cost weight in [0, 1] (Avengers-Pro, arXiv 2508.12631); None: the router's default."""


@dataclass
class EnsembleAnswer:
    answer: str
    text: str
    models: list[str]
    """Models whose samples were voted on, best first."""
    cluster: int
    router_version: str
    vote: VoteOutcome
    task_type: str
    samples: list[Sample]
    failed_models: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    """Why each failed model failed."""

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every model pool call whose samples are in :attr:`samples`, once per call."""
        return sum(s.prompt_tokens for s in self.samples)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples)


# ---------------------------------------------------------------------------------------------------------
# Client interfaces


class RouterClient(ABC):
    @abstractmethod
    async def route(self, query: str, *, top_n: int, strategy: str | None, timeout: float) -> RouteResult:
        """Ranked models for ``query`` (top_n=0: all). Raises DependencyError."""


class ModelPoolClient(ABC):
    @abstractmethod
    async def generate(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        sampling: Sampling,
        *,
        task_id: str,
        request_id: str,
        timeout: float,
    ) -> list[Sample]:
        """``sampling.n`` samples of ``model`` for the chat ``messages`` (role, content); the first carries the
        call's prompt tokens (:attr:`Sample.prompt_tokens`). Raises DependencyError."""


class VoterClient(ABC):
    @abstractmethod
    async def vote(
        self, task_type: str, candidates: Sequence[Candidate], options: VoteOptions, *, timeout: float
    ) -> VoteOutcome:
        """Extract each candidate's answer and vote. Raises DependencyError."""


# ---------------------------------------------------------------------------------------------------------
# Strategies
#
# The ONE definition of every ensemble strategy: which routed models sample, how many samples each, which
# vote method and which weight each model's samples carry. The pipeline below serves them (Ask) and
# ``avengers evaluate`` replays them on recorded samples (:mod:`avengers.tools.end_to_end`), so what is
# measured is what is served.

STRATEGIES = registry("ensemble strategy", home="avengers.core.ensemble")
"""Ensemble strategies by name (the ``EnsembleStrategy`` proto enum names them in lower case)."""

LOG_ODDS_CLIP = 0.02
"""Accuracy estimates are clipped to [0.02, 0.98] before their log-odds (a model right or wrong on every
calibration query of its cluster would otherwise get an infinite weight)."""


class EnsembleStrategy(ABC):
    """Which routed models sample, how many samples each, how their votes are weighted, and whether the
    vote may switch models.

    ``top_k`` is the number of routed models that share the n samples (per request; 0 = the strategy's
    :attr:`default_top_k`). Strategies that ignore it fix their own number of models.
    """

    name: ClassVar[str]
    default_top_k: ClassVar[int] = 1
    """Models that sample when the request gives no ``top_k``."""

    def models(self, top_k: int = 0) -> int:
        """How many routed models sample."""
        return self.default_top_k

    @abstractmethod
    def allocation(self, n: int, top_k: int = 0) -> list[int]:
        """Samples per model, best model first (no zeros)."""

    def vote_method(self, query: EnsembleQuery) -> str | None:
        """"majority", "weighted", or None for the voter's default."""
        return query.vote_method

    def weight(self, model: RankedModel, query: EnsembleQuery) -> float:
        """Vote weight of each of ``model``'s samples when the vote is weighted (default: its routing score)."""
        return max(0.0, float(model.score))

    def switch_threshold(self, query: EnsembleQuery) -> float | None:
        """Agreement below which the vote goes over all models' samples; None: one vote over all."""
        return None


def register_strategy(name: str) -> Callable[[type[EnsembleStrategy]], type[EnsembleStrategy]]:
    """Class decorator: serve (and evaluate) a strategy under ``name``."""
    return STRATEGIES.register(name)


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def create_strategy(name: str) -> EnsembleStrategy:
    try:
        return STRATEGIES.create(name)
    except ValueError:
        raise ValueError(f"unknown ensemble strategy {name!r}; known: {strategy_names()}") from None


def split_evenly(n: int, parts: int) -> list[int]:
    """``n`` samples over ``parts`` models, the better models taking the remainder, at least one each."""
    parts = max(1, parts)
    return [max(1, n // parts + (1 if i < n % parts else 0)) for i in range(parts)]


@register_strategy("self_consistency")
class SelfConsistency(EnsembleStrategy):
    """The best routed model samples all n (self-consistency, arXiv 2203.11171); n=1 is routing alone."""

    def allocation(self, n: int, top_k: int = 0) -> list[int]:
        return [n]


@register_strategy("model_switch")
class ModelSwitch(EnsembleStrategy):
    """The top two models sample ceil(n/2) and floor(n/2); switch when the first model's agreement is low
    (the paper's model switch, arXiv 2505.19797)."""

    default_top_k = 2

    def allocation(self, n: int, top_k: int = 0) -> list[int]:
        return [count for count in (math.ceil(n / 2), n // 2) if count > 0]

    def switch_threshold(self, query: EnsembleQuery) -> float | None:
        return query.switch_threshold


@register_strategy("top_k_vote")
class TopKVote(EnsembleStrategy):
    """The top-k routed models share the n samples (split evenly, at least one each); one vote over all of
    them — majority unless the request asks for weighted. Uniting models: on recorded MMLU-Pro outputs of 14
    7–9B models this is where the recipe's gain over the best single model is (docs/BENCHMARKS.md)."""

    default_top_k = 3

    def models(self, top_k: int = 0) -> int:
        return top_k if top_k > 0 else self.default_top_k

    def allocation(self, n: int, top_k: int = 0) -> list[int]:
        return split_evenly(n, self.models(top_k))


@register_strategy("score_weighted_vote")
class ScoreWeightedVote(TopKVote):
    """Top-k vote in which each sample votes with its model's routing score (with nearest routing: the
    model's mean correctness on the query's cluster)."""

    def vote_method(self, query: EnsembleQuery) -> str | None:
        return "weighted"


@register_strategy("log_odds_vote")
class LogOddsVote(TopKVote):
    """Top-k vote in which each sample votes with the log-odds of its model being right.

    With independent voters of accuracies p_i, the weighted majority with weights log(p_i / (1 - p_i)) is the
    optimal decision rule for two alternatives (Nitzan & Paroush 1982, "Optimal decision rules in uncertain
    dichotomous choice situations", International Economic Review 23(2)); with A alternatives and errors spread
    evenly over the A - 1 wrong ones it becomes log((A - 1) p_i / (1 - p_i)) (Ben-Yashar & Paroush 2001,
    Social Choice and Welfare 18). p_i is the routing score (nearest routing: the model's mean correctness on
    the query's cluster), clipped to [LOG_ODDS_CLIP, 1 - LOG_ODDS_CLIP]; A is the number of options of a
    multiple-choice query, else 2. A model no better than chance (negative weight) gets no vote.
    """

    def vote_method(self, query: EnsembleQuery) -> str | None:
        return "weighted"

    def weight(self, model: RankedModel, query: EnsembleQuery) -> float:
        return log_odds_weight(model.score, answer_alternatives(query))


def answer_alternatives(query: EnsembleQuery) -> int:
    """Answers a query can have for the log-odds weight: its options (multiple choice), else 2."""
    if query.task_type == MULTIPLE_CHOICE:
        letters = set(option_letters(query.query))
        if len(letters) >= 2:
            return len(letters)
    return 2


def log_odds_weight(accuracy: float, alternatives: int = 2) -> float:
    """max(0, log((A - 1) p / (1 - p))) with p clipped to [LOG_ODDS_CLIP, 1 - LOG_ODDS_CLIP]."""
    p = min(1.0 - LOG_ODDS_CLIP, max(LOG_ODDS_CLIP, float(accuracy)))
    return max(0.0, math.log((max(2, alternatives) - 1) * p / (1.0 - p)))


def ballot(
    strategy: EnsembleStrategy, query: EnsembleQuery, drawn: Sequence[tuple[RankedModel, Sequence[Sample]]]
) -> tuple[list[Candidate], VoteOptions]:
    """The candidates and vote options of the samples ``drawn`` (best-ranked model first) under ``strategy``:
    what the pipeline sends to the voter and what ``avengers evaluate`` votes on."""
    method = strategy.vote_method(query)
    weighted = method == "weighted"
    candidates = [
        Candidate(text=s.text, model=s.model or model.name, weight=strategy.weight(model, query) if weighted else None)
        for model, samples in drawn
        for s in samples
    ]
    threshold = strategy.switch_threshold(query) if len(drawn) > 1 else None
    return candidates, VoteOptions(method, query.tests, query.entry_point, threshold)


# ---------------------------------------------------------------------------------------------------------
# The pipeline


async def gather_or_cancel(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def split_count(n: int, chunk: int) -> list[int]:
    """``n`` as consecutive chunks of at most ``chunk``."""
    return [min(chunk, n - start) for start in range(0, n, chunk)]


@dataclass(frozen=True)
class CallTimeouts:
    """Upper bounds of single downstream calls, in seconds (each also gets at most the time left)."""

    route: float | None = 10.0
    generate: float | None = 120.0
    """One model's generation; past it the call counts as failed and the next model is tried."""
    vote: float | None = 60.0


class EnsemblePipeline:
    """route -> sample (with fallback) -> vote, for one :class:`EnsembleQuery` at a time."""

    def __init__(
        self,
        router: RouterClient,
        pool: ModelPoolClient,
        voter: VoterClient,
        *,
        instructions: dict[str, str] | None = None,
        max_samples_per_call: int = 16,
        timeouts: CallTimeouts = CallTimeouts(),
    ):
        if max_samples_per_call < 1:
            raise ValueError("max_samples_per_call must be >= 1")
        self.router = router
        self.pool = pool
        self.voter = voter
        self.instructions = instructions
        self.max_samples_per_call = max_samples_per_call
        self.timeouts = timeouts

    async def run(self, query: EnsembleQuery, deadline: Deadline) -> EnsembleAnswer:
        return await self.answer(query, await self.route(query, deadline), deadline)

    async def route(self, query: EnsembleQuery, deadline: Deadline) -> RouteResult:
        """Every routed model for the query, best first."""
        cost = {} if query.alpha is None else {"alpha": query.alpha}  # routers without costs never see it
        route = await self.router.route(
            query.query, top_n=0, strategy=query.routing, timeout=deadline.timeout("routing", self.timeouts.route),
            **cost,
        )
        if not route.models:
            raise DependencyError("router", "FAILED_PRECONDITION", "the route has no models")
        return route

    async def answer(self, query: EnsembleQuery, route: RouteResult, deadline: Deadline) -> EnsembleAnswer:
        """Sample the routed models by the query's strategy and vote."""
        strategy = create_strategy(query.strategy)
        allocation = strategy.allocation(query.sampling.n, query.top_k)
        drawn, failures = await self._sample_models(query, route.models, allocation, deadline)
        if not drawn:
            raise ModelsUnavailable(failures)
        candidates, options = ballot(strategy, query, drawn)
        threshold = options.switch_threshold
        outcome = await self.voter.vote(
            query.task_type, candidates, options, timeout=deadline.timeout("voting", self.timeouts.vote)
        )
        voted = [m.name for m, _ in drawn]
        if threshold is not None and not outcome.switched:
            voted = voted[:1]
        return EnsembleAnswer(
            answer=outcome.answer,
            text=outcome.text,
            models=voted,
            cluster=route.cluster,
            router_version=route.router_version,
            vote=outcome,
            task_type=query.task_type,
            samples=[s for _, samples in drawn for s in samples],
            failed_models=list(failures),
            failures=failures,
        )

    async def _sample_models(
        self, query: EnsembleQuery, ranked: Sequence[RankedModel], allocation: list[int], deadline: Deadline
    ) -> tuple[list[tuple[RankedModel, list[Sample]]], dict[str, str]]:
        """Fill each slot of ``allocation`` with the next routed model that answers; best-ranked first."""
        pending = list(ranked)
        failures: dict[str, str] = {}
        messages = task_messages(query.query, query.task_type, self.instructions)

        async def fill(count: int) -> tuple[RankedModel, list[Sample]] | None:
            while pending:
                model = pending.pop(0)
                try:
                    return model, await self._generate(model.name, messages, count, query, deadline)
                except DependencyError as exc:
                    if exc.status not in FALLBACK_STATUSES:
                        raise
                    if deadline.expired:
                        raise DeadlineExceeded(f"deadline exceeded while {model.name} was generating") from exc
                    failures[model.name] = f"{exc.status} from {exc.dependency}: {exc.message}"
                    log.warning("model %s failed (%s), trying the next routed model", model.name, exc)
            return None

        filled = await gather_or_cancel([fill(count) for count in allocation])
        rank = {m.name: i for i, m in enumerate(ranked)}
        drawn = sorted((slot for slot in filled if slot is not None), key=lambda slot: rank[slot[0].name])
        return drawn, failures

    async def _generate(
        self, model: str, messages: list[tuple[str, str]], count: int, query: EnsembleQuery, deadline: Deadline
    ) -> list[Sample]:
        """``count`` samples of one model, in concurrent calls of at most ``max_samples_per_call``."""
        chunks = split_count(count, self.max_samples_per_call)
        offsets = [sum(chunks[:i]) for i in range(len(chunks))]
        timeout = deadline.timeout(f"generation by {model}", self.timeouts.generate)
        base = query.sampling

        def chunk_sampling(size: int, offset: int) -> Sampling:
            return replace(base, n=size, seed=None if base.seed is None else base.seed + offset)

        parts = await gather_or_cancel(
            [
                self.pool.generate(
                    model,
                    messages,
                    chunk_sampling(size, offset),
                    task_id=query.task_id,
                    request_id=query.request_id,
                    timeout=timeout,
                )
                for size, offset in zip(chunks, offsets)
            ]
        )
        samples = [s for part in parts for s in part]
        return [replace(s, model=model, index=i) for i, s in enumerate(samples)]
