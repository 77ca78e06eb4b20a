"""``avengers ask "question"`` and ``avengers feedback REQUEST_ID --score S``: clients of the Gateway
(through :mod:`avengers.client`)."""

from __future__ import annotations

import argparse
import json
import os

from avengers.cli import CommandError
from avengers.config.gateway_service import DEFAULT_GATEWAY_PORT
from avengers.config.voting import DEFAULT_SWITCH_THRESHOLD
from avengers.rpc.security import add_client_security_arguments

GATEWAY_ADDR_ENV = "AVENGERS_GATEWAY_ADDR"


def default_address() -> str:
    return os.environ.get(GATEWAY_ADDR_ENV) or f"127.0.0.1:{DEFAULT_GATEWAY_PORT}"


def ask_options(args: argparse.Namespace) -> dict:
    """The options of :func:`avengers.client.ask_request` from the command line."""
    return {
        "n": args.n,
        "strategy": args.strategy,
        "switch_threshold": args.switch_threshold,
        "top_k": args.k,
        "task_type": args.task_type,
        "routing": args.routing,
        "vote": args.vote,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "tests": args.test or [],
        "entry_point": args.entry_point,
        "task_id": args.task_id,
        "no_cache": args.no_cache,
    }


def open_client(args: argparse.Namespace):
    """A :class:`avengers.client.Client` with the command's address, TLS and token options."""
    from avengers.client import Client

    return Client(
        args.addr, tls=args.tls, ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key,
        token_env=args.token_env, timeout=args.timeout,
    )


def ask_request(args: argparse.Namespace):
    from avengers.client import ask_request as build

    return build(args.query, **ask_options(args))


def as_json(message) -> str:
    """A message as JSON with every field, zero values included (cluster 0, index 0, ...)."""
    from google.protobuf.json_format import MessageToDict

    data = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return json.dumps(data, indent=2, ensure_ascii=False)


