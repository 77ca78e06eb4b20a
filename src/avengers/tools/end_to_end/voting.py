"""Votes of ``avengers evaluate``: the project's voter (:mod:`avengers.core.voting`), run in process.

:class:`MemoJudge` wraps a task type's judge and remembers each candidate's evidence (extracted answer, or
sandbox outcome for code) by text, so that replaying dozens of strategies over the same recorded samples
extracts — or runs — every sample once. :class:`LocalVoter` is the :class:`~avengers.core.ensemble.VoterClient`
of the pipeline in process: the same calls the voter service makes (``vote`` / ``model_switch_vote``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avengers.config.voting import VotingConfig
from avengers.core import ensemble
from avengers.core.voting import (
    Candidate,
    Group,
    Judge,
    JudgeOptions,
    VoteResult,
    create_judge,
    model_switch_vote,
    vote,
)


class MemoJudge(Judge):
    """A judge that evaluates each distinct text once (evidence does not depend on the other candidates)."""

    def __init__(self, inner: Judge):
        self.inner = inner
        self.evidence: dict[str, Any] = {}

    def evaluate(self, texts: list[str]) -> list[Any]:
        missing = list(dict.fromkeys(t for t in texts if t not in self.evidence))
        if missing:
            self.evidence.update(zip(missing, self.inner.evaluate(missing)))
        return [self.evidence[t] for t in texts]

    def group(self, evidence: dict[int, Any], weights: dict[int, float]) -> list[Group]:
        return self.inner.group(evidence, weights)


def cast_vote(
    task_type: str,
    candidates: Sequence[ensemble.Candidate],
    options: ensemble.VoteOptions,
    *,
    judge: Judge | None = None,
    config: VotingConfig | None = None,
    judge_options: JudgeOptions | None = None,
) -> VoteResult:
    """The vote the voter service casts for a pipeline ballot (weights None count 1)."""
    config = config or VotingConfig()
    voters = [Candidate(text=c.text, model=c.model, weight=1.0 if c.weight is None else c.weight) for c in candidates]
    method = options.method or config.method
    if judge is None:
        judge_options = judge_options or JudgeOptions(tests=options.tests, entry_point=options.entry_point or None)
        judge = create_judge(task_type, config, judge_options)
    if options.switch_threshold is not None:
        return model_switch_vote(task_type, voters, options.switch_threshold, method, config=config, judge=judge)
    return vote(task_type, voters, method, config=config, judge=judge)


class LocalVoter(ensemble.VoterClient):
    """The pipeline's voter in process (no gRPC): the real :mod:`avengers.core.voting`."""

    def __init__(self, config: VotingConfig | None = None, judge_options: JudgeOptions | None = None):
        self.config = config or VotingConfig()
        self.judge_options = judge_options

    async def vote(
        self,
        task_type: str,
        candidates: Sequence[ensemble.Candidate],
        options: ensemble.VoteOptions,
        *,
        timeout: float,
    ) -> ensemble.VoteOutcome:
        result = cast_vote(task_type, candidates, options, config=self.config, judge_options=self.judge_options)
        return ensemble.VoteOutcome(result.answer, result.text, result.agreement, result.switched, result)
