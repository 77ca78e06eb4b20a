"""Replaying strategies on a recording: grade every sample, route with the real router, vote with the real voter.

A :class:`StrategySpec` is one measured strategy: a served strategy of the registry in
:mod:`avengers.core.ensemble` with its parameters (n, top_k, switch threshold), or a baseline (one fixed model;
the oracle). :class:`Replay` runs a spec on one recorded query: the strategy's allocation over the query's
routed ranking picks recorded samples (``greedy`` mode: each model's one-sample baseline, its greedy sample
where recorded; ``sampled`` mode: its first sampled samples), :func:`avengers.core.ensemble.ballot` turns them
into the voter's candidates and :func:`avengers.tools.end_to_end.voting.cast_vote` votes — exactly what a
served Ask does with samples it generated.

Grading: math, multiple choice and free text compare the winning normalised answer with the gold answer
normalised by the same extractor; code runs the gold tests in the sandbox on the winning candidate (votes on
code group candidates by program text: the gold tests never take part in the vote).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avengers.config.tasks import CODE
from avengers.config.voting import DEFAULT_SWITCH_THRESHOLD, VotingConfig
from avengers.core import ensemble
from avengers.core.answers import create_extractor
from avengers.core.answers.code import parses
from avengers.core.execution import CodeRunner
from avengers.core.voting import Judge, JudgeOptions, create_judge
from avengers.tools.end_to_end.samples import RecordedQuery, RecordedSample, Recording
from avengers.tools.end_to_end.voting import MemoJudge, cast_vote

SINGLE, ROUTED, ORACLE = "single", "routed", "oracle"
GREEDY, SAMPLED = "greedy", "sampled"


@dataclass(frozen=True)
class StrategySpec:
    """One measured strategy."""

    name: str
    """Report name, e.g. ``top_k_vote:k=3`` or ``single:model-a``."""
    kind: str
    """"single" (one fixed model), "routed" (a served strategy of the registry) or "oracle"."""
    strategy: str = "self_consistency"
    """Registry name (routed), or how a single model votes over its own samples."""
    mode: str = GREEDY
    """"greedy": each model's one-sample baseline; "sampled": its sampled samples."""
    n: int = 1
    top_k: int = 0
    switch_threshold: float = DEFAULT_SWITCH_THRESHOLD
    model: str = ""
    """Single: the model."""

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that define the strategy (for report.json)."""
        params: dict[str, Any] = {"mode": self.mode, "n": self.n}
        if self.kind == SINGLE:
            params["model"] = self.model
        if self.kind == ROUTED:
            chosen = ensemble.create_strategy(self.strategy)
            if chosen.models(self.top_k) > 1 and self.strategy != "model_switch":
                params["top_k"] = chosen.models(self.top_k)
            if self.strategy == "model_switch":
                params["switch_threshold"] = self.switch_threshold
        return params

    @property
    def family(self) -> str:
        """Strategies that differ only in k or n share a family (the charts show each family's chosen one)."""
        if self.kind == SINGLE:
            return f"single:{self.mode}"
        if self.kind == ORACLE:
            return ORACLE
        return f"{self.strategy}:{self.mode}"


def build_specs(models: Sequence[str], samples_per_model: int, n: int) -> list[StrategySpec]:
    """Every strategy measured on a recording of ``models`` with ``samples_per_model`` sampled samples.

    Greedy mode (always): each model alone, routed top-1, model switch, and the top-k votes (majority,
    score-weighted, log-odds) for k = 2 .. all. Sampled mode (recordings with at least two samples per model),
    with n = min(n, samples_per_model): each model with self-consistency, routed self-consistency, model switch
    and the top-k votes sharing the n samples.
    """
    specs = [StrategySpec(f"single:{m}", SINGLE, model=m) for m in models]
    many = len(models) > 1
    specs.append(StrategySpec("self_consistency:n=1", ROUTED))
    if many:
        specs.append(StrategySpec("model_switch:n=2", ROUTED, "model_switch", n=2))
    for family in ("top_k_vote", "score_weighted_vote", "log_odds_vote"):
        for k in range(2, len(models) + 1):
            specs.append(StrategySpec(f"{family}:k={k}", ROUTED, family, n=k, top_k=k))
    sampled_n = min(n, samples_per_model)
    if sampled_n >= 2:
        specs += [
            StrategySpec(f"self_consistency:{m}:n={sampled_n}", SINGLE, mode=SAMPLED, n=sampled_n, model=m)
            for m in models
        ]
        specs.append(StrategySpec(f"self_consistency:n={sampled_n}", ROUTED, mode=SAMPLED, n=sampled_n))
        if many:
            specs.append(StrategySpec(f"model_switch:n={sampled_n}", ROUTED, "model_switch", SAMPLED, n=sampled_n))
        for family in ("top_k_vote", "score_weighted_vote", "log_odds_vote"):
            for k in range(2, len(models) + 1):
                specs.append(
                    StrategySpec(f"{family}:k={k},n={sampled_n}", ROUTED, family, SAMPLED, n=max(sampled_n, k), top_k=k)
                )
    specs.append(StrategySpec("oracle", ORACLE))
    return specs


@dataclass
class Outcome:
    """One strategy on one query."""

    correct: bool
    tokens: int = 0
    calls: int = 0
    """Engine calls: one Generate per model that sampled."""
    seconds: float | None = 0.0
    """Generation time of the samples used (None: not recorded)."""
    latency: float | None = 0.0
    """The slowest model's generation time (models sample concurrently)."""


_DEFINES = "^\\s*(?:async\\s+)?def\\s+{name}\\s*\\("


@dataclass
class Replay:
    """Grades samples and replays strategies on one recording."""

    recording: Recording
    voting: VotingConfig = field(default_factory=VotingConfig)
    sandbox: CodeRunner | None = None
    """Runs the gold tests of code queries (required when the recording has code)."""
    grade_timeout_seconds: float | None = None
    embed: Any = None
    """Free text: the embedding function of the medoid vote (texts -> L2-normalised rows)."""

    def __post_init__(self) -> None:
        self.models = list(self.recording.models)
        self._judges: dict[Any, MemoJudge] = {}
        self._gold: list[str | None] = []
        self._passes: dict[tuple[int, str], bool] = {}
        for query in self.recording.queries:
            if query.task_type == CODE:
                self._gold.append(None)
            else:
                self._gold.append(create_extractor(query.task_type).normalise(query.answer))
        self._draws: list[dict[str, tuple[list[ensemble.Sample], list[RecordedSample]]]] = []
        for per_model in self.recording.samples:
            draws = {}
            for model, recorded in per_model.items():
                greedy = [s for s in recorded if s.greedy][:1] or recorded[:1]
                sampled = [s for s in recorded if not s.greedy] or recorded
                draws[model] = (greedy, sampled)
            self._draws.append(draws)

    # ---- grading ------------------------------------------------------------------------------------

    def judge(self, index: int) -> Judge:
        """The memoising judge of query ``index`` (per task type; per query for code)."""
        query = self.recording.queries[index]
        key: Any = (query.task_type, index) if query.task_type == CODE else query.task_type
        judge = self._judges.get(key)
        if judge is None:
            options = JudgeOptions(entry_point=query.entry_point or None, embed=self.embed)
            judge = self._judges[key] = MemoJudge(create_judge(query.task_type, self.voting, options))
        return judge

    def text_correct(self, index: int, text: str) -> bool:
        """Whether ``text`` answers query ``index`` right."""
        query = self.recording.queries[index]
        if query.task_type == CODE:
            return self._code_passes(index, query, text)
        evidence = self.judge(index).evaluate([text])[0]
        answer = getattr(evidence, "text", evidence)
        return evidence is not None and answer == self._gold[index]

    def _code_passes(self, index: int, query: RecordedQuery, text: str) -> bool:
        cached = self._passes.get((index, text))
        if cached is not None:
            return cached
        if self.sandbox is None:
            raise ValueError("grading code needs a sandbox (avengers.sandbox.create_sandbox())")
        program = create_extractor(CODE, entry_point=query.entry_point or None).extract(text)
        defines = re.compile(_DEFINES.format(name=re.escape(query.entry_point or "")), re.MULTILINE)
        if query.entry_point and (program is None or not defines.search(program)):
            completion = query.query + text  # a completion of the prompt's function (HumanEval style)
            if parses(completion):
                program = completion
        if program is None:
            passed = False
        else:
            result = self.sandbox.run(program, list(query.tests), query.entry_point or None, self.grade_timeout_seconds)
            passed = bool(result.passed)
        self._passes[(index, text)] = passed
        return passed

    def score_matrix(self, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), models) share of each model's samples that are right: the calibration labels."""
        out = np.zeros((len(indices), len(self.models)))
        for row, index in enumerate(indices):
            per_model = self.recording.samples[index]
            for col, model in enumerate(self.models):
                recorded = per_model[model]
                out[row, col] = sum(self.text_correct(index, s.text) for s in recorded) / len(recorded)
        return out

    # ---- replay -------------------------------------------------------------------------------------

    def _samples(self, index: int, model: str, count: int, mode: str) -> list[RecordedSample]:
        greedy, sampled = self._draws[index][model]
        return greedy if mode == GREEDY else sampled[:count]

    def run(self, spec: StrategySpec, index: int, ranked: Sequence[ensemble.RankedModel] = ()) -> Outcome:
        """``spec`` on query ``index``; ``ranked``: the router's ranking of every model (routed specs)."""
        if spec.kind == ORACLE:
            used = [(m, self._samples(index, m, 1, GREEDY)) for m in self.models]
            correct = any(self.text_correct(index, s.text) for _, samples in used for s in samples)
            return self._outcome(correct, used)
        if spec.kind == SINGLE:
            strategy = ensemble.create_strategy("self_consistency")
            ranked = [ensemble.RankedModel(spec.model, 1.0)]
        else:
            strategy = ensemble.create_strategy(spec.strategy)
            if not ranked:
                raise ValueError(f"{spec.name}: a routed strategy needs the query's ranking")
        query = self.recording.queries[index]
        ask = ensemble.EnsembleQuery(
            query=query.query,
            task_type=query.task_type,
            sampling=ensemble.Sampling(n=spec.n, temperature=0.0 if spec.mode == GREEDY else 0.7),
            strategy=strategy.name,
            switch_threshold=spec.switch_threshold,
            top_k=spec.top_k,
            entry_point=query.entry_point,
        )
        allocation = strategy.allocation(spec.n, spec.top_k)
        drawn = []
        used = []
        for model, count in zip(ranked, allocation):
            recorded = self._samples(index, model.name, count, spec.mode)
            used.append((model.name, recorded))
            drawn.append(
                (model, [ensemble.Sample(model.name, i, s.text, completion_tokens=s.token_count) for i, s in enumerate(recorded)])
            )
        candidates, options = ensemble.ballot(strategy, ask, drawn)
        result = cast_vote(query.task_type, candidates, options, judge=self.judge(index), config=self.voting)
        if query.task_type == CODE:
            correct = result.winner is not None and self.text_correct(index, candidates[result.winner].text)
        else:
            correct = bool(result.answer) and result.answer == self._gold[index]
        # Every allocated model samples (concurrently), also under model switch when the vote does not switch.
        return self._outcome(correct, used)

    def _outcome(self, correct: bool, used: list[tuple[str, list[RecordedSample]]]) -> Outcome:
        tokens = sum(s.token_count for _, samples in used for s in samples)
        per_model = []
        for _, samples in used:
            seconds = [s.seconds for s in samples]
            per_model.append(None if any(x is None for x in seconds) else float(sum(seconds)))  # type: ignore[arg-type]
        known = all(x is not None for x in per_model)
        return Outcome(
            correct=correct,
            tokens=tokens,
            calls=len(used),
            seconds=sum(per_model) if known else None,  # type: ignore[arg-type]
            latency=max(per_model, default=0.0) if known else None,  # type: ignore[type-var]
        )


