"""``avengers ask "question"`` and ``avengers feedback REQUEST_ID --score S``: clients of the Gateway."""

from __future__ import annotations

import argparse
import json
import os

from avengers.cli import CommandError
from avengers.config.gateway_service import DEFAULT_GATEWAY_PORT
from avengers.config.voting import DEFAULT_SWITCH_THRESHOLD

GATEWAY_ADDR_ENV = "AVENGERS_GATEWAY_ADDR"


def default_address() -> str:
    return os.environ.get(GATEWAY_ADDR_ENV) or f"127.0.0.1:{DEFAULT_GATEWAY_PORT}"


def _name(choice: str | None) -> str | None:
    """A command-line choice ("model-switch") as the contract's lower-case name ("model_switch")."""
    return None if choice is None else choice.replace("-", "_")


def ask_request(args: argparse.Namespace):
    from avengers.rpc.enums import ENSEMBLE_STRATEGY, ROUTING_STRATEGY, TASK_TYPE, VOTE_METHOD
    from avengers.v1 import common_pb2, gateway_pb2

    sampling = common_pb2.SamplingParams(n=args.n, max_tokens=args.max_tokens)
    if args.temperature is not None:
        sampling.temperature = args.temperature
    if args.seed is not None:
        sampling.seed = args.seed
    request = gateway_pb2.AskRequest(
        query=args.query,
        task_type=TASK_TYPE.value(_name(args.task_type)),
        sampling=sampling,
        strategy=ENSEMBLE_STRATEGY.value(_name(args.strategy)),
        routing=ROUTING_STRATEGY.value(args.routing),
        vote_method=VOTE_METHOD.value(args.vote),
        tests=args.test or [],
        entry_point=args.entry_point or "",
        no_cache=args.no_cache,
        task_id=args.task_id or "",
    )
    if args.switch_threshold is not None:
        request.switch_threshold = args.switch_threshold
    return request


def call_gateway(address: str, method: str, request, timeout: float):
    import grpc

    from avengers.v1 import gateway_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return getattr(gateway_pb2_grpc.GatewayStub(channel), method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise CommandError(f"gateway at {address}: {exc.code().name}: {exc.details()}") from None


def describe(response, show_samples: bool) -> str:
    from avengers.rpc.enums import TASK_TYPE

    vote = response.vote
    counts = ", ".join(f"{c.answer!r} x{c.votes}" for c in vote.counts[:5]) or "none"
    lines = [
        f"answer:   {response.answer or '(no answer could be extracted)'}",
        f"models:   {', '.join(response.models)}" + (" (switched to all models)" if vote.switched else ""),
        f"task:     {TASK_TYPE.name(response.task_type)}",
        f"cluster:  {response.cluster} (router {response.router_version})",
        f"votes:    {counts}; agreement {vote.agreement:.2f}" + (f", {vote.abstained} abstained" if vote.abstained else ""),
    ]
    if response.failed_models:
        lines.append(f"failed:   {', '.join(response.failed_models)}")
    lines.append(f"request:  {response.request_id}" + (" (cached)" if response.cached else ""))
    if response.text:
        lines += ["", response.text.strip()]
    if show_samples:
        lines.append("")
        for s in response.samples:
            lines.append(f"--- {s.model} #{s.index} ({s.finish_reason}, {s.completion_tokens} tokens)")
            lines.append(s.text.strip())
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    if not args.query.strip():
        raise CommandError("the question is empty")
    response = call_gateway(args.addr, "Ask", ask_request(args), args.timeout)
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2, ensure_ascii=False))
    else:
        print(describe(response, args.samples))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from avengers.v1 import gateway_pb2

    request = gateway_pb2.FeedbackRequest(request_id=args.request_id, score=args.score, comment=args.comment)
    call_gateway(args.addr, "Feedback", request, args.timeout)
    print(f"feedback recorded for {args.request_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask the gateway a question and print the ensemble's answer")
    p.add_argument("query", help="the question")
    p.add_argument("--addr", default=default_address(), help=f"gateway host:port (default: ${GATEWAY_ADDR_ENV} or %(default)s)")
    p.add_argument("--n", type=int, default=0, help="samples (default: the gateway's, 10)")
    p.add_argument("--strategy", choices=["self-consistency", "model-switch"], help="(default: the gateway's)")
    p.add_argument("--switch-threshold", type=float, help=f"model switch: agreement threshold (default {DEFAULT_SWITCH_THRESHOLD})")
    p.add_argument("--task-type", choices=["math", "multiple-choice", "code", "free-text"], help="(default: inferred)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int, default=0, help="per sample (default: each model's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--routing", choices=["nearest", "soft"], help="(default: the router's)")
    p.add_argument("--vote", choices=["majority", "weighted"], help="(default: majority)")
    p.add_argument("--test", action="append", help="code tasks: a test (repeatable)")
    p.add_argument("--entry-point", help="code tasks: the function under test")
    p.add_argument("--task-id", help="task id (replay pools look answers up by it)")
    p.add_argument("--no-cache", action="store_true", help="skip the response cache")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole AskResponse as JSON")
    p.add_argument("--samples", action="store_true", help="also print every sample")
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser("feedback", help="tell the gateway how good an answer was")
    p.add_argument("request_id", help="request id printed by `avengers ask`")
    p.add_argument("--score", type=float, required=True, help="outcome in [0, 1] (1 = correct)")
    p.add_argument("--comment", default="")
    p.add_argument("--addr", default=default_address(), help="gateway host:port (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(handler=cmd_feedback)
