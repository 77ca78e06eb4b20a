"""``avengers evaluate``: the whole recipe (routing + voting) measured end to end on benchmarks with gold answers."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from avengers.cli import CommandError
from avengers.cli.pool_access import add_price_option, measured_prices, model_pool_for
from avengers.config.embedding import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig
from avengers.config.evaluate import GenerationConfig, SelectionConfig
from avengers.config.routing import SELECTORS
from avengers.config.tasks import CODE, FREE_TEXT
from avengers.core.embedding import create_embedder, default_cache_dir
from avengers.core.ensemble import DependencyError
from avengers.tools.costs import describe_prices
from avengers.tools.end_to_end.benchmarks import READERS, read_benchmarks
from avengers.tools.end_to_end.experiment import evaluate_recording
from avengers.tools.end_to_end.generation import generate_samples
from avengers.tools.end_to_end.replay import Replay
from avengers.tools.end_to_end.report import LABELS_FILE, write_report
from avengers.tools.end_to_end.samples import (
    SAMPLES_FILE,
    read_recording,
    recording_of,
    samples_path,
    write_samples,
)

DESCRIPTION = """\
Runs benchmarks with gold answers through the recipe and reports, in one run, per dataset and averaged over
datasets: each pool model alone (one greedy sample; and self-consistency over --n samples), the routed top-1
model, routed self-consistency, model switch (top-2, threshold 0.8), and the votes across the top-k routed
models (majority, score-weighted, log-odds weighted; k = 2 .. all), the oracle, and the best single model and
best ensemble strategy, both chosen on the calibration split; cost (tokens, engine calls, generation time);
and the best ensemble minus the best single model with a paired bootstrap 95% interval.

Generate once, vote many times: with --pool / --model-pool-addr every model answers every item once greedily
and --n times sampled, and every sample is recorded in DIR/samples.jsonl; --from-samples DIR_OR_FILE votes
again on a recording (this one, or outputs produced elsewhere) without generating.

The calibration split (--calibration-fraction of each dataset, by a seeded hash of the id; a row's "split"
wins) becomes labels (each model's share of right samples) on which the router is fitted with `avengers fit`'s
code; the router (selector, and K for the cluster selectors) and the best ensemble (strategy and k) are chosen
by cross-validation inside calibration;
the test split is only scored.

Recorded-samples format (JSONL, one sample a line; .gz accepted): id, dataset, query, answer (gold), task_type
(math | multiple_choice | code | free_text), model, text (raw output); optional: tokens (int; absent =
estimated from words), split ("calibration" | "test"), tests + entry_point (code), greedy (bool), seconds,
error. Any number of samples per model (one included); every model needs a sample of every query. A bad row
stops the command with one line naming file:line; outputs are written atomically.

Costs (Avengers-Pro, arXiv 2508.12631): with a price per million generated tokens for every model (the pool
config's price_per_million_tokens, reported by ListModels, or --price MODEL=USD_PER_MTOK; with --from-samples
only --price), each calibration label gets costs = the model's mean generated tokens on the query x its price,
so the fitted router can route with alpha. The labels are written to DIR/calibration_labels.jsonl.

Benchmarks (--benchmark, format detected, --format forces): the project's format (id, dataset, query,
answer, task_type [, tests, entry_point, split]; also `avengers calibrate-tasks` output), MultiArith / AddSub /
SingleEq (mawps), SVAMP, CommonsenseQA, StrategyQA, AQuA, GSM8K, HumanEval.

