"""The sandbox shared between votes (issue 13's denial of service): three votes of candidates that loop
forever, with a 60 s per-test timeout and callers that give up after a few seconds, once held both sandbox
slots for minutes, and an ordinary code vote sent next waited 240 s. Now runs stop with their call (deadline
or cancellation), a vote's sandbox time is bounded, and free slots go to the vote holding the fewest.

Real sandbox, real voter over loopback gRPC; the bounds below are far from the old minutes-long waits.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from avengers.config.embedding import EmbeddingConfig
from avengers.config.sandbox import SandboxConfig
from avengers.config.voter_service import VoterLimitsConfig, VoterServiceConfig
from avengers.sandbox import SubprocessSandbox
from avengers.sandbox.scheduling import FairSlots
from avengers.services.voter.server import start_voter_server
from avengers.v1 import common_pb2, voter_pb2, voter_pb2_grpc

CODE = common_pb2.TASK_TYPE_CODE
LOOP = "def f():\n    while True:\n        x = {i}\n"
GOOD = "def f():\n    return 1\n"


class TrackingSandbox(SubprocessSandbox):
    """The real sandbox, counting the runs in progress."""

    def __init__(self, config: SandboxConfig):
        super().__init__(config)
        self.running = 0
        self.started = 0
        self._lock = threading.Lock()

    def run(self, program, tests=(), entry_point=None, timeout_seconds=None, stop=None):
        with self._lock:
            self.running += 1
            self.started += 1
        try:
            return super().run(program, tests, entry_point, timeout_seconds, stop=stop)
        finally:
            with self._lock:
                self.running -= 1


def voter_config(**sandbox) -> VoterServiceConfig:
    return VoterServiceConfig(
        embedding=EmbeddingConfig(backend="hashing"),
        sandbox=SandboxConfig(timeout_seconds=2.0, startup_seconds=3.0, max_timeout_seconds=60.0, **sandbox),
        limits=VoterLimitsConfig(max_candidates=16, max_tests=4),
    )


def loops(count: int, first: int = 0) -> list[voter_pb2.Candidate]:
    return [voter_pb2.Candidate(text=LOOP.format(i=first + i), model="m") for i in range(count)]


def vote_request(candidates, timeout_seconds: float = 60.0) -> voter_pb2.VoteRequest:
    return voter_pb2.VoteRequest(
        task_type=CODE, candidates=candidates, tests=["assert f() == 1"], timeout_seconds=timeout_seconds
    )


async def wait_until(condition, seconds: float) -> bool:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_abandoned_votes_free_the_sandbox_for_the_next_vote():
    sandbox = TrackingSandbox(voter_config().sandbox)
    server = await start_voter_server(voter_config(), "127.0.0.1:0", sandbox=sandbox)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = voter_pb2_grpc.VoterStub(channel)
            hostile = [
                asyncio.ensure_future(stub.Vote(vote_request(loops(3, 10 * k)), timeout=3.0)) for k in range(3)
            ]
            assert await wait_until(lambda: sandbox.running == 2, 30)  # both slots taken by looping candidates
            outcomes = await asyncio.gather(*hostile, return_exceptions=True)
            assert all(
                isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.DEADLINE_EXCEEDED for o in outcomes
            )
            # The callers gave up: their runs are killed, not left to run for startup + 60 s x 2 each.
            assert await wait_until(lambda: sandbox.running == 0, 10)

            started = time.monotonic()
            ordinary = await stub.Vote(
                vote_request([voter_pb2.Candidate(text=GOOD, model="m")], timeout_seconds=2.0), timeout=60
            )
            waited = time.monotonic() - started
            print(f"\nthe ordinary code vote took {waited:.2f} s after three abandoned looping votes")
            assert ordinary.agreement == 1.0 and "return 1" in ordinary.text and ordinary.answer == "1/1 passed: P"
            assert waited < 20  # it used to wait for the looping candidates: minutes
    finally:
        await server.stop(1)


async def test_a_cancelled_vote_stops_its_runs():
    sandbox = TrackingSandbox(voter_config().sandbox)
    server = await start_voter_server(voter_config(), "127.0.0.1:0", sandbox=sandbox)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = voter_pb2_grpc.VoterStub(channel).Vote(vote_request(loops(4)))  # no deadline at all
            assert await wait_until(lambda: sandbox.running == 2, 30)
            call.cancel()
            assert await wait_until(lambda: sandbox.running == 0, 10)
            await asyncio.sleep(0.5)
            assert sandbox.started == 2  # nothing more started for the cancelled vote
    finally:
        await server.stop(1)


async def test_a_vote_is_bounded_by_its_sandbox_budget_and_still_answers():
    config = voter_config(request_budget_seconds=4.0)
    sandbox = TrackingSandbox(config.sandbox)
    server = await start_voter_server(config, "127.0.0.1:0", sandbox=sandbox)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            candidates = [voter_pb2.Candidate(text=GOOD, model="good"), *loops(4)]
            started = time.monotonic()
            reply = await voter_pb2_grpc.VoterStub(channel).Vote(vote_request(candidates), timeout=120)
            took = time.monotonic() - started
    finally:
        await server.stop(1)
    # Without the budget each looping candidate ran for startup + 60 s x 2; now the vote ends after ~4 s.
    assert took < 30
    assert "return 1" in reply.text and reply.answer == "1/1 passed: P" and reply.agreement == pytest.approx(1 / 5)
    assert sandbox.running == 0


def test_free_slots_go_to_the_request_holding_the_fewest():
    slots = FairSlots(2)
    greedy, polite = object(), object()
    assert slots.acquire(greedy) and slots.acquire(greedy)
    order: list[str] = []
    lock = threading.Lock()

    def take(owner, name: str) -> None:
        assert slots.acquire(owner)
        with lock:
            order.append(name)

    waiting = [threading.Thread(target=take, args=(greedy, f"greedy-{i}"), daemon=True) for i in range(3)]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)  # the greedy request's further candidates are queued first
    polite_thread = threading.Thread(target=take, args=(polite, "polite"), daemon=True)
    polite_thread.start()
    time.sleep(0.2)
    slots.release(greedy)  # the next free slot goes to the request holding none
    polite_thread.join(5)
    assert order == ["polite"]
    slots.release(greedy)
    slots.release(polite)
    for thread in waiting:
        thread.join(0.5)
    assert order[1:3] == ["greedy-0", "greedy-1"] and slots.held(greedy) == 2
    slots.release(greedy)  # the last one waiting gets its slot too
    waiting[2].join(5)
    assert order[3:] == ["greedy-2"]


def test_a_waiting_request_gives_up_when_told():
    slots = FairSlots(1)
    assert slots.acquire("a")
    give_up = threading.Event()
    threading.Timer(0.2, give_up.set).start()
    assert not slots.acquire("b", give_up=give_up.is_set)
    slots.release("a")
    assert slots.acquire("b")


def test_a_run_ends_as_soon_as_its_stop_condition_holds():
    sandbox = SubprocessSandbox(SandboxConfig(timeout_seconds=30.0, startup_seconds=3.0, max_timeout_seconds=60.0))
    stop_at = time.monotonic() + 1.0
    result = sandbox.run(LOOP.format(i=0), ["f()"], stop=lambda: time.monotonic() >= stop_at)
    assert result.timed_out and not result.passed
    assert result.duration_seconds < 15  # its own wall limit is 3 + 30 x 2 s
