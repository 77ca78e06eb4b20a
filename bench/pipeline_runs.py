"""Run ``bench/bench_pipeline.py`` several times and report the spread: how much a shared machine moves it.

    .venv/bin/python bench/pipeline_runs.py [--runs 5] [--out runs/pipeline_runs] [-- ARGS FOR bench_pipeline.py]
    .venv/bin/python bench/pipeline_runs.py --summarise runs/pipeline_runs     # no run: the table of saved runs

Default arguments of each run: ``--embedding hashing --single-queries 1000 --throughput-queries 4000`` (the
serving path without an embedding model, as in docs/BENCHMARKS.md). Each run's JSON goes to ``--out``; the
table lists, per run, the load average at its start, Ask/s and errors at 64 clients and Route/s at 1 and 64
clients, then the range over the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_ARGS = ["--embedding", "hashing", "--single-queries", "1000", "--throughput-queries", "4000"]


def summarise(files: list[Path]) -> str:
    runs = [json.loads(f.read_text()) for f in sorted(files)]
    lines = [
        "| run | load average at start | Ask/s (64 clients) | Ask errors | Route/s (1 client) | Route/s (64 clients) |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        ask = r["ask_64"]
        lines.append(
            f"| {i} | {r['machine']['load_average_at_start'][0]:.2f} | {ask['qps']:.1f} | {ask['requests'] - ask['ok']} "
            f"| {r['route_1']['qps']:.1f} | {r['route_64']['qps']:.1f} |"
        )
    asks = [r["ask_64"]["qps"] for r in runs]
    errors = sum(r["ask_64"]["requests"] - r["ask_64"]["ok"] for r in runs)
    lines.append(f"\nAsk over {len(runs)} runs: {min(asks):.0f}-{max(asks):.0f}/s, {errors} errors in all.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline_runs"))
    parser.add_argument("--summarise", type=Path, metavar="DIR", help="no run: the table of the JSON files in DIR")
    args, rest = parser.parse_known_args()
    if args.summarise:
        print(summarise(list(args.summarise.glob("*.json"))))
        return
    rest = [a for a in rest if a != "--"] or DEFAULT_ARGS
    args.out.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("bench_pipeline.py")
    files = []
    for i in range(1, args.runs + 1):
        files.append(args.out / f"run-{i}.json")
        print(f"run {i}/{args.runs}: {' '.join(rest)}", flush=True)
        subprocess.run([sys.executable, str(script), *rest, "--json", str(files[-1])], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    print(summarise(files))


if __name__ == "__main__":
    main()
