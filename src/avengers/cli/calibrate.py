"""``avengers calibrate-tasks`` (generate tasks with known answers) and ``avengers calibrate`` (measure a
model pool on them and write the labels a router is fitted on)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from pathlib import Path

from avengers.cli import CommandError
from avengers.cli.pool_access import add_price_option, measured_prices, model_pool_for
from avengers.core.ensemble import DependencyError, Sampling
from avengers.core.labels import LabelSet, write_labels
from avengers.tools.calibration import generate_tasks, measure, read_tasks, write_tasks
from avengers.tools.costs import describe_prices


def cmd_calibrate_tasks(args: argparse.Namespace) -> int:
    tasks = generate_tasks(args.count, args.seed)
    write_tasks(args.out, tasks)
    families = sorted({t.dataset for t in tasks})
    print(f"{len(tasks)} tasks ({', '.join(families)}) -> {args.out}")
    return 0


def summary(labels: LabelSet) -> str:
    """Mean score per dataset and model, as a small table."""
    by_dataset: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row in labels.rows:
        by_dataset[row.dataset].append(row.scores)
    width = max(len(d) for d in by_dataset) + 2
    lines = ["dataset".ljust(width) + "  ".join(m.rjust(18) for m in labels.models)]
    for dataset, rows in by_dataset.items():
        means = [sum(r[m] for r in rows) / len(rows) for m in labels.models]
        lines.append(dataset.ljust(width) + "  ".join(f"{v:18.3f}" for v in means))
    return "\n".join(lines)


async def run_calibration(args: argparse.Namespace) -> LabelSet:
    tasks = read_tasks(args.tasks)
    if args.limit:
        tasks = tasks[: args.limit]
    async with model_pool_for(args) as pool:
        models = args.models or await pool.list_models()
        prices = measured_prices(models, await pool.prices(), args)
        print(describe_prices(prices), file=sys.stderr)
        sampling = Sampling(n=args.samples, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
        print(
            f"calibrating {models} on {len(tasks)} tasks ({args.samples} samples, max_tokens {args.max_tokens})",
            file=sys.stderr,
        )
        step = max(1, len(tasks) // 10)

        def progress(model: str, done: int) -> None:
            if done % step == 0 or done == len(tasks):
                print(f"  {model}: {done}/{len(tasks)}", file=sys.stderr, flush=True)

        return await measure(tasks, models, pool, sampling, progress=progress, prices=prices)


def cmd_calibrate(args: argparse.Namespace) -> int:
    if bool(args.pool) == bool(args.model_pool_addr):
        raise ValueError("give exactly one of --pool (a model pool YAML run here) or --model-pool-addr")
    try:
        labels = asyncio.run(run_calibration(args))
    except DependencyError as exc:
        raise CommandError(str(exc)) from exc
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_labels(args.out, labels.rows)
    print(summary(labels))
    print(f"\n{len(labels)} labelled tasks x {len(labels.models)} models -> {args.out}")
    if labels.has_costs:
        means = {m: sum(r.costs[m] for r in labels.rows) / len(labels) for m in labels.models}  # type: ignore[index]
        print("mean cost per task (measured): " + ", ".join(f"{m} {c:.3g}" for m, c in means.items()))
    else:
        print("no costs (no model has a price): alpha routing needs price_per_million_tokens or --price")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate-tasks", help="generate calibration tasks with known answers")
    p.add_argument("--out", required=True, help="tasks file to write (JSONL)")
    p.add_argument("--count", type=int, default=160, help="number of tasks (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_calibrate_tasks)

    p = sub.add_parser(
        "calibrate",
        help="measure a model pool on tasks with known answers -> labels",
        description="Each model answers each task --samples times with the gateway's prompts; the voter's "
        "answer extraction scores the answers against the gold ones; the share of right answers is the "
        "model's score on the task (the labels format, ready for `avengers fit`). With a price for every model "
        "(the pool config's price_per_million_tokens, or --price), each row also gets its measured costs: the "
        "model's mean generated tokens on the task x its price (Avengers-Pro cost-aware routing, `alpha`).",
    )
    source = p.add_argument_group("model pool (one of)")
    source.add_argument("--pool", help="model pool YAML, run in this process")
    source.add_argument("--model-pool-addr", help="host:port of a running model pool")
    source.add_argument("--application", default="model_pool", help="Ray Serve app name sent as metadata")
    p.add_argument("--tasks", required=True, help="tasks file (from `avengers calibrate-tasks`)")
    p.add_argument("--out", required=True, help="labels file to write (JSONL)")
    p.add_argument("--models", nargs="+", help="models to measure (default: every model of the pool)")
    p.add_argument("--samples", type=int, default=3, help="samples per task and model (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=48, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (reproducible runs)")
    p.add_argument("--limit", type=int, default=0, help="only the first N tasks")
    add_price_option(p)
    p.set_defaults(handler=cmd_calibrate)