Writes DIR/report.json, DIR/report.md, DIR/report.png and DIR/charts/<dataset>.png."""


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    for name in names:
        try:
            SELECTORS.validate(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError("give at least one selector")
    return names


def _clusters(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("cluster counts must be positive integers")
    return values


async def _generate(args: argparse.Namespace, items: list, out: Path) -> tuple[list, dict[str, float] | None]:
    """The recorded samples, and each model's price (None: no model has one)."""
    async with model_pool_for(args) as pool:
        models = args.models or await pool.list_models()
        if not models:
            raise CommandError(f"the model pool at {pool.address} serves no model")
        prices = measured_prices(models, await pool.prices(), args)
        generation = GenerationConfig(
            n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed,
            concurrency=args.concurrency, timeout_seconds=args.timeout,
        )
        print(
            f"generating: {len(items)} items x {len(models)} models ({', '.join(models)}), 1 greedy + {args.n} "
            f"sampled each (T={args.temperature}, max_tokens {args.max_tokens})",
            file=sys.stderr,
        )
        partial = out / (SAMPLES_FILE + ".partial")
        samples = await generate_samples(items, models, pool, generation, partial=partial, progress=not args.quiet)
    write_samples(out / SAMPLES_FILE, samples)
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".settings").unlink(missing_ok=True)
    return samples, prices


