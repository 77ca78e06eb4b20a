#!/usr/bin/env python3
"""End to end on the CPU: the default pool (SmolLM2-135M-Instruct, Gemma 3 270M on llama.cpp) through
``avengers evaluate`` on the real benchmarks, and the "End to end" section of docs/BENCHMARKS.md.

    .venv/bin/python bench/end_to_end_cpu.py run    [--run-dir /work/runs/e2e-cpu] [--stop-after SECONDS]
    .venv/bin/python bench/end_to_end_cpu.py report [--run-dir /work/runs/e2e-cpu] [--docs docs/BENCHMARKS.md]

``run`` starts the pool once (``avengers serve model-pool --config POOL``) and generates the recording in
chunks (``PLAN`` below: a slice of one benchmark each, written in the project's benchmark format under
RUN/chunks/), one ``avengers evaluate --benchmark CHUNK --model-pool-addr POOL --n 10`` per chunk into
RUN/gen/<chunk>/. A chunk whose samples.jsonl exists is skipped, and an interrupted chunk
resumes from evaluate's own partial recording, so the run can be stopped and started again at any time (run
it under nohup; ``--stop-after`` ends it cleanly between chunks). The first pass covers every data set (50
items of each easy set, then GSM8K and HumanEval); later passes add 50 items of each easy set, round robin,
up to 300.

``report`` joins the finished chunks into one recording (RUN/all/samples.jsonl) and runs ONE
``avengers evaluate --from-samples`` over it (calibration/test split, router fit, every strategy, the best
single model and the best ensemble chosen on calibration, bootstrap interval), then writes the section
between the markers ``<!-- end-to-end:begin -->`` / ``<!-- end-to-end:end -->`` of the docs file: the
commands, wall and CPU time, the machine, the table and where the ensemble wins, ties or loses.

Cost knobs (chosen on 20 items of MultiArith, CommonsenseQA and StrategyQA, see the section): direct-answer
prompts (the pool's templates), ``--max-tokens 10`` for math and multiple choice (answers are 1-5 tokens; the
templates stop at the end of the answer), 128 for HumanEval, and fewer HumanEval/GSM8K items.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"
POOL = ROOT / "src" / "avengers" / "data" / "default_pool.yaml"
AVENGERS = [sys.executable, "-m", "avengers"]
N = 10
SEED = 0
BEGIN, END = "<!-- end-to-end:begin -->", "<!-- end-to-end:end -->"


@dataclass(frozen=True)
class Chunk:
    name: str
    file: str
    start: int
    stop: int
    max_tokens: int = 10


EASY = [
    ("multiarith", "multiarith.json"),
    ("addsub", "addsub.json"),
    ("singleeq", "singleeq.json"),
    ("svamp", "svamp.json"),
    ("commonsenseqa", "commonsenseqa_dev.jsonl"),
    ("strategyqa", "strategyqa.json"),
]
CHUNK = 50
PASSES = 6
PLAN: list[Chunk] = [
    *(Chunk(f"{name}-1", file, 0, CHUNK) for name, file in EASY),
    Chunk("gsm8k-1", "gsm8k_test.jsonl", 0, 50, max_tokens=12),
    Chunk("humaneval-1", "humaneval.jsonl", 0, 12, max_tokens=128),
    *(Chunk(f"{name}-{p + 1}", file, p * CHUNK, (p + 1) * CHUNK) for p in range(1, PASSES) for name, file in EASY),
]
"""Chunks in the order they are generated: 50 items of every data set first, then GSM8K and HumanEval, then
the easy sets 50 items at a time, round robin, up to 300 each — so a run stopped early still covers every set
evenly."""


def sh(cmd: list[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def machine() -> dict:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(int(memory) / 2**20), "python": platform.python_version()}


def chunk_file(run: Path, chunk: Chunk, benchmarks: Path) -> Path:
    """The chunk's items in the project's benchmark format (ids, gold answers and tests as the reader gives)."""
    from avengers.tools.end_to_end.benchmarks import read_benchmark

    path = run / "chunks" / f"{chunk.name}.jsonl"
    if path.is_file():
        return path
    items = read_benchmark(benchmarks / chunk.file, limit=chunk.stop)[chunk.start : chunk.stop]
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in items:
        row = {"id": item.id, "dataset": item.dataset, "query": item.query, "answer": item.answer,
               "task_type": item.task_type}
        if item.tests:
            row.update(tests=list(item.tests), entry_point=item.entry_point)
        rows.append(json.dumps(row, ensure_ascii=False))
    tmp = path.with_suffix(".partial")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def timing_path(run: Path) -> Path:
    return run / "timing.json"


def load_timing(run: Path) -> dict:
    path = timing_path(run)
    return json.loads(path.read_text()) if path.is_file() else {}


def save_timing(run: Path, timing: dict) -> None:
    tmp = timing_path(run).with_suffix(".partial")
    tmp.write_text(json.dumps(timing, indent=2))
    tmp.replace(timing_path(run))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pool(run: Path, pool: str) -> tuple[subprocess.Popen, str]:
    """``avengers serve model-pool`` for the whole run (the models load once, not once per chunk)."""
    port = free_port()
    cmd = [*AVENGERS, "serve", "model-pool", "--config", pool, "--host", "127.0.0.1", "--port", str(port)]
    log_path = run / "logs" / "pool.log"
    start = log_path.stat().st_size if log_path.exists() else 0  # a resumed run appends: read only this start's lines
    log = log_path.open("a")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the model pool exited ({process.returncode}); see {run / 'logs' / 'pool.log'}")
        if "model pool serving" in log_path.read_text()[start:]:
            return process, f"127.0.0.1:{port}"
        time.sleep(1)
    process.terminate()
    raise SystemExit("the model pool did not start within 600 s")


def cmd_run(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    timing = load_timing(run)
    timing.setdefault("machine", machine())
    todo = [chunk for chunk in PLAN if not (run / "gen" / chunk.name / "samples.jsonl").is_file()]
    if not todo:
        return 0
    pool, address = start_pool(run, str(args.pool))
    try:
        return run_chunks(args, run, todo, (pool.pid, address), timing, started)
    finally:
        pool.terminate()
        pool.wait(timeout=60)


def run_chunks(args: argparse.Namespace, run: Path, todo: list[Chunk], pool: tuple[int, str], timing: dict,
               started: float) -> int:
    pool_pid, address = pool
    for chunk in todo:
        out = run / "gen" / chunk.name
        if (out / "samples.jsonl").is_file():
            continue
        if args.stop_after and time.monotonic() - started > args.stop_after:
            print(f"stopping before {chunk.name}: --stop-after {args.stop_after:.0f}s reached", flush=True)
            break
        bench = chunk_file(run, chunk, Path(args.benchmarks))
        cmd = [*AVENGERS, "evaluate", "--benchmark", str(bench), "--model-pool-addr", address, "--out", str(out),
               "--n", str(N), "--max-tokens", str(chunk.max_tokens), "--seed", str(SEED), "--threads", "1",
               "--bootstrap", "200", "--quiet"]
        print(f"[{time.strftime('%H:%M:%S')}] {chunk.name}: {sh(cmd)}", flush=True)
        load_before = os.getloadavg()[0]
        t0, cpu0, pool0 = time.time(), os.times(), process_cpu_seconds(pool_pid)
        with (run / "logs" / f"{chunk.name}.log").open("a") as log:
            code = subprocess.run(cmd, check=False, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        cpu1, pool1 = os.times(), process_cpu_seconds(pool_pid)
        entry = timing.setdefault("chunks", {}).setdefault(chunk.name, {"wall_seconds": 0.0, "cpu_seconds": 0.0})
        entry["wall_seconds"] += round(time.time() - t0, 1)
        evaluate_cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        entry["cpu_seconds"] += round(evaluate_cpu + pool1 - pool0, 1)  # the evaluate command + the pool's models
        entry.update(chunk=asdict(chunk), command=sh(cmd), exit=code, load_before=load_before,
                     load_after=os.getloadavg()[0], finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        save_timing(run, timing)
        if code != 0:
            print(f"{chunk.name} failed (exit {code}); see {run / 'logs' / (chunk.name + '.log')}", flush=True)
            return code
        print(f"[{time.strftime('%H:%M:%S')}] {chunk.name} done in {entry['wall_seconds']:.0f}s wall, "
              f"{entry['cpu_seconds']:.0f}s CPU", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------
# report


def finished_chunks(run: Path) -> list[str]:
    """Finished chunks, a pass of the easy sets only when all of its chunks are (so every set has as many
    items)."""
    finished = {c.name for c in PLAN if (run / "gen" / c.name / "samples.jsonl").is_file()}
    done = []
    for chunk in PLAN:
        stem, _, number = chunk.name.rpartition("-")
        if stem in dict(EASY) and not all(f"{name}-{number}" in finished for name, _ in EASY):
            continue
        if chunk.name in finished:
            done.append(chunk.name)
    return done


def joined_recording(run: Path) -> tuple[Path, list[str]]:
    done = finished_chunks(run)
    if not done:
        raise SystemExit(f"{run}: no finished chunk yet")
    out = run / "all" / "samples.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for name in done:
            fh.write((run / "gen" / name / "samples.jsonl").read_text(encoding="utf-8"))
    tmp.replace(out)
    return out, done


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


SHOWN_KINDS = ("single", "routed", "oracle")


def strategy_rows(report: dict) -> list[tuple[str, dict]]:
    """Strategies in reading order: single models, routed strategies by name, oracle last."""
    entries = report["strategies"]
    order = {kind: i for i, kind in enumerate(SHOWN_KINDS)}
    return sorted(entries.items(), key=lambda kv: (order.get(kv[1].get("kind"), 9), kv[0]))


def verdicts(report: dict, datasets: list[str]) -> list[str]:
    """Per data set: the best ensemble against the best single model (win / tie / loss, in test queries), and
    the headroom the oracle (any model right) leaves above the best single model."""
    strategies = report["strategies"]
    single = strategies[report["best_single"]["name"]]["per_dataset"]
    best = strategies[report["best_ensemble"]["name"]]["per_dataset"]
    oracle = strategies.get("oracle", {}).get("per_dataset", {})
    lines = []
    for d in datasets:
        a, b = best.get(d, {}).get("accuracy"), single.get(d, {}).get("accuracy")
        if a is None or b is None:
            continue
        queries = best[d]["queries"]
        delta = round((a - b) * queries)
        word = "ties" if delta == 0 else (f"wins by {delta}" if delta > 0 else f"loses by {-delta}")
        headroom = oracle.get(d, {}).get("accuracy")
        room = "" if headroom is None else f"; oracle {pct(headroom)}"
        lines.append(f"{d} {word} of {queries} ({pct(a)} vs {pct(b)}{room})")
    return lines


def why(report: dict) -> str:
    """The numbers that explain the outcome: how far the oracle (any model right) lies above the best single
    model, and how often the models' greedy answers agree."""
    strategies = report["strategies"]
    single = strategies[report["best_single"]["name"]]["accuracy"]
    oracle = strategies.get("oracle", {}).get("accuracy")
    singles = {name: e["accuracy"] for name, e in strategies.items()
               if name.startswith("single:") and e.get("accuracy") is not None}
    parts = [
        "Why: " + ", ".join(f"`{name}` {pct(acc)}" for name, acc in sorted(singles.items()))
        + " on average — near zero on the math sets and code, at or below chance on the multiple-choice ones "
        "(chance: 20% on CommonsenseQA's five options, about 50% on StrategyQA's yes/no; the models favour some "
        "letters)."
    ]
    if oracle is not None:
        parts.append(
            f"With one answer per model, uniting them gains at most what the oracle (either model's greedy answer "
            f"right) shows above the best single model: {100 * (oracle - single):+.1f} points on average (sampling "
            "n answers can add a little beyond it, as self-consistency does on some math sets); a vote only collects "
            "it when the right answer also has the most votes, and with two weak models whose wrong answers scatter "
            "or agree by chance it rarely does — the votes mostly follow the stronger model, or noise."
        )
    yes_no = strategies.get("oracle", {}).get("per_dataset", {}).get("strategyqa", {}).get("accuracy")
    if yes_no is not None:
        best_single = strategies[report["best_single"]["name"]]["per_dataset"]["strategyqa"]["accuracy"]
        parts.append(
            f"The widest gap is StrategyQA (oracle {pct(yes_no)} against {pct(best_single)}): on a yes/no question "
            "two models that disagree always have one of them right, but nothing in the votes tells which."
        )
    ci = report["best_ensemble"].get("ci95") or [None, None]
    met = ci[0] is not None and ci[0] > 0
    parts.append(
        "Target (the best ensemble above the best single model on the average, 95% interval above zero): "
        + ("met." if met else "not met with this pool — as expected of 135M-270M models, which leave little to "
           "unite; examples/model_pool/gpu_end_to_end.yaml runs the same command with 7-9B models.")
    )
    return " ".join(parts)


