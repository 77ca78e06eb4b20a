"""Step 6 of the recipe: candidate answers -> one answer.

A :class:`Judge` (one per task type, from a registry) does two things: it *evaluates* each candidate on
its own (the extracted answer key; for code, the program's pass/fail outcome on each test in the
sandbox; for free text, the embedding), and it *groups* a set of evaluated candidates into answers with
a priority. :func:`tally` then picks the winning group: highest priority first (code: most tests
passed; free text: the group of the candidate with the highest total similarity — the medoid), then the
most votes (majority) or weight (weighted), then the earliest candidate — ties are deterministic.

- math, multiple_choice: groups of equal normalised answers (:mod:`avengers.core.answers`).
- code: with tests, groups of equal behaviour (the tuple of per-test outcomes); without tests, groups of
  equal program text (comments and formatting ignored).
- free_text: near-duplicate clusters of the embeddings; the winner is the medoid.

:func:`vote` votes over all candidates (self-consistency: majority over sampled answers, Wang et al.,
arXiv 2203.11171); :func:`model_switch_vote` (the model switch of The Avengers, arXiv 2505.19797) votes over
the first model's candidates and, when their agreement is below the threshold, over all of them.
Agreement is the winning group's share of all votes (or weight) including abstentions.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from avengers.config.voting import VotingConfig
from avengers.core.answers import AnswerExtractor, create_extractor
from avengers.core.execution import CodeRunner, SandboxError, SandboxResult
from avengers.registry import registry

VoteMethod = Literal["majority", "weighted"]
EmbedFunction = Callable[[list[str]], np.ndarray]
"""Texts -> (n, d) matrix of L2-normalised rows."""


@dataclass(frozen=True)
class Candidate:
    """One generated answer."""

    text: str
    model: str = ""
    weight: float = 1.0
    """Vote weight for the weighted method (non-negative)."""


@dataclass
class VoteGroup:
    """Candidates that gave the same answer."""

    answer: str
    """The group's normalised answer (its key)."""
    votes: int
    weight: float
    candidate_indices: list[int]


@dataclass
class VoteResult:
    answer: str
    """Winning normalised answer ("" when every candidate abstained)."""
    text: str
    """Full text of the winning group's representative candidate."""
    groups: list[VoteGroup]
    """Groups, most votes first (then weight, then earliest candidate)."""
    agreement: float
    """Winning share of the votes (weight for the weighted method), abstentions included, 0..1."""
    task_type: str
    abstained: int
    """Candidates (of those voted over) from which no answer could be extracted."""
    switched: bool = False
    """Model switch: the vote went over all candidates because the first model's agreement was low."""
    winner: int | None = None
    """Index of the candidate whose text is returned."""


@dataclass
class Group:
    """A judge's grouping of candidates, before counting."""

    answer: str
    members: list[int]
    priority: float = 0.0
    """Ranks groups before votes (code: tests passed; free text: the representative's centrality)."""
    representative: int | None = None
    """Candidate whose text stands for the group (default: its first member)."""


@dataclass
class JudgeOptions:
    """What a judge may need besides the texts."""

    tests: Sequence[str] = ()
    """Code: test code (plain asserts or HumanEval ``check(candidate)``)."""
    entry_point: str | None = None
    """Code: function under test."""
    timeout_seconds: float | None = None
    """Code: per-test timeout (default: the sandbox config's)."""
    sandbox: CodeRunner | None = None
    """Code: the sandbox to run candidates in (:func:`avengers.sandbox.create_sandbox`); required with tests."""
    executor: Executor | None = None
    """Code: pool that runs candidates in parallel (default: one after the other)."""
    embed: EmbedFunction | None = None
    """Free text: the embedding function."""
    deadline: float | None = None
    """``time.monotonic()`` after which no more code candidates are started (TimeoutError)."""


