"""Voter gRPC servicer: validate the request, vote with the core library in a worker thread, answer.

Statuses: INVALID_ARGUMENT for a request the contract or the limits refuse (no candidates, too many,
oversized texts, unspecified or unknown task type or method, threshold outside (0, 1], negative or
non-finite weights, tests or entry point on a non-code task, tests that do not parse, HumanEval tests
without an entry point, timeout out of range); UNAVAILABLE when the embedder for free text fails or the
sandbox cannot run; DEADLINE_EXCEEDED when the call's deadline passes before every code candidate ran
(no further candidate is started after it).

A code task without tests is voted by program text (comments and formatting ignored), not refused.
"""

from __future__ import annotations

import ast
import asyncio
import math
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter, Histogram

from avengers.config.tasks import TASK_TYPES
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.voting import Candidate, JudgeOptions, VoteResult, model_switch_vote, vote
from avengers.rpc.enums import TASK_TYPE, VOTE_METHOD
from avengers.rpc.errors import InvalidArgument, Unavailable, grpc_errors
from avengers.sandbox import Sandbox, SandboxError
from avengers.sandbox.scheduling import FairSlots, SandboxRequest
from avengers.services.voter.embedding import TextEmbedder
from avengers.v1 import voter_pb2, voter_pb2_grpc

VOTES = Counter("avengers_voter_votes_total", "Votes computed", ["task_type", "method"])
SWITCHED = Counter("avengers_voter_switched_total", "Model-switch votes that went over all candidates")
VOTE_SECONDS = Histogram("avengers_voter_vote_seconds", "Time to compute one vote", ["task_type"])


@dataclass
class VoteJob:
    """A validated request."""

    task_type: str
    candidates: list[Candidate]
    method: str
    tests: list[str] = field(default_factory=list)
    entry_point: str | None = None
    timeout_seconds: float | None = None
    switch_threshold: float | None = None


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _defines_check(test: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "check"
        for node in ast.walk(ast.parse(test))
    )


def parse_request(request: voter_pb2.VoteRequest, config: VoterServiceConfig) -> VoteJob:
    """The request as a :class:`VoteJob`; :class:`InvalidArgument` naming the first problem."""
    limits = config.limits
    try:
        task_type = TASK_TYPE.name(request.task_type)
        method = VOTE_METHOD.name(request.method) or config.voting.method
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if task_type is None:
        known = ", ".join(f"TASK_TYPE_{name.upper()}" for name in TASK_TYPES)
        raise InvalidArgument(f"task_type is required; one of {known}")
    count = len(request.candidates)
    if count == 0:
        raise InvalidArgument("no candidates: send at least one")
    if count > limits.max_candidates:
        raise InvalidArgument(f"{count} candidates; the limit is {limits.max_candidates}")
    candidates = []
    for i, c in enumerate(request.candidates):
        if len(c.text) > limits.max_candidate_chars:
            raise InvalidArgument(
                f"candidates[{i}].text has {len(c.text)} characters; the limit is {limits.max_candidate_chars}"
            )
        if len(c.model) > limits.max_model_chars:
            raise InvalidArgument(f"candidates[{i}].model is longer than {limits.max_model_chars} characters")
        weight = c.weight if c.HasField("weight") else 1.0
        if not (_finite(weight) and weight >= 0):
            raise InvalidArgument(f"candidates[{i}].weight={weight} must be a finite number >= 0")
        candidates.append(Candidate(text=c.text, model=c.model, weight=weight))
    threshold = None
    if request.HasField("switch_threshold"):
        threshold = request.switch_threshold
        if not (_finite(threshold) and 0 < threshold <= 1):
            raise InvalidArgument(f"switch_threshold={threshold} is outside (0, 1]")
    job = VoteJob(task_type, candidates, method, switch_threshold=threshold)
    _parse_code_fields(request, config, job)
    return job