def render(report: dict, timing: dict, done: list[str], commands: list[str]) -> str:
    datasets = sorted(report["datasets"])
    chunks = timing.get("chunks", {})
    wall = sum(chunks[n]["wall_seconds"] for n in done if n in chunks)
    cpu = sum(chunks[n]["cpu_seconds"] for n in done if n in chunks)
    loads = [chunks[n]["load_before"] for n in done if n in chunks] + [chunks[n]["load_after"] for n in done if n in chunks]
    m = timing.get("machine", machine())
    missing = [c.name for c in PLAN if c.name not in done]
    best_single, best = report["best_single"], report["best_ensemble"]
    lines = [
        BEGIN,
        "## End to end",
        "",
        ("The default CPU pool — SmolLM2-135M-Instruct and Gemma 3 270M (base, few-shot) on llama.cpp, "
         "`src/avengers/data/default_pool.yaml` — through `avengers evaluate`: every model answers every item "
         f"once greedily and n={N} times sampled (T=0.7); half of each data set calibrates (router fit, choice "
         "of the best single model and of the best ensemble), the other half is the test set reported here. "
         "Produced by `bench/end_to_end_cpu.py` (`run`, then `report`):"),
        "",
        "```bash",
        ".venv/bin/python bench/end_to_end_cpu.py run --run-dir /work/runs/e2e-cpu     # nohup; resumable",
        ".venv/bin/python bench/end_to_end_cpu.py report --run-dir /work/runs/e2e-cpu  # this section",
        "```",
        "",
        ("which ran, per chunk (a slice of one benchmark in the project's format), then once over the joined "
         "recording:"),
        "",
        "```bash",
        *commands,
        "```",
        "",
        (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, shared with other jobs (load average "
         f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f} during the run; each model runs on one "
         f"thread). Generation: {wall / 3600:.2f} h wall, {cpu / 3600:.2f} h CPU for "
         f"{sum(report['datasets'][d]['calibration'] + report['datasets'][d]['test'] for d in datasets)} items "
         f"x {len(report['models'])} models x {N + 1} samples."),
        "",
        "Items per data set (calibration / test): "
        + ", ".join(f"{d} {report['datasets'][d]['calibration']} / {report['datasets'][d]['test']}" for d in datasets)
        + ".",
        "",
    ]
    humaneval = next(c for c in PLAN if c.name.startswith("humaneval"))
    lines += [(f"Cut to fit the time box: the easy sets by 50-item passes (300 planned), GSM8K to 50 items and "
               f"HumanEval to {humaneval.stop} items with max_tokens {humaneval.max_tokens} (its samples cost 10x "
               "the others'; both sit near zero, which is all they are here to show). Math and multiple choice: "
               "max_tokens 10, the answers being 1-5 tokens."), ""]
    if missing:
        lines += [("Not in this report (not run, or their pass was not complete when the report was made): "
                   + ", ".join(missing) + "."), ""]
    header = "| strategy | kind | " + " | ".join(datasets) + " | average | tokens (test) |"
    lines += [header, "|" + "---|" * (len(datasets) + 4)]
    for name, entry in strategy_rows(report):
        per = entry["per_dataset"]
        mark = " **(best single)**" if name == best_single["name"] else (" **(best ensemble)**" if name == best["name"] else "")
        cells = [pct(per.get(d, {}).get("accuracy")) for d in datasets]
        lines.append(f"| {name}{mark} | {entry.get('kind', '')} | " + " | ".join(cells)
                     + f" | {pct(entry['accuracy'])} | {entry['tokens']} |")
    ci = best.get("ci95") or [None, None]
    lines += [
        "",
        (f"Accuracy in % on the test half; kind: one fixed model (single), routed by the fitted router "
         f"(routed; k = models voting, n = samples), any model right (oracle). Best single model (chosen on calibration): `{best_single['name']}` "
         f"{pct(best_single['accuracy'])}. Best ensemble (chosen on calibration): `{best['name']}` "
         f"{pct(best['accuracy'])}; difference {100 * best['difference']:+.1f} points, paired bootstrap 95% "
         f"interval [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]."),
        "",
        "Per data set, best ensemble against best single model (test queries won or lost): "
        + "; ".join(verdicts(report, datasets)) + ".",
        "",
        why(report),
        "",
    ]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    recording, done = joined_recording(run)
    out = run / "report"
    cmd = [*AVENGERS, "evaluate", "--from-samples", str(recording), "--out", str(out), "--n", str(N),
           "--seed", str(SEED), "--threads", "1", "--quiet"]
    print(sh(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads((out / "report.json").read_text())
    timing = load_timing(run)
    chunks = timing.get("chunks", {})
    shown = [chunks[n]["command"].replace(sys.executable + " -m avengers", ".venv/bin/avengers")
             for n in done if n in chunks][:2]
    commands = [*shown, f"# ... one per chunk: {', '.join(done)}",
                sh(cmd).replace(sys.executable + " -m avengers", ".venv/bin/avengers")]
    section = render(report, timing, done, commands)
    (run / "section.md").write_text(section + "\n")
    if args.docs:
        docs = Path(args.docs)
        text = docs.read_text()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + section + "\n" + text[text.index(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n" + END + "\n"
        docs.write_text(text)
        print(f"wrote the section into {docs}")
    else:
        print(section)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="generate the recording, chunk by chunk (resumable)")
    p.add_argument("--run-dir", default="/work/runs/e2e-cpu")
    p.add_argument("--benchmarks", default=str(BENCHMARKS), help="folder of the published benchmark files")
    p.add_argument("--pool", default=str(POOL))
    p.add_argument("--stop-after", type=float, default=0.0, help="seconds; start no chunk after that (0: none)")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("report", help="evaluate the finished chunks together and write the docs section")
    p.add_argument("--run-dir", default="/work/runs/e2e-cpu")
    p.add_argument("--docs", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="file to write into ('' prints)")
    p.set_defaults(handler=cmd_report)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
