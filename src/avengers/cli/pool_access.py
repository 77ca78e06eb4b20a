"""The model pool a command samples from: one run in this process from a pool YAML, or one at an address."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avengers.config.model_pool import ModelPoolConfig
from avengers.tools.costs import PricesError, prices_for


@asynccontextmanager
async def model_pool_for(args: argparse.Namespace, max_message_bytes: int = 64 * 1024 * 1024) -> AsyncIterator:
    """A :class:`~avengers.clients.ensemble.GrpcModelPoolClient` for ``--pool YAML`` (a standalone pool started here,
    stopped on exit) or ``--model-pool-addr HOST:PORT`` (with ``--application`` for Ray Serve)."""
    from avengers.clients.ensemble import GrpcModelPoolClient, open_channel

    server = None
    if args.pool:
        from avengers.services.model_pool.server import start_model_pool_server

        config = ModelPoolConfig.from_yaml(args.pool)
        print(f"starting the pool of {args.pool} ({', '.join(config.model_names)})", file=sys.stderr)
        server = await start_model_pool_server(config, "127.0.0.1:0")
        address, application = f"127.0.0.1:{server.port}", None
    else:
        address, application = args.model_pool_addr, args.application
    channel = open_channel(address, max_message_bytes)
    try:
        yield GrpcModelPoolClient(channel, address, application)
    finally:
        await channel.close()
        if server is not None:
            await server.stop(0)


def price_option(text: str) -> tuple[str, float]:
    """``MODEL=USD_PER_MTOK`` of ``--price`` (a finite number >= 0)."""
    model, sep, value = text.rpartition("=")
    try:
        price = float(value)
    except ValueError:
        price = float("nan")
    if not sep or not model or not price >= 0 or price == float("inf"):
        raise argparse.ArgumentTypeError(f"expected MODEL=PRICE (dollars per million tokens, >= 0), got {text!r}")
    return model, price


def add_price_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--price", type=price_option, action="append", default=[], metavar="MODEL=USD_PER_MTOK",
        help="price per million generated tokens of a model (repeatable; overrides the pool config's "
        "price_per_million_tokens). With a price for every model, the labels get measured costs "
        "(mean generated tokens x price) for cost-aware routing (`alpha`)",
    )


def measured_prices(models: list[str], pool_prices: dict[str, float], args: argparse.Namespace) -> dict[str, float] | None:
    """Each model's price from the pool (ListModels) overridden by ``--price``; None when no model has one.

    Raises PricesError for a ``--price`` of a model not measured, or when only some models have a price.
    """
    given = dict(args.price)
    unknown = sorted(set(given) - set(models))
    if unknown:
        raise PricesError(f"--price names models that are not measured: {unknown} (measured: {models})")
    return prices_for(models, {**pool_prices, **given})
