"""Router versions in the centroid store: ``publish``, ``refit --with-feedback``, ``routers list|activate|delete``.

Routers serving from the store poll its active version and switch to a newly activated one atomically.
With embedded Qdrant (a directory, no server) a running router opens the directory only during its
brief polls, so these commands wait for it and then proceed; a process that keeps the directory open
makes them fail with a message (run a Qdrant server and set QDRANT_URL for such setups).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from avengers.cli import CommandError
from avengers.config.store import StoreConfig
from avengers.core.artifact import RouterArtifact
from avengers.stores import CentroidStore, StoreError, create_store


def add_store_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("centroid store (default: $QDRANT_URL, else embedded Qdrant)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--qdrant-url", help="Qdrant server URL (API key from $QDRANT_API_KEY)")
    where.add_argument("--qdrant-path", help="embedded Qdrant directory (default: $AVENGERS_QDRANT_PATH or ~/.cache/avengers/qdrant)")
    where.add_argument("--store-dir", help="use the directory store rooted here instead of Qdrant")
    g.add_argument("--store-config", metavar="YAML", help="StoreConfig file (aliases, prefix, API key file, ...); flags win")


def store_config_from_args(args: argparse.Namespace) -> StoreConfig:
    base = StoreConfig.from_yaml(args.store_config) if args.store_config else StoreConfig()
    update: dict[str, object] = {}
    if args.qdrant_url:
        update = {"backend": "qdrant", "qdrant_url": args.qdrant_url}
    elif args.qdrant_path:
        update = {"backend": "qdrant", "qdrant_path": args.qdrant_path, "qdrant_url": None}
    elif args.store_dir:
        update = {"backend": "directory", "directory": args.store_dir}
    return StoreConfig.model_validate({**base.to_dict(), **update})


def open_store(args: argparse.Namespace) -> CentroidStore:
    try:
        return create_store(store_config_from_args(args))
    except StoreError as exc:
        raise CommandError(str(exc)) from None


def run_store_command(args: argparse.Namespace, action: Callable[[CentroidStore], object]) -> int:
    """Run ``action`` on the store named by the arguments; store errors become one clear line."""
    with open_store(args) as store:
        try:
            return int(action(store) or 0)
        except StoreError as exc:
            raise CommandError(str(exc)) from None


def cmd_publish(args: argparse.Namespace) -> int:
    artifact = RouterArtifact.load(args.router)

    def publish(store: CentroidStore) -> None:
        version = store.publish(artifact)
        summary = (
            f"router {version}: {artifact.k} clusters, {len(artifact.models)} models, "
            f"embedder {artifact.embedder_model} ({artifact.embedder_dimension})"
        )
        if args.no_activate:
            print(f"published {summary} to {store.describe()}; activate it with `avengers routers activate {version}`")
            return
        store.activate(version)
        print(f"published and activated {summary} in {store.describe()}; routers switch at their next poll")
        if args.keep:
            for old in store.prune(args.keep):
                print(f"deleted old router {old}")

    return run_store_command(args, publish)


def read_feedback(args: argparse.Namespace, artifact: RouterArtifact):
    """(k, m) feedback counts and sums of ``artifact``'s version from the gateways' Redis."""
    import asyncio

    from avengers.config.state import FeedbackConfig, RedisConfig
    from avengers.state.connection import RedisConnection, StateError
    from avengers.state.feedback import RedisFeedbackStore, tally_matrices

    url = args.redis_url or RedisConfig().url
    if not url:
        raise CommandError("--with-feedback reads the gateways' feedback from Redis: pass --redis-url or set REDIS_URL")
    redis_config = RedisConfig(url=url, **({"key_prefix": args.key_prefix} if args.key_prefix is not None else {}))

    async def read():
        connection = RedisConnection(redis_config)
        try:
            return await RedisFeedbackStore(FeedbackConfig(backend="redis"), connection).tallies(artifact.version)
        finally:
            await connection.close()

    try:
        tallies = asyncio.run(read())
    except StateError as exc:
        raise CommandError(str(exc)) from None
    return tally_matrices(tallies, artifact.models, artifact.k)


def cmd_refit(args: argparse.Namespace) -> int:
    if not args.with_feedback:
        raise CommandError("nothing to refit: pass --with-feedback (calibration + the feedback on the router)")
    if args.router:
        artifact = RouterArtifact.load(args.router)
    else:
        with open_store(args) as store:
            try:
                artifact = store.load(args.version) if args.version else store.load_active()
            except StoreError as exc:
                raise CommandError(str(exc)) from None
    counts, sums = read_feedback(args, artifact)
    refit = artifact.with_feedback(counts, sums, args.feedback_weight)
    touched = int((counts.sum(axis=1) > 0).sum())
    print(
        f"router {artifact.version} + {int(counts.sum())} feedback observations on {touched} of {artifact.k} clusters "
        f"(prior weight {refit.feedback_weight:g}) -> router {refit.version}"
    )
    if args.out:
        refit.save(args.out)
        print(f"wrote {args.out}")
    if args.no_publish:
        return 0

    def publish(store: CentroidStore) -> None:
        version = store.publish(refit)
        if args.no_activate:
            print(f"published {version} to {store.describe()}; activate it with `avengers routers activate {version}`")
            return
        store.activate(version)
        print(f"published and activated {version} in {store.describe()}; routers switch at their next poll")

    return run_store_command(args, publish)


def cmd_list(args: argparse.Namespace) -> int:
    def show(store: CentroidStore) -> None:
        routers = store.list_versions()
        if args.json:
            json.dump([r.__dict__ for r in routers], sys.stdout, indent=2)
            print()
            return
        if not routers:
            print(f"no routers in {store.describe()}")
            return
        print(f"{'':2}{'version':<18}{'created':<27}{'clusters':>9}  {'models':>6}  embedder")
        for r in routers:
            mark = "* " if r.active else "  "
            print(f"{mark}{r.version:<18}{r.created_at:<27}{r.num_clusters:>9}  {len(r.models):>6}  {r.embedder_model} ({r.dimension})")

    return run_store_command(args, show)


def cmd_activate(args: argparse.Namespace) -> int:
    def activate(store: CentroidStore) -> None:
        store.activate(args.version)
        print(f"activated router {args.version} in {store.describe()}")

    return run_store_command(args, activate)


def cmd_delete(args: argparse.Namespace) -> int:
    def delete(store: CentroidStore) -> None:
        store.delete(args.version, force=args.force)
        print(f"deleted router {args.version} from {store.describe()}")

    return run_store_command(args, delete)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish a fitted router to the centroid store and activate it")
    p.add_argument("--router", required=True, help="router directory (from `avengers fit`)")
    p.add_argument("--no-activate", action="store_true", help="publish only; keep the active version")
    p.add_argument("--keep", type=int, metavar="N", help="after activating, delete all but the N newest versions")
    add_store_args(p)
    p.set_defaults(handler=cmd_publish)

    p = sub.add_parser(
        "refit", help="publish a new router version from a router's calibration scores plus the feedback on it"
    )
    p.add_argument("--with-feedback", action="store_true", help="fold the feedback tallies kept in Redis into the scores")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--router", help="router directory (default: the store's active version, or --version)")
    src.add_argument("--version", help="published version to refit (default: the active one)")
    p.add_argument("--redis-url", help="Redis the gateways keep feedback in (default: $REDIS_URL)")
    p.add_argument("--key-prefix", help="the gateways' Redis key prefix (default: avengers:)")
    p.add_argument("--feedback-weight", type=float, help="pseudo-observations behind each calibration score (default 10)")
    p.add_argument("--out", help="also write the new router directory here")
    p.add_argument("--no-publish", action="store_true", help="do not publish (with --out: only write the directory)")
    p.add_argument("--no-activate", action="store_true", help="publish only; keep the active version")
    add_store_args(p)
    p.set_defaults(handler=cmd_refit)

    p = sub.add_parser("routers", help="list, activate or delete published routers")
    actions = p.add_subparsers(dest="routers_command", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="published versions, newest first (* = active)")
    a.add_argument("--json", action="store_true", help="print JSON")
    add_store_args(a)
    a.set_defaults(handler=cmd_list)
    a = actions.add_parser("activate", help="switch the active router (atomically)")
    a.add_argument("version")
    add_store_args(a)
    a.set_defaults(handler=cmd_activate)
    a = actions.add_parser("delete", help="remove a published version")
    a.add_argument("version")
    a.add_argument("--force", action="store_true", help="also the active one (routers keep their last snapshot)")
    add_store_args(a)
    a.set_defaults(handler=cmd_delete)
