"""Voter service over real gRPC: every task type, weighting, model switch, remote embedder, bad input."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.sandbox import SandboxConfig
from avengers.config.voter_service import VoterLimitsConfig, VoterServiceConfig
from avengers.sandbox import SandboxError, create_sandbox
from avengers.services.embedder.server import start_embedder_server
from avengers.services.voter.server import start_voter_server
from avengers.v1 import common_pb2, voter_pb2, voter_pb2_grpc

MATH, MC, CODE, TEXT = (
    common_pb2.TASK_TYPE_MATH,
    common_pb2.TASK_TYPE_MULTIPLE_CHOICE,
    common_pb2.TASK_TYPE_CODE,
    common_pb2.TASK_TYPE_FREE_TEXT,
)
WEIGHTED = voter_pb2.VOTE_METHOD_WEIGHTED

HUMANEVAL_TEST = """
METADATA = {"author": "test"}


def check(candidate):
    assert candidate([1, 2, 3]) == 6
    assert candidate([]) == 0
"""


def config(**changes) -> VoterServiceConfig:
    base = {
        "embedding": EmbeddingConfig(backend="hashing"),
        "sandbox": SandboxConfig(timeout_seconds=2.0, startup_seconds=3.0),
        "limits": VoterLimitsConfig(
            max_candidates=16, max_candidate_chars=2000, max_tests=4, max_tests_chars=4000
        ),
    }
    return VoterServiceConfig(**{**base, **changes})


@pytest.fixture
async def voter():
    server = await start_voter_server(config(), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield voter_pb2_grpc.VoterStub(channel), channel
    await channel.close()
    await server.stop(0.5)


@pytest.fixture
def stub(voter):
    return voter[0]


def candidates(
    *texts: str, model: str = "m", weights: list[float] | None = None
) -> list[voter_pb2.Candidate]:
    out = []
    for i, text in enumerate(texts):
        c = voter_pb2.Candidate(text=text, model=model)
        if weights is not None:
            c.weight = weights[i]
        out.append(c)
    return out


async def test_health_reports_serving(voter):
    health = health_pb2_grpc.HealthStub(voter[1])
    reply = await health.Check(health_pb2.HealthCheckRequest(service="avengers.v1.Voter"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_math_vote_with_equivalent_answers(stub):
    reply = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=MATH,
            candidates=candidates(
                "So $x = \\boxed{\\frac{1}{2}}$.",
                "The answer is 0.5",
                "Answer: 2/4",
                "\\boxed{3}",
                "I give up.",
            ),
        )
    )
    assert reply.answer == "1/2"
    assert reply.text == "So $x = \\boxed{\\frac{1}{2}}$."
    assert [(c.answer, c.votes, list(c.candidate_indices)) for c in reply.counts] == [
        ("1/2", 3, [0, 1, 2]),
        ("3", 1, [3]),
    ]
    assert reply.agreement == pytest.approx(0.6)
    assert reply.abstained == 1
    assert reply.task_type == MATH and not reply.switched


async def test_multiple_choice_and_symbolic_math(stub):
    mc = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=MC, candidates=candidates("Answer: (B)", "B", "The answer is C.", "\\boxed{B}")
        )
    )
    assert mc.answer == "B" and mc.counts[0].votes == 3
    symbolic = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=MATH, candidates=candidates("\\boxed{2x+1}", "\\boxed{1+2x}", "\\boxed{x+2}")
        )
    )
    assert symbolic.answer == "2*x + 1" and symbolic.counts[0].votes == 2


async def test_weighted_vote(stub):
    texts = ("Answer: A", "Answer: A", "Answer: D")
    majority = await stub.Vote(
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates(*texts, weights=[0.2, 0.2, 1.0]))
    )
    assert majority.answer == "A"
    weighted = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=MC, candidates=candidates(*texts, weights=[0.2, 0.2, 1.0]), method=WEIGHTED
        )
    )
    assert weighted.answer == "D"
    assert weighted.agreement == pytest.approx(1.0 / 1.4)
    assert weighted.counts[0].answer == "A" and weighted.counts[0].weight == pytest.approx(0.4)


async def test_code_grouped_by_behaviour_on_humaneval_tests(stub):
    programs = [
        "```python\ndef total(xs):\n    return sum(xs)\n```",
        "```python\ndef total(xs):\n    return len(xs)\n```",
        "Here you go:\n```python\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n```",
        "```python\ndef total(xs):\n    return len(xs)  # count\n```",
        "```python\ndef total(xs):\n    return len(xs) * 1\n```",
        "```python\nimport socket\nsocket.create_connection(('127.0.0.1', 9))\ndef total(xs):\n    return sum(xs)\n```",
    ]
    reply = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=CODE,
            candidates=candidates(*programs),
            tests=[HUMANEVAL_TEST, "assert total([5]) == 5"],
            entry_point="total",
            timeout_seconds=2.0,
        )
    )
    assert reply.answer == "2/2 passed: PP"  # fewer votes than the wrong group, but passes the tests
    assert "return sum(xs)" in reply.text
    groups = {c.answer: list(c.candidate_indices) for c in reply.counts}
    assert groups == {"0/2 passed: FF": [1, 3, 4, 5], "2/2 passed: PP": [0, 2]}
    assert reply.counts[0].answer == "0/2 passed: FF"  # most votes first


async def test_code_without_tests_groups_by_program_text(stub):
    reply = await stub.Vote(
        voter_pb2.VoteRequest(
            task_type=CODE,
            candidates=candidates(
                "def f():\n    return 1\n", "def f():  # one\n    return 1", "def f():\n    return 2"
            ),
        )
    )
    assert list(reply.counts[0].candidate_indices) == [0, 1]
    assert reply.answer == "def f():\n    return 1"


async def test_free_text_medoid_in_process(stub):
    texts = (
        "Water boils at 100 degrees Celsius at sea level.",
        "At sea level, water boils at 100 degrees Celsius.",
        "Water boils at 100 degrees Celsius at sea level.",
        "Cats are mammals.",
    )
    reply = await stub.Vote(voter_pb2.VoteRequest(task_type=TEXT, candidates=candidates(*texts)))
    assert reply.text in (texts[0], texts[1])
    winners = set(reply.counts[0].candidate_indices)
    assert {0, 2} <= winners and 3 not in winners  # near-duplicates together, the outlier alone
    assert reply.task_type == TEXT


async def test_free_text_through_the_embedder_service():
    embedder = await start_embedder_server(
        EmbedderServiceConfig(embedding=EmbeddingConfig(backend="hashing")), "127.0.0.1:0"
    )
    voter = await start_voter_server(
        config(embedder_address=f"127.0.0.1:{embedder.port}", embed_batch=2), "127.0.0.1:0"
    )
    texts = ("The sky is blue.", "The sky is blue today.", "The sky is blue.", "Grass is green.", "Blue sky.")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{voter.port}") as channel:
            stub = voter_pb2_grpc.VoterStub(channel)
            reply = await stub.Vote(voter_pb2.VoteRequest(task_type=TEXT, candidates=candidates(*texts)))
            assert reply.text == "The sky is blue."
            assert sum(c.votes for c in reply.counts) == 5
            # The embedder goes away: free-text votes are UNAVAILABLE, the other task types still work.
            await embedder.stop(0)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Vote(voter_pb2.VoteRequest(task_type=TEXT, candidates=candidates(*texts)))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Embedder service" in caught.value.details()
            mc = await stub.Vote(voter_pb2.VoteRequest(task_type=MC, candidates=candidates("Answer: A")))
            assert mc.answer == "A"
    finally:
        await voter.stop(0.5)
        await embedder.stop(0)


async def test_model_switch_on_and_off(stub):
    first = candidates("Answer: A", "Answer: A", "Answer: B", "Answer: C", "Answer: A", model="m1")
    second = candidates("Answer: B", "Answer: B", "Answer: B", "Answer: B", "Answer: B", model="m2")
    switched = await stub.Vote(
        voter_pb2.VoteRequest(task_type=MC, candidates=first + second, switch_threshold=0.8)
    )
    assert switched.switched and switched.answer == "B"
    assert switched.agreement == pytest.approx(0.6)
    kept = await stub.Vote(
        voter_pb2.VoteRequest(task_type=MC, candidates=first + second, switch_threshold=0.6)
    )
    assert not kept.switched and kept.answer == "A"
    assert sum(c.votes for c in kept.counts) == 5  # only the first model voted
    plain = await stub.Vote(voter_pb2.VoteRequest(task_type=MC, candidates=first + second))
    assert not plain.switched and plain.answer == "B" and sum(c.votes for c in plain.counts) == 10


class CountingSandbox:
    """The real sandbox, counting runs; or one that cannot run at all."""

    def __init__(self, broken: bool = False):
        self.inner = create_sandbox(SandboxConfig(timeout_seconds=2.0, startup_seconds=3.0))
        self.broken = broken
        self.runs = 0

    def run(self, program, tests=(), entry_point=None, timeout_seconds=None):
        if self.broken:
            raise SandboxError("a network namespace is required but unavailable here")
        self.runs += 1
        return self.inner.run(program, tests, entry_point, timeout_seconds)


class GatedSandbox(CountingSandbox):
    """The real sandbox; each run first signals that it started, then waits until the test releases it."""

    def __init__(self):
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, program, tests=(), entry_point=None, timeout_seconds=None):
        self.started.set()
        if not self.release.wait(timeout=60):
            raise SandboxError("the test never released the run")
        return super().run(program, tests, entry_point, timeout_seconds)


async def test_a_running_code_vote_does_not_block_other_votes():
    sandbox = GatedSandbox()
    server = await start_voter_server(config(), "127.0.0.1:0", sandbox=sandbox)
    finished: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = voter_pb2_grpc.VoterStub(channel)

            async def code_vote() -> voter_pb2.VoteResponse:
                reply = await stub.Vote(code_request(tests=["assert f() == 1"]), timeout=60)
                finished.append("code")
                return reply

            code = asyncio.ensure_future(code_vote())
            assert await asyncio.to_thread(sandbox.started.wait, 30)  # the code vote is in the sandbox now
            try:  # held there until the multiple-choice vote has its answer
                quick = await stub.Vote(voter_pb2.VoteRequest(task_type=MC, candidates=candidates("Answer: A")), timeout=30)
                finished.append("mc")
            finally:
                sandbox.release.set()
            slow = await code
    finally:
        await server.stop(0.5)
    assert finished == ["mc", "code"] and quick.answer == "A" and slow.agreement == 1.0


async def test_no_code_candidate_starts_after_the_deadline():
    sandbox = CountingSandbox()
    server = await start_voter_server(config(), "127.0.0.1:0", sandbox=sandbox)
    loops = [f"def f():\n    while True:\n        x = {i}\n" for i in range(8)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = voter_pb2_grpc.VoterStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                request = voter_pb2.VoteRequest(
                    task_type=CODE, candidates=candidates(*loops), tests=["f()"], timeout_seconds=1.0
                )
                await stub.Vote(request, timeout=1.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop(5)  # waits for the vote's worker to give up
    assert 0 < sandbox.runs < len(loops)


async def test_sandbox_that_cannot_run_is_unavailable():
    server = await start_voter_server(config(), "127.0.0.1:0", sandbox=CountingSandbox(broken=True))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await voter_pb2_grpc.VoterStub(channel).Vote(code_request(tests=["assert f() == 1"]))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "sandbox" in caught.value.details()
    finally:
        await server.stop(0.5)


def code_request(**fields) -> voter_pb2.VoteRequest:
    return voter_pb2.VoteRequest(task_type=CODE, candidates=candidates("def f():\n    return 1"), **fields)


BAD_REQUESTS = {
    "no candidates": (voter_pb2.VoteRequest(task_type=MC), "no candidates"),
    "too many candidates": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates(*["A"] * 17)),
        "17 candidates",
    ),
    "oversized text": (voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A" * 2001)), "characters"),
    "unspecified task type": (voter_pb2.VoteRequest(candidates=candidates("A")), "task_type is required"),
    "unknown task type": (
        voter_pb2.VoteRequest(task_type=99, candidates=candidates("A")),
        "task_type: unknown",
    ),
    "unknown method": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A"), method=7),
        "vote_method",
    ),
    "threshold zero": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A"), switch_threshold=0),
        "(0, 1]",
    ),
    "threshold above one": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A"), switch_threshold=1.5),
        "(0, 1]",
    ),
    "threshold nan": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A"), switch_threshold=float("nan")),
        "(0, 1]",
    ),
    "negative weight": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A", weights=[-1.0]), method=WEIGHTED),
        "weight",
    ),
    "infinite weight": (
        voter_pb2.VoteRequest(task_type=MC, candidates=candidates("A", weights=[float("inf")])),
        "weight",
    ),
    "tests on a math task": (
        voter_pb2.VoteRequest(task_type=MATH, candidates=candidates("1"), tests=["assert True"]),
        "TASK_TYPE_CODE only",
    ),
    "too many tests": (code_request(tests=["assert True"] * 5), "limits"),
    "tests too long": (code_request(tests=["#" * 4001]), "limits"),
    "test syntax error": (code_request(tests=["assert ("]), "tests[0] is not valid Python"),
    "check without entry point": (code_request(tests=[HUMANEVAL_TEST]), "entry_point is empty"),
    "entry point not an identifier": (code_request(tests=["assert True"], entry_point="f()"), "identifier"),
    "timeout zero": (code_request(tests=["assert True"], timeout_seconds=0), "timeout_seconds"),
    "timeout too long": (code_request(tests=["assert True"], timeout_seconds=3600), "timeout_seconds"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_requests_are_invalid_argument(stub, name):
    request, message = BAD_REQUESTS[name]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Vote(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details()