def _parse_code_fields(request: voter_pb2.VoteRequest, config: VoterServiceConfig, job: VoteJob) -> None:
    limits, sandbox = config.limits, config.sandbox
    tests, entry_point = list(request.tests), request.entry_point
    if job.task_type != "code":
        present = {"tests": bool(tests), "entry_point": bool(entry_point)}
        present["timeout_seconds"] = request.HasField("timeout_seconds")
        given = [name for name, is_set in present.items() if is_set]
        if given:
            raise InvalidArgument(
                f"{', '.join(given)}: for TASK_TYPE_CODE only, not TASK_TYPE_{job.task_type.upper()}"
            )
        return
    if len(tests) > limits.max_tests or sum(len(t) for t in tests) > limits.max_tests_chars:
        raise InvalidArgument(
            f"tests: {len(tests)} tests of {sum(len(t) for t in tests)} characters; the limits are "
            f"{limits.max_tests} tests and {limits.max_tests_chars} characters"
        )
    if entry_point and not entry_point.isidentifier():
        raise InvalidArgument(f"entry_point {entry_point!r} is not a Python identifier")
    defines_check = False
    for i, test in enumerate(tests):
        try:
            defines_check = _defines_check(test) or defines_check
        except (SyntaxError, ValueError) as exc:
            raise InvalidArgument(f"tests[{i}] is not valid Python: {exc}") from None
    if defines_check and not entry_point:
        raise InvalidArgument(
            "tests define check(candidate) but entry_point is empty: name the function under test"
        )
    if request.HasField("timeout_seconds"):
        timeout = request.timeout_seconds
        if not (_finite(timeout) and 0 < timeout <= sandbox.max_timeout_seconds):
            raise InvalidArgument(f"timeout_seconds={timeout} is outside (0, {sandbox.max_timeout_seconds}]")
        job.timeout_seconds = timeout
    job.tests, job.entry_point = tests, entry_point or None


def to_response(result: VoteResult) -> voter_pb2.VoteResponse:
    return voter_pb2.VoteResponse(
        answer=result.answer,
        text=result.text,
        counts=[
            voter_pb2.VoteCount(
                answer=g.answer, votes=g.votes, weight=g.weight, candidate_indices=g.candidate_indices
            )
            for g in result.groups
        ],
        agreement=result.agreement,
        task_type=TASK_TYPE.value(result.task_type),
        abstained=result.abstained,
        switched=result.switched,
    )


class VoterServicer(voter_pb2_grpc.VoterServicer):
    """Votes run on ``vote_pool`` threads; code candidates run in ``sandbox``, on the ``slots`` shared fairly
    between votes (:mod:`avengers.sandbox.scheduling`): a vote whose caller goes away or whose deadline passes
    has its runs killed, and one vote uses at most ``sandbox.request_budget_seconds`` of sandbox time."""

    def __init__(
        self,
        config: VoterServiceConfig,
        embedder: TextEmbedder,
        sandbox: Sandbox,
        vote_pool: Executor,
        slots: FairSlots,
    ):
        self.config = config
        self.embedder = embedder
        self.sandbox = sandbox
        self.vote_pool = vote_pool
        self.slots = slots

    def compute(
        self, job: VoteJob, deadline: float | None = None, cancelled: threading.Event | None = None
    ) -> VoteResult:
        """The vote (blocking: runs in a worker thread); setting ``cancelled`` stops its sandbox runs."""
        try:
            return self._compute(job, deadline, cancelled)
        except SandboxError as exc:
            raise Unavailable(f"the code sandbox cannot run here: {exc}") from None

    def _compute(self, job: VoteJob, deadline: float | None, cancelled: threading.Event | None) -> VoteResult:
        sandbox = SandboxRequest(
            self.sandbox,
            self.slots,
            deadline=deadline,
            budget_seconds=self.config.sandbox.request_budget_seconds,
            cancelled=cancelled,
        )
        # Threads that wait for a fair slot each (made only when code candidates run).
        with ThreadPoolExecutor(self.slots.slots, thread_name_prefix="voter-sandbox") as executor:
            return self._vote(job, JudgeOptions(
                deadline=deadline,
                tests=job.tests,
                entry_point=job.entry_point,
                timeout_seconds=job.timeout_seconds,
                sandbox=sandbox,
                executor=executor,
                embed=self.embedder.embed,
            ))  # fmt: skip

    def _vote(self, job: VoteJob, options: JudgeOptions) -> VoteResult:
        if job.switch_threshold is not None:
            return model_switch_vote(
                job.task_type,
                job.candidates,
                job.switch_threshold,
                job.method,  # type: ignore[arg-type]
                config=self.config.voting,
                options=options,
            )
        return vote(job.task_type, job.candidates, job.method, config=self.config.voting, options=options)  # type: ignore[arg-type]

    @grpc_errors
    async def Vote(
        self, request: voter_pb2.VoteRequest, context: grpc.aio.ServicerContext
    ) -> voter_pb2.VoteResponse:
        job = parse_request(request, self.config)
        started = time.perf_counter()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        cancelled = threading.Event()
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.vote_pool, self.compute, job, deadline, cancelled
            )
        except asyncio.CancelledError:  # the caller went away (or its deadline passed): stop the sandbox runs
            cancelled.set()
            raise
        VOTE_SECONDS.labels(job.task_type).observe(time.perf_counter() - started)
        VOTES.labels(job.task_type, job.method).inc()
        if result.switched:
            SWITCHED.inc()
        return to_response(result)
