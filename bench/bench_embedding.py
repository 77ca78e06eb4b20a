"""Embedding backends side by side in ONE run: in-process encode throughput on RouterDC queries, and (options)
the routed accuracy each gives and the cold time of `avengers fit`.

    .venv/bin/python bench/bench_embedding.py [--json [PATH]] [--threads 1] [--rounds 3] \
        [--accuracy] [--fit-cold] [--write-docs docs/BENCHMARKS.md]

Backends (``--variants``): torch fp32 (sentence-transformers, the CPU default: length-bucketed passes), ONNX fp32,
ONNX int8 (one text per pass, their default), ONNX int8 with ``max_seq_tokens`` 128 and 64.

Throughput. "single": each of ``--single`` queries encoded alone (the route path at 1 client); "batched": ``--batched``
other queries in calls of 64 (what the micro-batcher hands the model under load). Each round measures every backend
in turn on the same queries (order rotated from round to round), so the machine's other load falls on all alike;
the report takes each backend's median round, and the int8/torch ratio is the median of the per-round ratios.
Rates are wall-clock queries/s and process CPU ms per query (CPU time moves less with other processes' load than
wall time, but is not immune: shared caches and cores). The last line printed is
``onnx_int8_vs_torch_fp32=<batched rate ratio>``.

``--accuracy``: every backend embeds RouterDC train/test/ood (through the embedding cache, ``--cache-dir``), then for
each K and strategy a router is fitted on its own train vectors and evaluated on its own test/ood vectors ("fit and
serve with it"), and the router fitted with torch is evaluated on its test/ood vectors ("serve a torch-fitted
router"): mean routed score over datasets (%), as ``avengers eval``, and the share of test queries that land in
the same cluster as with torch.

``--fit-cold``: ``avengers fit`` on RouterDC train in a subprocess, with no embedding cache and (ONNX) no export yet:
torch fp32 and ONNX int8, wall seconds each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROUTERDC = REPO.parent / "shared" / "data" / "routerdc"
DOCS_MARK = "<!-- bench_embedding:{edge} -->"
TARGET_RATIO = 3.0
TARGET_ACCURACY_POINTS = 0.3
TARGET_FIT_SECONDS = 300.0

VARIANTS: dict[str, dict[str, Any]] = {
    "torch-fp32": {},
    "onnx-fp32": {"backend": "onnx", "onnx_precision": "fp32"},
    "onnx-int8": {"backend": "onnx"},
    "onnx-int8-max128": {"backend": "onnx", "max_seq_tokens": 128},
    "onnx-int8-max64": {"backend": "onnx", "max_seq_tokens": 64},
}
REFERENCE, CANDIDATE = "torch-fp32", "onnx-int8"


def load_averages() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    from avengers.config.threads import usable_cpus

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpu_model": cpu,
        "usable_cpus": usable_cpus(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": load_averages(),
    }


# ------------------------------------------------------------------------------------------------- throughput


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(embedder, single: list[str], batched: list[str], batch: int) -> dict[str, float]:
    latencies = []
    single_cpu = 0.0
    for text in single:
        wall, cpu = timed(lambda t=text: embedder.encode([t]))
        latencies.append(wall)
        single_cpu += cpu

    def run_batched():
        for i in range(0, len(batched), batch):
            embedder.encode(batched[i : i + batch])

    wall, cpu = timed(run_batched)
    ms = np.asarray(latencies) * 1000
    return {
        "single_p50_ms": float(np.percentile(ms, 50)),
        "single_p90_ms": float(np.percentile(ms, 90)),
        "single_qps": len(single) / float(np.sum(latencies)),
        "single_cpu_ms": 1000 * single_cpu / len(single),
        "batched_qps": len(batched) / wall,
        "batched_cpu_ms": 1000 * cpu / len(batched),
    }


def throughput(args: argparse.Namespace, queries: list[str]) -> dict[str, Any]:
    from avengers.config.embedding import EmbeddingConfig
    from avengers.core.embedding import create_embedder

    single, batched = queries[: args.single], queries[args.single : args.single + args.batched]
    warm = queries[args.single + args.batched : args.single + args.batched + 16]
    embedders = {}
    for name in args.variants:
        started = time.perf_counter()
        embedders[name] = create_embedder(EmbeddingConfig(**VARIANTS[name], onnx_dir=args.onnx_dir))
        embedders[name].encode(warm)
        print(f"[{name}] loaded in {time.perf_counter() - started:.1f} s", flush=True)
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = args.variants[r % len(args.variants) :] + args.variants[: r % len(args.variants)]
        this = {}
        for name in order:
            this[name] = {**measure(embedders[name], single, batched, args.batch), "load": os.getloadavg()[0]}
            print(
                f"round {r + 1} {name}: {json.dumps({k: round(v, 2) for k, v in this[name].items()})}",
                flush=True,
            )
        rounds.append(this)
    by_variant = {}
    for name in args.variants:
        runs = [rnd[name] for rnd in rounds]
        by_variant[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    ratios = {}
    if REFERENCE in args.variants:
        for name in args.variants:
            ratios[name] = {
                "batched_qps": statistics.median(
                    rnd[name]["batched_qps"] / rnd[REFERENCE]["batched_qps"] for rnd in rounds
                ),
                "single_qps": statistics.median(
                    rnd[name]["single_qps"] / rnd[REFERENCE]["single_qps"] for rnd in rounds
                ),
                "batched_cpu": statistics.median(
                    rnd[REFERENCE]["batched_cpu_ms"] / rnd[name]["batched_cpu_ms"] for rnd in rounds
                ),
            }
    return {
        "single_queries": len(single),
        "batched_queries": len(batched),
        "batch": args.batch,
        "rounds": rounds,
        "median": by_variant,
        "vs_torch_fp32": ratios,
    }


# --------------------------------------------------------------------------------------------------- accuracy


def routed_scores(artifact, labels, vectors: np.ndarray, routing) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the score of the model the router picks (as ``avengers eval``), and the nearest cluster."""
    chosen, nearest = artifact.router(routing).choose(vectors, routing)
    return labels.score_matrix(artifact.models)[np.arange(len(labels)), chosen], nearest