class Judge(ABC):
    """Evaluates candidates of one task type and groups them into answers."""

    @abstractmethod
    def evaluate(self, texts: list[str]) -> list[Any]:
        """Per-candidate evidence, each independent of the others (None: the candidate abstains)."""

    @abstractmethod
    def group(self, evidence: dict[int, Any], weights: dict[int, float]) -> list[Group]:
        """Groups of the candidates in ``evidence`` (index -> non-None evidence)."""


JudgeFactory = Callable[[VotingConfig, JudgeOptions], Judge]
JUDGES = registry("vote judge", home="avengers.core.voting", label="task type")
"""One judge per task type (how candidates are grouped into answers)."""

register_judge = JUDGES.register
"""Class decorator: the judge of a task type."""


def create_judge(
    task_type: str, config: VotingConfig | None = None, options: JudgeOptions | None = None
) -> Judge:
    """The judge of ``task_type`` ("math", "multiple_choice", "code", "free_text")."""
    return JUDGES.create(task_type, config or VotingConfig(), options or JudgeOptions())


def _groups_by_key(evidence: dict[int, Any], key: Callable[[Any], str]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for index in sorted(evidence):
        grouped.setdefault(key(evidence[index]), []).append(index)
    return grouped


class AnswerKeyJudge(Judge):
    """Groups candidates by their extracted, normalised answer."""

    def __init__(self, extractor: AnswerExtractor):
        self.extractor = extractor

    def evaluate(self, texts: list[str]) -> list[str | None]:
        return [self.extractor.key(text) for text in texts]

    def group(self, evidence: dict[int, str], weights: dict[int, float]) -> list[Group]:
        return [Group(answer, members) for answer, members in _groups_by_key(evidence, str).items()]


@register_judge("math")
def _math_judge(config: VotingConfig, options: JudgeOptions) -> Judge:
    extractor = create_extractor(
        "math", symbolic=config.math_symbolic, max_symbolic_chars=config.math_max_symbolic_chars
    )
    return AnswerKeyJudge(extractor)


@register_judge("multiple_choice")
def _multiple_choice_judge(config: VotingConfig, options: JudgeOptions) -> Judge:
    return AnswerKeyJudge(create_extractor("multiple_choice"))


@dataclass(frozen=True)
class CodeEvidence:
    program: str
    key: str
    tests_passed: int = 0
    result: SandboxResult | None = field(default=None, compare=False)


def behaviour_key(outcomes: Sequence[bool]) -> str:
    """ "2/3 passed: PPF" — the group key of a behaviour on the tests."""
    marks = "".join("P" if ok else "F" for ok in outcomes)
    return f"{sum(outcomes)}/{len(outcomes)} passed: {marks}"


@register_judge("code")
class CodeJudge(Judge):
    """With tests: groups by behaviour in the sandbox, more tests passed first. Without: by program text."""

    def __init__(self, config: VotingConfig, options: JudgeOptions):
        self.extractor = create_extractor("code", entry_point=options.entry_point)
        self.options = options
        self.tests = list(options.tests)
        self._sandbox = options.sandbox

    @property
    def sandbox(self) -> CodeRunner:
        if self._sandbox is None:
            raise SandboxError("code votes with tests need a sandbox (JudgeOptions.sandbox; avengers.sandbox)")
        return self._sandbox

    def _run(self, program: str) -> SandboxResult:
        if self.options.deadline is not None and time.monotonic() > self.options.deadline:
            raise TimeoutError("the vote's deadline passed before every code candidate could run")
        return self.sandbox.run(program, self.tests, self.options.entry_point, self.options.timeout_seconds)

    def evaluate(self, texts: list[str]) -> list[CodeEvidence | None]:
        programs = [self.extractor.extract(text) for text in texts]
        normalised = [None if p is None else self.extractor.normalise(p) for p in programs]
        if not self.tests:
            return [
                None if p is None or n is None else CodeEvidence(program=p, key=n)
                for p, n in zip(programs, normalised)
            ]
        # Programs equal up to comments and formatting behave the same: run each once.
        unique = list(dict.fromkeys(n for n in normalised if n is not None))
        first_program = {n: p for p, n in zip(programs, normalised) if n is not None and p is not None}
        runs = [first_program[n] for n in unique]
        if self.options.executor is not None:
            results = list(self.options.executor.map(self._run, runs))
        else:
            results = [self._run(program) for program in runs]
        by_key = dict(zip(unique, results))
        evidence: list[CodeEvidence | None] = []
        for program, key in zip(programs, normalised):
            if program is None or key is None:
                evidence.append(None)
                continue
            result = by_key[key]
            evidence.append(
                CodeEvidence(program, behaviour_key(result.outcomes), result.tests_passed, result)
            )
        return evidence

    def group(self, evidence: dict[int, CodeEvidence], weights: dict[int, float]) -> list[Group]:
        grouped = _groups_by_key(evidence, lambda e: e.key)
        return [
            Group(key, members, float(evidence[members[0]].tests_passed)) for key, members in grouped.items()
        ]


@dataclass(frozen=True)
class TextEvidence:
    text: str
    vector: np.ndarray = field(compare=False)


@register_judge("free_text")
class MedoidJudge(Judge):
    """The candidate with the highest (weighted) total cosine similarity to the others wins.

    Candidates are clustered greedily: the most central one not yet placed leads a group and takes every
    unplaced candidate at least ``near_duplicate_similarity`` similar to it; the leader represents it.
    """

    def __init__(self, config: VotingConfig, options: JudgeOptions):
        self.extractor = create_extractor("free_text")
        self.embed = options.embed
        self.threshold = config.near_duplicate_similarity
        self.embed_chars = config.free_text_embed_chars

    def evaluate(self, texts: list[str]) -> list[TextEvidence | None]:
        extracted = [self.extractor.extract(text) for text in texts]
        present = [i for i, text in enumerate(extracted) if text is not None]
        evidence: list[TextEvidence | None] = [None] * len(texts)
        if not present:
            return evidence
        if self.embed is None:
            raise ValueError("free-text voting needs an embedding function")
        vectors = np.asarray(
            self.embed([extracted[i][: self.embed_chars] for i in present]), dtype=np.float32
        )
        if vectors.shape[0] != len(present):
            raise ValueError(f"the embedder returned {vectors.shape[0]} vectors for {len(present)} texts")
        for row, index in enumerate(present):
            evidence[index] = TextEvidence(" ".join(extracted[index].split()), vectors[row])
        return evidence

    def group(self, evidence: dict[int, TextEvidence], weights: dict[int, float]) -> list[Group]:
        indices = sorted(evidence)
        matrix = np.stack([evidence[i].vector for i in indices])
        similarity = matrix @ matrix.T
        w = np.array([weights[i] for i in indices], dtype=np.float64)
        centrality = similarity.astype(np.float64) @ w
        order = sorted(range(len(indices)), key=lambda k: (-round(float(centrality[k]), 9), k))
        placed: set[int] = set()
        groups = []
        for leader in order:
            if leader in placed:
                continue
            members = [
                k
                for k in order
                if k not in placed and (k == leader or similarity[leader, k] >= self.threshold)
            ]
            placed.update(members)
            groups.append(
                Group(
                    answer=evidence[indices[leader]].text,
                    members=sorted(indices[k] for k in members),
                    priority=round(float(centrality[leader]), 9),
                    representative=indices[leader],
                )
            )
        return groups


def tally(
    task_type: str,
    texts: Sequence[str],
    weights: Sequence[float],
    indices: Sequence[int],
    evidence: dict[int, Any],
    judge: Judge,
    method: VoteMethod,
) -> VoteResult:
    """Count the votes of the candidates ``indices`` (evidence None = abstain) and pick the winner."""
    present = {i: evidence[i] for i in indices if evidence.get(i) is not None}
    counted = {i: (weights[i] if method == "weighted" else 1.0) for i in indices}
    abstained = len(indices) - len(present)
    if not present:
        return VoteResult("", "", [], 0.0, task_type, abstained)
    groups = judge.group(present, {i: counted[i] for i in present})
    total = sum(counted.values())

    def score(group: Group) -> float:
        return sum(counted[i] for i in group.members)

    def rank(group: Group) -> tuple:
        return (-group.priority, -score(group), -len(group.members), min(group.members))

    best = min(groups, key=rank)
    vote_groups = [
        VoteGroup(g.answer, len(g.members), sum(weights[i] for i in g.members), sorted(g.members))
        for g in sorted(groups, key=lambda g: (-len(g.members), -score(g), min(g.members)))
    ]
    representative = best.representative if best.representative is not None else min(best.members)
    return VoteResult(
        answer=best.answer,
        text=texts[representative],
        groups=vote_groups,
        agreement=score(best) / total if total > 0 else 0.0,
        task_type=task_type,
        abstained=abstained,
        winner=representative,
    )


def _check(candidates: Sequence[Candidate], method: str) -> None:
    if not candidates:
        raise ValueError("no candidates to vote on")
    if method not in ("majority", "weighted"):
        raise ValueError(f"unknown vote method {method!r}; known: majority, weighted")
    for index, candidate in enumerate(candidates):
        if not (math.isfinite(candidate.weight) and candidate.weight >= 0):
            raise ValueError(
                f"candidate {index}: weight must be a finite non-negative number, got {candidate.weight}"
            )


class Election:
    """One vote over a fixed list of candidates; evaluates each candidate at most once."""

    def __init__(
        self, task_type: str, candidates: Sequence[Candidate | str], judge: Judge, method: VoteMethod
    ):
        self.task_type = task_type
        self.candidates = [c if isinstance(c, Candidate) else Candidate(text=c) for c in candidates]
        _check(self.candidates, method)
        self.judge = judge
        self.method = method
        self.texts = [c.text for c in self.candidates]
        self.weights = [float(c.weight) for c in self.candidates]
        self.evidence: dict[int, Any] = {}

    def over(self, indices: Sequence[int]) -> VoteResult:
        pending = [i for i in indices if i not in self.evidence]
        if pending:
            for index, item in zip(pending, self.judge.evaluate([self.texts[i] for i in pending])):
                self.evidence[index] = item
        return tally(
            self.task_type, self.texts, self.weights, indices, self.evidence, self.judge, self.method
        )


def vote(
    task_type: str,
    candidates: Sequence[Candidate | str],
    method: VoteMethod | None = None,
    *,
    config: VotingConfig | None = None,
    options: JudgeOptions | None = None,
    judge: Judge | None = None,
) -> VoteResult:
    """Vote over all ``candidates`` (method default: the config's) — self-consistency when they are samples of
    one model (Wang et al., arXiv 2203.11171). ``judge``: the task type's judge to use (default: a new one
    from ``config`` and ``options``), e.g. one that remembers evidence across votes."""
    config = config or VotingConfig()
    election = Election(
        task_type, candidates, judge or create_judge(task_type, config, options), method or config.method
    )
    return election.over(range(len(election.candidates)))


def model_switch_vote(
    task_type: str,
    candidates: Sequence[Candidate | str],
    threshold: float | None = None,
    method: VoteMethod | None = None,
    *,
    config: VotingConfig | None = None,
    options: JudgeOptions | None = None,
    judge: Judge | None = None,
) -> VoteResult:
    """The model switch of The Avengers (arXiv 2505.19797): vote over the first model's candidates (the model
    of ``candidates[0]``); when that vote's agreement is below ``threshold`` (default: the config's), vote
    over all candidates with ``switched=True``. ``judge`` as for :func:`vote`."""
    config = config or VotingConfig()
    threshold = config.switch_threshold if threshold is None else threshold
    if not 0 < threshold <= 1:
        raise ValueError(f"switch threshold must be in (0, 1], got {threshold}")
    election = Election(
        task_type, candidates, judge or create_judge(task_type, config, options), method or config.method
    )
    first_model = election.candidates[0].model
    first = [i for i, c in enumerate(election.candidates) if c.model == first_model]
    result = election.over(first)
    if result.agreement >= threshold or len(first) == len(election.candidates):
        return result
    result = election.over(range(len(election.candidates)))
    result.switched = True
    return result
