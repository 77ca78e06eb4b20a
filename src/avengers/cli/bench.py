"""``avengers bench``: load-test one service over gRPC and print QPS, latency percentiles and errors by status."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import pydantic

from avengers.cli import CommandError
from avengers.config.gateway_service import EMBEDDER_ADDR_ENV, ROUTER_ADDR_ENV
from avengers.config.loadgen import LoadConfig
from avengers.loadgen import TARGETS, generated_queries, read_queries, run_load
from avengers.rpc.security import add_client_security_arguments, channel_from_args

GATEWAY_ADDR_ENV = "AVENGERS_GATEWAY_ADDR"
DEFAULT_ADDRESSES = {
    "embed": (EMBEDDER_ADDR_ENV, "127.0.0.1:50051"),
    "route": (ROUTER_ADDR_ENV, "127.0.0.1:50052"),
    "ask": (GATEWAY_ADDR_ENV, "127.0.0.1:50050"),
}


def default_address(target: str) -> str:
    env, fallback = DEFAULT_ADDRESSES[target]
    return os.environ.get(env) or fallback


def load_config(args: argparse.Namespace) -> LoadConfig:
    duration = args.duration
    if duration is None and args.requests is None:
        duration = 10.0
    return LoadConfig(
        target=args.target,
        address=args.addr or default_address(args.target),
        concurrency=args.concurrency,
        duration_seconds=duration,
        requests=args.requests,
        warmup_seconds=args.warmup,
        timeout_seconds=args.timeout,
        channels=args.channels,
        top_n=args.top_n,
        n=args.n,
        max_tokens=args.max_tokens,
        no_cache=not args.use_cache,
    )


async def bench(args: argparse.Namespace, config: LoadConfig):
    channels = [channel_from_args(args, config.address) for _ in range(config.channels)]
    try:
        queries = read_queries(args.queries) if args.queries else generated_queries()
        return await run_load(config, queries, channels=channels)
    finally:
        for channel in channels:
            await channel.close()


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise CommandError(problems) from None
    if args.queries and not Path(args.queries).is_file():
        raise CommandError(f"queries file not found: {args.queries}")
    result = asyncio.run(bench(args, config))
    print(result.summary(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": config.to_dict(), "result": result.to_dict()}, indent=2) + "\n")
    if args.max_errors is not None and result.requests - result.ok > args.max_errors:
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="load-test a service over gRPC (QPS, latency percentiles, errors)",
        description=__doc__
        + "\n\nTargets: embed (Embedder.Embed), route (Router.Route: embed + route), ask (Gateway.Ask end to end)."
        "\nEach of --concurrency clients sends its next request as soon as the last one ended.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", choices=TARGETS.names(), default="route", help="request kind (default: route)")
    p.add_argument(
        "--addr", help="host:port (default: $AVENGERS_EMBEDDER_ADDR / $AVENGERS_ROUTER_ADDR / $AVENGERS_GATEWAY_ADDR)"
    )
    p.add_argument("--concurrency", "-c", type=int, default=16, help="clients at once (default 16)")
    p.add_argument("--duration", "-d", type=float, help="measured seconds (default 10 unless --requests)")
    p.add_argument("--requests", "-n", type=int, help="measured requests (with --duration: whichever ends first)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of one request in seconds (default 30)")
    p.add_argument("--channels", type=int, default=1, help="gRPC connections to spread the clients over (default 1)")
    p.add_argument("--queries", metavar="FILE", help="labels file (JSON lines with 'query') or text lines; cycled")
    p.add_argument("--top-n", type=int, default=0, help="route: ranked models asked for (default all)")
    p.add_argument("--samples", dest="n", type=int, default=1, help="ask: samples per request (default 1)")
    p.add_argument("--max-tokens", type=int, default=0, help="ask: tokens per sample (default: the server's)")
    p.add_argument("--use-cache", action="store_true", help="ask: let the gateway answer from its response cache")
    p.add_argument("--json", metavar="OUT", help="also write config and results as JSON")
    p.add_argument("--max-errors", type=int, help="exit 1 when more requests than this failed")
    add_client_security_arguments(p)
    p.set_defaults(handler=cmd_bench)