def paired_delta(
    base: np.ndarray, other: np.ndarray, groups: list[np.ndarray], resamples: int = 1000
) -> list[float]:
    """[delta, low, high]: the mean-over-datasets routed score of ``other`` minus ``base`` (points), with a 95%
    paired bootstrap interval (queries resampled within each dataset, the same queries for both)."""
    rng = np.random.default_rng(0)
    point = 100 * float(np.mean([(other[g] - base[g]).mean() for g in groups]))
    draws = np.zeros(resamples)
    for g in groups:
        difference = other[g] - base[g]
        draws += difference[rng.integers(0, len(g), size=(resamples, len(g)))].mean(axis=1)
    draws *= 100 / len(groups)
    return [point, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    from avengers.config.clustering import ClusteringConfig
    from avengers.config.embedding import EmbeddingConfig
    from avengers.config.routing import CLUSTER_SELECTORS, RoutingConfig, SelectorsConfig
    from avengers.core.embedding import create_embedder
    from avengers.core.fit import fit_router_on_embeddings
    from avengers.core.labels import read_labels

    splits = {name: read_labels(ROUTERDC / f"{name}.jsonl") for name in ("train", "test", "ood")}
    groups = {
        s: [np.flatnonzero(np.array(ls.datasets) == d) for d in ls.dataset_names] for s, ls in splits.items()
    }
    vectors: dict[str, dict[str, np.ndarray]] = {}
    embed_seconds = {}
    for name in args.variants:
        embedder = create_embedder(
            EmbeddingConfig(**VARIANTS[name], onnx_dir=args.onnx_dir, cache_dir=args.cache_dir)
        )
        started = time.perf_counter()
        vectors[name] = {
            split: embedder.encode(labels.queries, show_progress=True) for split, labels in splits.items()
        }
        embed_seconds[name] = round(time.perf_counter() - started, 1)
        print(
            f"[{name}] train/test/ood embedded in {embed_seconds[name]} s (cached vectors are read, not embedded)",
            flush=True,
        )

    results: list[dict[str, Any]] = []
    for strategy, k in args.routes:
        learned = [] if strategy in CLUSTER_SELECTORS else [strategy]
        clustering, routing = ClusteringConfig(k=k, seed=42), RoutingConfig(strategy=strategy)
        routers = {
            name: fit_router_on_embeddings(
                splits["train"],
                vectors[name]["train"],
                name,
                clustering,
                routing=routing,
                selectors=SelectorsConfig(fit=learned),
            )
            for name in args.variants
        }
        reference = routers[REFERENCE]
        base = {
            split: routed_scores(reference, splits[split], vectors[REFERENCE][split], routing)
            for split in ("test", "ood")
        }
        for name in args.variants:
            row: dict[str, Any] = {"k": k, "strategy": strategy, "variant": name}
            for split in ("test", "ood"):
                own, _ = routed_scores(routers[name], splits[split], vectors[name][split], routing)
                served, clusters = routed_scores(reference, splits[split], vectors[name][split], routing)
                row[f"{split}_own"] = 100 * float(np.mean([own[g].mean() for g in groups[split]]))
                row[f"{split}_torch_router"] = 100 * float(np.mean([served[g].mean() for g in groups[split]]))
                row[f"{split}_own_delta"] = paired_delta(base[split][0], own, groups[split])
                # every query weighing the same (the dataset average weighs one of humaneval's 49 like 86 of mmlu's)
                row[f"{split}_own_query_delta"] = paired_delta(base[split][0], own, [np.arange(len(own))])
                row[f"{split}_torch_router_delta"] = paired_delta(base[split][0], served, groups[split])
                if split == "test":
                    row["same_cluster_share"] = float(np.mean(clusters == base[split][1]))
                    # per dataset: torch's and this backend's routed score, and the queries whose pick changed
                    chosen = base[split][0]
                    row["test_own_by_dataset"] = {
                        d: [
                            100 * float(chosen[g].mean()),
                            100 * float(own[g].mean()),
                            int(np.sum(own[g] != chosen[g])),
                        ]
                        for d, g in zip(splits[split].dataset_names, groups[split])
                    }
            results.append(row)
            print(json.dumps(row, default=lambda v: round(v, 3)), flush=True)
    return {
        "results": results,
        "embed_seconds": embed_seconds,
        "rows": {s: len(v) for s, v in splits.items()},
    }


# ------------------------------------------------------------------------------------------------- cold fit


def fit_cold(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for name, flags in (("torch-fp32", []), ("onnx-int8", ["--embedder-backend", "onnx"])):
        with tempfile.TemporaryDirectory(prefix="fit-cold-") as home:
            command = [
                sys.executable, "-m", "avengers", "fit", "--labels", str(ROUTERDC / "train.jsonl"),
                "--k", str(args.fit_k), "--no-cache", "--out", f"{home}/router", *flags,
            ]  # fmt: skip
            env = {**os.environ, "AVENGERS_CACHE_DIR": home}  # no embedding cache, no ONNX export yet
            load = load_averages()
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            shown = ["avengers", *command[3:]]
            runs.append({"variant": name, "command": " ".join(shown).replace(home, "$TMP"), "seconds": round(seconds, 1),
                         "load_average_at_start": load, "load_average_at_end": load_averages()})  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
    return runs


# ------------------------------------------------------------------------------------------------------ report


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        DOCS_MARK.format(edge="start"),
        "## Embedding backends on the CPU: throughput, routed accuracy, cold fit (`bench/bench_embedding.py`)",
        "",
        f"Run {results['date']} with `{results['command']}`.",
        "",
        (
            f"Machine: {m['usable_cpus']} usable CPUs ({m['cpu_model']}), no GPU, shared with other sessions' work: "
            f"load average {m['load_average_at_start'][0]:.1f} at the start and {results['load_average_at_end'][0]:.1f} "
            "at the end (1-minute), so absolute rates are depressed and noisy; ratios come from the same rounds. "
            f"{m['threads']} thread(s) per compute pool; torch {m['torch']}, ONNX Runtime {m['onnxruntime']}, "
            f"Python {m['python']}."
        ),
    ]
    t = results.get("throughput")
    if t:
        lines += [
            "",
            (
                f"Throughput: RouterDC test queries; single = {t['single_queries']} queries encoded one per call, "
                f"batched = {t['batched_queries']} other queries in calls of {t['batch']}; median of "
                f"{len(t['rounds'])} rounds (load average during each measurement: "
                f"{min(r['load'] for rnd in t['rounds'] for r in rnd.values()):.1f}-"
                f"{max(r['load'] for rnd in t['rounds'] for r in rnd.values()):.1f})."
            ),
            "",
            "| backend | single p50 ms | single q/s | batched q/s | CPU ms/query (batched) | batched vs torch fp32 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in t["median"].items():
            ratio = t["vs_torch_fp32"].get(name, {}).get("batched_qps")
            lines.append(
                f"| {name} | {r['single_p50_ms']:.1f} | {r['single_qps']:.1f} | {r['batched_qps']:.1f} | "
                f"{r['batched_cpu_ms']:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |"
            )
        ratio = t["vs_torch_fp32"].get(CANDIDATE, {})
        if ratio:
            verdict = "met" if ratio["batched_qps"] >= TARGET_RATIO else "**missed**"
            lines += [
                "",
                (
                    f"ONNX int8 vs torch fp32, batched: **{ratio['batched_qps']:.2f}x** the rate (target >= "
                    f"{TARGET_RATIO:g}x: {verdict}); {ratio['batched_cpu']:.2f}x less CPU per query; single queries "
                    f"{ratio['single_qps']:.2f}x the rate."
                ),
            ]
    if results.get("accuracy"):
        a = results["accuracy"]

        def delta(d: list[float]) -> str:
            return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"

        lines += [
            "",
            (
                f"Routed accuracy on RouterDC (train {a['rows']['train']} -> test {a['rows']['test']} / ood "
                f"{a['rows']['ood']}): mean routed score over datasets, %, as `avengers eval`. *own*: the router fitted "
                "on that backend's train vectors, queried with its vectors; *torch router*: the router fitted with torch "
                "fp32, queried with that backend's vectors (a router serves any backend of its model). Each delta is "
                "against torch fp32 on the same queries, with a 95% paired bootstrap interval (queries resampled within "
                "each dataset); *same cluster*: test queries whose nearest centroid (torch router) is the one torch's "
                "vector gets. *delta per query*: the same with every test query weighing the same (in the mean over datasets one "
                "of humaneval's 49 queries weighs 0.41 points, one of mmlu's 4,213 0.005). k-means++, seed 42; hknn does "
                "not use the clusters."
            ),
            "",
            (
                "| strategy, K | backend | test own | delta | delta per query | test torch router | delta | ood own | delta | "
                "ood torch router | delta | same cluster |"
            ),
            "|---|---|---:|---|---|---:|---|---:|---|---:|---|---:|",
        ]
        for row in a["results"]:
            lines.append(
                f"| {row['strategy']}, {row['k']} | {row['variant']} | {row['test_own']:.2f} | {delta(row['test_own_delta'])} | "
                f"{delta(row['test_own_query_delta'])} | "
                f"{row['test_torch_router']:.2f} | {delta(row['test_torch_router_delta'])} | {row['ood_own']:.2f} | "
                f"{delta(row['ood_own_delta'])} | {row['ood_torch_router']:.2f} | {delta(row['ood_torch_router_delta'])} | "
                f"{100 * row['same_cluster_share']:.1f}% |"
            )
        rows = [r for r in a["results"] if r["variant"] == CANDIDATE and "test_own_by_dataset" in r]
        if rows:
            names = list(rows[0]["test_own_by_dataset"])
            lines += [
                "",
                (
                    f"Per dataset, {CANDIDATE} against torch fp32 (test, own router): routed score, torch -> {CANDIDATE} "
                    "(test queries whose routed score changed):"
                ),
                "",
                "| strategy, K | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names),
            ]
            for r in rows:
                cells = [
                    f"{t:.2f} -> {v:.2f} ({n})" for t, v, n in (r["test_own_by_dataset"][d] for d in names)
                ]
                lines.append(f"| {r['strategy']}, {r['k']} | " + " | ".join(cells) + " |")
    if results.get("fit_cold"):
        lines += [
            "",
            "`avengers fit` on RouterDC train, cold (no embedding cache; ONNX: no export yet, so it includes the export):",
            "",
        ]
        lines += [
            "| backend | command | wall s | load average at start / end | target <= 300 s |",
            "|---|---|---:|---|---|",
        ]
        for run in results["fit_cold"]:
            verdict = "met" if run["seconds"] <= TARGET_FIT_SECONDS else "**missed**"
            lines.append(
                f"| {run['variant']} | `{run['command']}` | {run['seconds']:.0f} | "
                f"{run['load_average_at_start'][0]:.1f} / {run['load_average_at_end'][0]:.1f} | {verdict} |"
            )
    if results.get("notes"):
        lines += ["", results["notes"]]
    lines += ["", DOCS_MARK.format(edge="end")]
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (between its markers), or append it."""
    start, end = DOCS_MARK.format(edge="start"), DOCS_MARK.format(edge="end")
    text = path.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS)
    )
    p.add_argument("--threads", type=int, default=1, help="threads of every compute pool (avengers.threads)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput rounds")
    p.add_argument("--single", type=int, default=200, help="queries encoded one per call")
    p.add_argument("--batched", type=int, default=640, help="queries encoded in calls of --batch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--accuracy", action="store_true", help="routed accuracy on RouterDC for each backend")
    p.add_argument(
        "--routes",
        default="nearest:16,nearest:32,nearest:64,hknn:32",
        help="--accuracy: STRATEGY:K pairs, comma-separated (the paper's nearest centroid; hknn, the fitted default)",
    )
    p.add_argument("--cache-dir", help="--accuracy: embedding cache (default: ~/.cache/avengers/embeddings)")
    p.add_argument("--onnx-dir", help="ONNX exports (default: ~/.cache/avengers/onnx)")
    p.add_argument("--fit-cold", action="store_true", help="time `avengers fit` on RouterDC train, cold")
    p.add_argument("--fit-k", type=int, default=64, help="--fit-cold: K")
    p.add_argument("--json", nargs="?", const="-", help="print all results as JSON (or write them to PATH)")
    p.add_argument(
        "--write-docs", help="replace (or append) this benchmark's section in the given Markdown file"
    )
    p.add_argument("--notes", help="a paragraph added under the tables")
    p.add_argument("--render", metavar="JSON", help="no run: report the results saved by --json PATH")
    p.add_argument(
        "--update", metavar="JSON", help="run only the phases asked and replace them in this saved run"
    )
    args = p.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    args.routes = [(r.split(":")[0], int(r.split(":")[1])) for r in args.routes.split(",") if r]
    return args


def save(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Write the results so far to ``--json PATH`` (a later phase failing keeps the earlier ones: ``--render``)."""
    if args.json and args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"load_average_at_end": load_averages(), **results}, indent=2, default=str) + "\n"
        )