def shorten(text: str, limit: int = 60) -> str:
    """One line of at most ``limit`` characters (a free-text answer in the votes line)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(response, show_samples: bool) -> str:
    from avengers.rpc.enums import TASK_TYPE

    vote = response.vote
    counts = ", ".join(f"{shorten(c.answer)!r} x{c.votes}" for c in vote.counts[:5]) or "none"
    lines = [
        f"answer:   {response.answer or '(no answer could be extracted)'}",
        f"models:   {', '.join(response.models)}" + (" (switched to all models)" if vote.switched else ""),
        f"task:     {TASK_TYPE.name(response.task_type)}",
        f"cluster:  {response.cluster} (router {response.router_version})",
        f"votes:    {counts}; agreement {vote.agreement:.2f}" + (f", {vote.abstained} abstained" if vote.abstained else ""),
    ]
    if response.failed_models:
        lines.append(f"failed:   {', '.join(response.failed_models)}")
    usage = response.usage
    lines.append(f"tokens:   {usage.prompt_tokens} prompt, {usage.completion_tokens} completion")
    lines.append(f"request:  {response.request_id}" + (" (cached)" if response.cached else ""))
    if response.text:
        lines += ["", response.text.strip()]
    if show_samples:
        lines.append("")
        for s in response.samples:
            lines.append(f"--- {s.model} #{s.index} ({s.finish_reason}, {s.completion_tokens} tokens)")
            lines.append(s.text.strip())
    return "\n".join(lines)


def describe_event(event) -> str | None:
    """One line per AskStream event before the result (the result is printed as by ``ask``)."""
    from avengers.rpc.enums import ENSEMBLE_STRATEGY, TASK_TYPE

    kind = event.WhichOneof("event")
    if kind == "route":
        r = event.route
        ranked = ", ".join(f"{m.model} ({m.score:.2f})" for m in r.models)
        return (f"route:    cluster {r.cluster} (router {r.router_version}), {TASK_TYPE.name(r.task_type)}, "
                f"{ENSEMBLE_STRATEGY.name(r.strategy)}: {ranked}" + (" [cached]" if r.cached else ""))
    if kind == "sample":
        s = event.sample
        text = " ".join(s.text.split())
        shown = text if len(text) <= 100 else text[:100] + "..."
        return f"sample:   #{s.index} {s.model} ({s.completion_tokens} tokens): {shown}"
    if kind == "model_failed":
        return f"failed:   {event.model_failed.model}: {event.model_failed.reason}"
    return None


def cmd_ask(args: argparse.Namespace) -> int:
    from avengers.client import AvengersError

    if not args.query.strip():
        raise CommandError("the question is empty")
    with open_client(args) as client:
        try:
            if args.stream:
                response = None
                for event in client.ask_stream(args.query, **ask_options(args)):
                    if event.WhichOneof("event") == "result":
                        response = event.result
                    else:
                        print(as_json(event) if args.json else describe_event(event), flush=True)
                if response is None:
                    raise CommandError(f"gateway at {args.addr}: the stream ended without an answer")
                if not args.json:
                    print()
            else:
                response = client.ask(args.query, **ask_options(args))
        except AvengersError as exc:
            raise CommandError(f"gateway at {exc.address}: {exc.status}: {exc.details}") from None
    print(as_json(response) if args.json else describe(response, args.samples), flush=True)
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from avengers.client import AvengersError

    with open_client(args) as client:
        try:
            client.feedback(args.request_id, args.score, args.comment)
        except AvengersError as exc:
            raise CommandError(f"gateway at {exc.address}: {exc.status}: {exc.details}") from None
    print(f"feedback recorded for {args.request_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    addr_help = f"gateway host:port (default: ${GATEWAY_ADDR_ENV}, else 127.0.0.1:{DEFAULT_GATEWAY_PORT})"
    p = sub.add_parser("ask", help="ask the gateway a question and print the ensemble's answer")
    p.add_argument("query", help="the question")
    p.add_argument("--addr", default=default_address(), help=addr_help)
    p.add_argument("--n", type=positive_int, help="samples over all models (default: the gateway's, 10)")
    p.add_argument("--strategy", choices=strategy_choices(),
                   help="ensemble strategy (default: the gateway's, self-consistency)")
    p.add_argument("--switch-threshold", type=float,
                   help=f"model switch: agreement threshold (default: {DEFAULT_SWITCH_THRESHOLD})")
    p.add_argument("--k", "--top-k", dest="k", type=positive_int,
                   help="top-k-vote, score-weighted-vote, log-odds-vote: routed models that share the n samples "
                        "(default: the gateway's, 3)")
    p.add_argument("--task-type", choices=["math", "multiple-choice", "code", "free-text"],
                   help="how answers are extracted and compared (default: inferred from the question)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the gateway's, 0.7)")
    p.add_argument("--max-tokens", type=positive_int, help="tokens per sample (default: each model's)")
    p.add_argument("--seed", type=int, help="sampling seed (default: none, samples differ per call)")
    p.add_argument("--routing", choices=routing_choices(),
                   help="routing selector; the router must have it fitted (default: the router's)")
    p.add_argument("--vote", choices=["majority", "weighted"], help="vote method (default: majority)")
    p.add_argument("--test", action="append", help="code tasks: a test (repeatable; default: none)")
    p.add_argument("--entry-point", help="code tasks: the function under test (default: none)")
    p.add_argument("--task-id", help="task id (replay pools look answers up by it; default: none)")
    p.add_argument("--no-cache", action="store_true", help="skip the response cache")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds (default: %(default)s)")
    p.add_argument("--stream", action="store_true",
                   help="show the route, each sample as it completes and failed models, then the answer")
    p.add_argument("--json", action="store_true",
                   help="print the whole AskResponse as JSON, every field (with --stream: each event too)")
    p.add_argument("--samples", action="store_true", help="also print every sample")
    add_client_security_arguments(p)
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser("feedback", help="tell the gateway how good an answer was")
    p.add_argument("request_id", help="request id printed by `avengers ask`")
    p.add_argument("--score", type=float, required=True, help="outcome in [0, 1] (1 = correct)")
    p.add_argument("--comment", default="", help="free text kept with the score (default: none)")
    p.add_argument("--addr", default=default_address(), help=addr_help)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default: %(default)s)")
    add_client_security_arguments(p)
    p.set_defaults(handler=cmd_feedback)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (0 would silently mean "the gateway's default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} (leave the option out for the default)")
    return value


def routing_choices() -> list[str]:
    """The routing selectors the contract names (nearest, soft, knn, hknn, ...)."""
    from avengers.v1 import router_pb2

    values = router_pb2.RoutingStrategy.DESCRIPTOR.values[1:]
    return [v.name.removeprefix("ROUTING_STRATEGY_").lower() for v in values]


def strategy_choices() -> list[str]:
    """The ensemble strategies the contract names, as command-line words ("model-switch")."""
    from avengers.v1 import gateway_pb2

    values = gateway_pb2.EnsembleStrategy.DESCRIPTOR.values[1:]
    return [v.name.removeprefix("ENSEMBLE_STRATEGY_").lower().replace("_", "-") for v in values]