@dataclass
class SpecResults:
    """A strategy's outcomes on a list of queries."""

    correct: np.ndarray
    tokens: np.ndarray
    calls: np.ndarray
    seconds: np.ndarray
    """NaN where not recorded."""
    latency: np.ndarray
    vote_seconds: float = 0.0


def replay_many(
    replay: Replay,
    specs: Sequence[StrategySpec],
    indices: Sequence[int],
    rankings: Sequence[Sequence[ensemble.RankedModel]] | None = None,
) -> dict[str, SpecResults]:
    """Every spec on every query of ``indices`` (``rankings[j]``: the routing of ``indices[j]``)."""
    out: dict[str, SpecResults] = {}
    for spec in specs:
        if spec.kind == ROUTED and rankings is None:
            continue
        started = time.perf_counter()
        outcomes = [
            replay.run(spec, index, rankings[j] if rankings is not None and spec.kind == ROUTED else ())
            for j, index in enumerate(indices)
        ]
        out[spec.name] = SpecResults(
            correct=np.array([o.correct for o in outcomes], dtype=bool),
            tokens=np.array([o.tokens for o in outcomes], dtype=np.int64),
            calls=np.array([o.calls for o in outcomes], dtype=np.int64),
            seconds=np.array([np.nan if o.seconds is None else o.seconds for o in outcomes], dtype=float),
            latency=np.array([np.nan if o.latency is None else o.latency for o in outcomes], dtype=float),
            vote_seconds=time.perf_counter() - started,
        )
    return out