def main() -> None:
    args = parse_args()
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        from avengers.core.embedding import default_cache_dir
        from avengers.threads import apply_thread_limits

        apply_thread_limits(args.threads)
        args.cache_dir = args.cache_dir or str(default_cache_dir() / "embeddings")
        if not (ROUTERDC / "test.jsonl").is_file():
            sys.exit(f"needs the RouterDC labels at {ROUTERDC}")
        rows = [json.loads(line) for line in (ROUTERDC / "test.jsonl").open()]
        queries = [r["query"] for r in random.Random(0).sample(rows, args.single + args.batched + 16)]
        command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        if args.update:  # an earlier run, some of whose phases are run again now
            results = json.loads(Path(args.update).read_text())
            results["command"] = f"{results['command']}` then `{command}"
        else:
            results = {
                "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "command": command,
                "machine": machine(args.threads),
            }
        if not args.no_throughput:
            results["throughput"] = throughput(args, queries)
        save(args, results)
        if args.accuracy:
            results["accuracy"] = accuracy(args)
            save(args, results)
        if args.fit_cold:
            results["fit_cold"] = fit_cold(args)
        if not args.update:
            results["load_average_at_end"] = load_averages()
    if args.notes:
        results["notes"] = args.notes
    report = markdown(results)
    if args.write_docs:
        write_docs(Path(args.write_docs), report)
    print(report)
    if args.json:
        text = json.dumps(results, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    ratio = results.get("throughput", {}).get("vs_torch_fp32", {}).get(CANDIDATE, {}).get("batched_qps")
    print(f"onnx_int8_vs_torch_fp32={ratio:.2f}" if ratio is not None else "onnx_int8_vs_torch_fp32=nan")


if __name__ == "__main__":
    main()
