#!/usr/bin/env python3
"""Voting across models on a recording: run ``avengers evaluate --from-samples`` and render the BENCHMARKS section.

    OMP_NUM_THREADS=1 python bench/evaluate_recorded.py \
        --samples ../shared/data/recorded/mmlupro_even_half.jsonl.gz --out runs/mmlupro

Runs the command (every choice made on the calibration split by the command itself), times it, and prints the
Markdown tables of docs/BENCHMARKS.md "Voting across models on recorded outputs (MMLU-Pro)" from
OUT/report.json; the same text goes to OUT/benchmarks_section.md. ``--render`` re-renders a finished run.
Extra arguments after ``--`` go to ``avengers evaluate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({model}){memory}, no GPU"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def diff(entry: dict) -> str:
    d, ci = entry.get("difference_to_best_single"), entry.get("ci95")
    if d is None or ci is None:
        return "–"
    verdict = "wins" if ci[0] > 0 else "loses" if ci[1] < 0 else "ties"
    return f"{100 * d:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] {verdict}"


def render(report: dict, wall: float | None, command: str) -> str:
    strategies = report["strategies"]
    single, best = report["best_single"], report["best_ensemble"]
    datasets = report["datasets"]
    n_cal = sum(d["calibration"] for d in datasets.values())
    n_test = sum(d["test"] for d in datasets.values())
    lines = [
        f"Command (`bench/evaluate_recorded.py` runs it and renders these tables): `{command}`"
        + (f" — {wall / 60:.1f} min wall" if wall else "")
        + f" on {report.get('machine_detail') or machine()}, shared with other work while measured.",
        "",
        (f"{len(report['models'])} models, {n_cal} calibration and {n_test} test queries in {len(datasets)} "
        f"categories; accuracy = test accuracy averaged over categories (%). Router: {best['router']} "
        f"(tried: {', '.join(report['selection']['routers_tried'])}), chosen with everything else by "
        f"{report['selection']['method']}."),
        "",
        f"- **Best single model, chosen on calibration**: `{single['model']}` — {pct(single['accuracy'])}.",
        (f"- **Best ensemble, chosen on calibration**: `{best['name']}` — {pct(best['accuracy'])}; "
        f"difference {100 * best['difference']:+.2f} points, paired bootstrap 95% interval "
        f"[{100 * best['ci95'][0]:+.2f}, {100 * best['ci95'][1]:+.2f}]."),
        f"- **Oracle** (any model right): {pct(strategies['oracle']['accuracy'])}.",
        "",
        "| single model (one sample) | test | calibration | vs best single (95% CI) |",
        "|---|---:|---:|---|",
    ]
    for name, entry in strategies.items():
        if entry["kind"] == "single" and entry["params"]["mode"] == "greedy":
            lines.append(
                f"| {entry['params']['model']} | {pct(entry['accuracy'])} | {pct(entry['calibration_accuracy'])} | "
                f"{diff(entry) if name != single['name'] else '(best single)'} |"
            )
    routed = {name: e for name, e in strategies.items() if e["kind"] == "routed"}
    lines += ["", "Routed strategies with the chosen router, test accuracy (cross-validated calibration accuracy):", ""]
    for name in ("self_consistency:n=1", "model_switch:n=2"):
        if name in routed:
            e = routed[name]
            label = "routed top-1 (one sample)" if name.startswith("self") else "model switch (top-2, threshold 0.8)"
            lines.append(f"- {label}: {pct(e['accuracy'])} ({pct(e['calibration_accuracy'])}); vs best single {diff(e)}")
    families = ("top_k_vote", "score_weighted_vote", "log_odds_vote")
    ks = sorted({int(n.split("k=")[1].split(",")[0]) for n in routed if n.startswith("top_k_vote:") and "n=" not in n})
    lines += [
        "",
        "| k | top-k majority | score-weighted | log-odds | tokens (est.) | engine calls |",
        "|---:|---|---|---|---:|---:|",
    ]
    for k in ks:
        cells = []
        for family in families:
            name = f"{family}:k={k}"
            e = routed[name]
            mark = " **chosen**" if name == best["name"] else ""
            cells.append(f"{pct(e['accuracy'])} ({pct(e['calibration_accuracy'])}){mark}")
        e = routed[f"top_k_vote:k={k}"]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {e['tokens']} | {e['engine_calls']} |")
    lines += ["", "Each family's best k on calibration, against the best single model (paired bootstrap 95% interval):", ""]
    for family in families:
        members = [n for n in routed if n.startswith(family + ":k=") and "n=" not in n]
        chosen = max(members, key=lambda n: routed[n]["calibration_accuracy"])
        lines.append(f"- `{chosen}`: {pct(routed[chosen]['accuracy'])}, {diff(routed[chosen])}")
    by_k = report["selection"].get("test_accuracy_by_router", {})
    cv = report["selection"]["cv_accuracy"]
    if by_k:
        families = ["self_consistency:n=1", "top_k_vote", "score_weighted_vote", "log_odds_vote"]
        lines += [
            "",
            ("Routers tried: routed top-1, and each vote family's best k on calibration (cross-validated "
             "calibration / test). Test values are for reading only; nothing is chosen by them."),
            "",
            "| router | routed top-1 | top-k majority | score-weighted | log-odds |",
            "|---:|---|---|---|---|",
        ]
        for k in cv:
            cells = []
            for family in families:
                members = [n for n in cv[k] if n == family or n.startswith(family + ":")]
                chosen = max(members, key=lambda n: cv[k][n])
                label = "" if chosen == family else f"k={chosen.split('k=')[1]}: "
                cells.append(f"{label}{pct(cv[k][chosen])} / {pct(by_k.get(k, {}).get(chosen))}")
            mark = " (chosen)" if k == best["router"] else ""
            lines.append(f"| {k}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True, help="recorded-samples file or evaluate directory")
    ap.add_argument("--out", default="runs/mmlupro")
    ap.add_argument("--render", action="store_true", help="only re-render OUT/report.json")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- extra avengers evaluate arguments")
    args = ap.parse_args()
    out = Path(args.out)
    extra = [a for a in args.rest if a != "--"]
    cmd = ["avengers", "evaluate", "--from-samples", args.samples, "--out", str(out), "--threads", "1", *extra]
    wall = None
    if not args.render:
        exe = Path(sys.executable).with_name("avengers")
        started = time.perf_counter()
        subprocess.run([str(exe) if exe.exists() else "avengers", *cmd[1:]], check=True)
        wall = time.perf_counter() - started
        (out / "bench_wall_seconds.txt").write_text(f"{wall:.1f}\n")
    elif (out / "bench_wall_seconds.txt").is_file():
        wall = float((out / "bench_wall_seconds.txt").read_text())
    report = json.loads((out / "report.json").read_text())
    text = render(report, wall, " ".join(shlex.quote(c) for c in cmd))
    (out / "benchmarks_section.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