def cmd_evaluate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.from_samples:
        if args.pool or args.model_pool_addr or args.benchmark:
            raise CommandError("--from-samples votes on a recording: give no --benchmark, --pool or --model-pool-addr")
    else:
        if not args.benchmark:
            raise CommandError("give --benchmark FILE (one or more), or --from-samples DIR_OR_FILE")
        if bool(args.pool) == bool(args.model_pool_addr):
            raise CommandError("give exactly one of --pool POOL.yaml (run here) or --model-pool-addr HOST:PORT")
    checks = [
        (1 <= args.n <= 64, f"--n {args.n} is outside [1, 64]"),
        (0 < args.calibration_fraction < 1, f"--calibration-fraction {args.calibration_fraction} is outside (0, 1)"),
        (args.limit >= 0, "--limit must be >= 0"),
        (args.folds >= 2, "--folds must be >= 2"),
        (args.bootstrap >= 100, "--bootstrap must be >= 100"),
        (args.concurrency >= 1 and args.max_tokens >= 1 and args.timeout > 0,
         "--concurrency, --max-tokens and --timeout must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise CommandError(message)
    out = Path(args.out)
    generation_seconds = None
    if args.from_samples:
        source = samples_path(args.from_samples)
        print(f"reading {source}", file=sys.stderr)
        recording = read_recording(source)
        prices = measured_prices(recording.models, {}, args)
    else:
        items = read_benchmarks(args.benchmark, args.format, args.limit)
        out.mkdir(parents=True, exist_ok=True)
        try:
            samples, prices = asyncio.run(_generate(args, items, out))
        except DependencyError as exc:
            raise CommandError(f"{exc} (samples so far are kept; the same command resumes)") from exc
        generation_seconds = round(time.perf_counter() - started, 1)
        recording = recording_of(samples, str(out / SAMPLES_FILE))
        source = out / SAMPLES_FILE
    print(
        f"{len(recording)} queries, {len(recording.models)} models, {recording.samples_per_model()} sampled "
        f"sample(s) per model and query",
        file=sys.stderr,
    )
    print(describe_prices(prices), file=sys.stderr)
    embedder = create_embedder(
        EmbeddingConfig(
            backend=args.embedder_backend,
            model=args.embedder,
            cache_dir=None if args.no_cache else args.cache_dir,
            threads=args.threads,
        )
    )
    queries = [q.query for q in recording.queries]
    print(f"embedding {len(queries)} queries ({embedder.name}; cached in {args.cache_dir})", file=sys.stderr)
    embeddings = embedder.encode(queries, show_progress=not args.quiet)
    task_types = {q.task_type for q in recording.queries}
    sandbox = None
    if CODE in task_types:
        from avengers.sandbox import create_sandbox

        sandbox = create_sandbox()
    embed = embedder.encode if FREE_TEXT in task_types else None
    selection = SelectionConfig(
        calibration_fraction=args.calibration_fraction,
        seed=args.seed,
        clusters=args.clusters,
        folds=args.folds,
        smoothing=args.smoothing,
        selectors=args.selectors,
        bootstrap=args.bootstrap,
    )
    evaluation = evaluate_recording(
        recording,
        embeddings,
        embedder.name,
        selection,
        n=args.n,
        replay=Replay(recording, sandbox=sandbox, embed=embed),
        progress=not args.quiet,
        status=lambda message: print(message, file=sys.stderr),
        prices=prices,
    )
    command = "avengers " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    extra = {
        "command": command,
        "samples": str(source),
        "benchmarks": list(args.benchmark or []),
        "n": args.n,
        "wall_seconds": {"generation": generation_seconds, "total": round(time.perf_counter() - started, 1)},
        "machine": f"{os.cpu_count()} CPUs",
    }
    report = write_report(evaluation, out, extra, command)
    best, single = report["best_ensemble"], report["best_single"]
    print(f"\nbest single (chosen on calibration): {single['name']}  {100 * single['accuracy']:.2f}")
    ci = best["ci95"]
    print(
        f"best ensemble (chosen on calibration): {best['name']} (router {best['router']})  "
        f"{100 * best['accuracy']:.2f}  difference {100 * best['difference']:+.2f} "
        f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    )
    costs = "with measured costs" if prices else "no costs (no prices)"
    print(f"calibration labels ({costs}): {out / LABELS_FILE}")
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure routing + voting end to end on benchmarks (generate once, vote many times)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", action="append", metavar="FILE", help="benchmark file (repeatable)")
    source = p.add_argument_group("model pool (one of, unless --from-samples)")
    source.add_argument("--pool", metavar="POOL.yaml", help="model pool YAML, run in this process")
    source.add_argument("--model-pool-addr", metavar="HOST:PORT", help="a running model pool")
    source.add_argument("--application", default="model_pool", help="Ray Serve app name sent as metadata")
    source.add_argument("--models", nargs="+", help="models to measure (default: every model of the pool)")
    p.add_argument("--from-samples", metavar="DIR_OR_FILE", help="vote again on a recording instead of generating")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for samples.jsonl and the report")
    p.add_argument("--format", choices=sorted(READERS), help="benchmark format (default: detected per file)")
    p.add_argument("--n", type=int, default=10, help="sampled samples per model and query (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="first N items of each benchmark (0: all)")
    p.add_argument("--calibration-fraction", type=float, default=0.5, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="split, folds, bootstrap and sampling seed (default: %(default)s)")
    add_price_option(p)
    g = p.add_argument_group("generation")
    g.add_argument("--temperature", type=float, default=0.7, help="of the n sampled samples (default: %(default)s)")
    g.add_argument("--max-tokens", type=int, default=256, help="(default: %(default)s)")
    g.add_argument("--concurrency", type=int, default=1, help="requests in flight per model (default: %(default)s)")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per Generate call (default: %(default)s)")
    g = p.add_argument_group("choices made on calibration")
    g.add_argument(
        "--clusters", type=_clusters, default=SelectionConfig().clusters, metavar="K,K,...",
        help="K values tried with the cluster selectors (default: 1,4,8,16,32,64)",
    )
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds inside calibration (default: %(default)s)")
    g.add_argument("--smoothing", type=float, default=0.0, help="router score smoothing (default: %(default)s)")
    g.add_argument(
        "--selectors", type=_names, default=SelectionConfig().selectors, metavar="NAME,NAME,...",
        help=f"routing selectors tried (default: {','.join(SelectionConfig().selectors)}; known: "
        f"{', '.join(SELECTORS.names())})",
    )
    g.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    g = p.add_argument_group("embedding")
    g.add_argument("--embedder", default=DEFAULT_EMBEDDING_MODEL, help="model name or local path (default: %(default)s)")
    g.add_argument("--embedder-backend", default="sentence-transformers", help="(default: %(default)s)")
    # The process-wide `avengers --threads N` given after the command; SUPPRESS keeps an `avengers --threads N
    # evaluate ...` from being reset to the default by this subparser.
    g.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="as `avengers --threads N`: threads of every compute pool, embedding included")
    g.add_argument("--cache-dir", default=str(default_cache_dir() / "embeddings"), help="(default: %(default)s)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_evaluate)
