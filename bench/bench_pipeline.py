"""The serving path measured side by side in one run, on this machine, against the targets.

    .venv/bin/python bench/bench_pipeline.py [--clients 64] [--ask-samples 5] [--embedding minilm|minilm-onnx|hashing] \
        [--json runs/bench_pipeline.json] [--write-docs docs/BENCHMARKS.md] [--profile DIR]

1. The real services, each in its own process as in a deployment: embedder (MiniLM, micro-batching), router
   (embedded Qdrant, a router fitted on the labels, queries embedded by the Embedder service), voter, model
   pool (replay engine over the evaluation labels: no model, answers from recorded correctness) and gateway.
2. In this process, with 1 and 2 torch threads: MiniLM encode of each of ``--single-queries`` queries alone
   (p50), then Route by query text (embed + route) of exactly those queries over gRPC at 1 client.
3. In this process: encode of ``--throughput-queries`` other queries in calls of ``--batch`` (queries/s, the
   limit of the embedding step on this CPU), then Route of exactly those at ``--clients`` clients.
4. Ask end to end at ``--clients`` clients for ``--duration`` seconds (cache bypassed).

Every gRPC phase follows an unmeasured warm-up on other queries, and reports the CPU time each process spent
per request. ``--embedding hashing`` replaces the model by feature hashing, measuring the gRPC path alone;
``--embedding minilm-onnx`` serves MiniLM on ONNX Runtime, int8 (``bench/bench_ask_embedders.py`` compares the
embedders' Ask rates in one run).

Data: the RouterDC labels at ../shared/data/routerdc when present (router fitted on train, queries from
test), else generated labels. Targets: route p50 at 1 client <= 1.3 x the in-process single encode; route
throughput at 64 clients >= 70 % of the in-process batched rate; Ask >= 300/s with 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
ROUTERDC = REPO.parent / "shared" / "data" / "routerdc"
DOCS_MARK = "<!-- bench_pipeline:{variant}:{edge} -->"
TARGETS = {"route_p50_ratio": 1.3, "route_throughput_share": 0.70, "ask_qps": 300.0}


# ----------------------------------------------------------------------------------------- child processes


def child_main(start: str, config_class: str, config_file: str) -> None:
    """Run one service until SIGTERM (``--child``): print "SERVING <port>" once it serves."""
    import logging

    from avengers.cli.serve import resolve
    from avengers.rpc.server import serve_until_signal

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        config = resolve(config_class).from_yaml(config_file)
        running = await resolve(start)(config)
        print(f"SERVING {running.port}", flush=True)
        await serve_until_signal(running, grace=1.0)

    asyncio.run(run())


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


SERVICE_ENTRIES = {
    "embedder": ("avengers.services.embedder.server:start_embedder_server", "avengers.config.embedder_service:EmbedderServiceConfig"),
    "router": ("avengers.services.router.server:start_router_server", "avengers.config.router_service:RouterServiceConfig"),
    "voter": ("avengers.services.voter.server:start_voter_server", "avengers.config.voter_service:VoterServiceConfig"),
    "model_pool": ("avengers.services.model_pool.server:start_model_pool_server", "avengers.config.model_pool:ModelPoolConfig"),
    "gateway": ("avengers.services.gateway.server:start_gateway_server", "avengers.config.gateway_service:GatewayServiceConfig"),
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_service(name: str, config: dict[str, Any], workdir: Path) -> Service:
    metrics_port = free_port()
    config = {**config, "server": {"host": "127.0.0.1", "port": 0, "metrics_port": metrics_port, **config.get("server", {})}}
    config_file = workdir / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    start, config_class = SERVICE_ENTRIES[name]
    log = (workdir / f"{name}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", start, config_class, str(config_file),
        stdout=asyncio.subprocess.PIPE, stderr=log, env={**os.environ, "AVENGERS_METRICS_PORT": "0"},
    )  # fmt: skip
    try:
        async with asyncio.timeout(300):
            line = await process.stdout.readline()
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"{name} did not start in time; see {workdir / name}.log") from None
    match = re.match(rb"SERVING (\d+)", line)
    if not match:
        await process.wait()
        raise RuntimeError(f"{name} failed to start: {(workdir / f'{name}.log').read_text()[-3000:]}")
    return Service(name, process, int(match.group(1)), metrics_port)


async def stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        if service.process.returncode is None:
            service.process.send_signal(signal.SIGTERM)
    for service in services:
        try:
            await asyncio.wait_for(service.process.wait(), 30)
        except TimeoutError:
            service.process.kill()
            await service.process.wait()


def scrape(service: Service) -> dict[str, float]:
    """Unlabelled totals of a service's metrics (summed over label sets) by sample name."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                continue
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


def mean_batch(before: dict[str, float], after: dict[str, float]) -> float:
    batches = after.get("avengers_embedder_batch_texts_count", 0) - before.get("avengers_embedder_batch_texts_count", 0)
    texts = after.get("avengers_embedder_batch_texts_sum", 0) - before.get("avengers_embedder_batch_texts_sum", 0)
    return texts / batches if batches else 0.0


# ------------------------------------------------------------------------------------------------ the data


def generated_labels(path: Path, rows: int, seed: int, split: str) -> None:
    """Labels of four topics with a specialist model each (when no RouterDC data is present)."""
    rng = random.Random(seed)
    topics = {
        "gsm8k": ("math-7b", "A baker makes {a} loaves a day for {b} days and sells {c}. How many are left?"),
        "mmlu": ("mc-7b", "Which statement about item {a} is true?\nA. one\nB. two\nC. three\nD. four"),
        "humaneval": ("code-7b", "Write a Python function that returns the {a} largest values of a list of {b}."),
        "arc": ("mc-7b", "Question {a}: which tool measures temperature?\nA) ruler\nB) thermometer\nC) scale\nD) clock"),
    }
    models = sorted({m for m, _ in topics.values()} | {"general-7b"})
    with path.open("w") as fh:
        for i in range(rows):
            dataset = rng.choice(sorted(topics))
            specialist, template = topics[dataset]
            query = template.format(a=rng.randint(2, 999), b=rng.randint(2, 99), c=rng.randint(1, 99))
            scores = {m: float(rng.random() < (0.85 if m == specialist else 0.35)) for m in models}
            fh.write(json.dumps({"id": f"{dataset}-{split}-{i}", "dataset": dataset, "split": split, "query": query, "scores": scores}) + "\n")


def data_files(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path, str]:
    if args.train and args.eval:
        return Path(args.train), Path(args.eval), "given"
    if (ROUTERDC / "train.jsonl").is_file() and (ROUTERDC / "test.jsonl").is_file() and not args.generated:
        return ROUTERDC / "train.jsonl", ROUTERDC / "test.jsonl", "RouterDC (../shared/data/routerdc)"
    train, evaluation = workdir / "train.jsonl", workdir / "eval.jsonl"
    generated_labels(train, 2000, 1, "train")
    generated_labels(evaluation, 1000, 2, "test")
    return train, evaluation, "generated"


# ------------------------------------------------------------------------------------------- measurements


def cycled(items: list, start: int, count: int) -> list:
    """``count`` items from ``start`` on, wrapping around."""
    return [items[(start + i) % len(items)] for i in range(count)]


def measure_single(embedder, texts: list[str]) -> dict[str, float]:
    """p50/p90 of encoding each text alone (the route phase at 1 client sends exactly these)."""
    embedder.encode(texts[:8])  # warm-up
    seconds = []
    for text in texts:
        t = time.perf_counter()
        embedder.encode([text])
        seconds.append(time.perf_counter() - t)
    ms = np.asarray(seconds) * 1000
    return {"single_p50_ms": float(np.percentile(ms, 50)), "single_p90_ms": float(np.percentile(ms, 90)), "single_count": len(ms)}


def measure_batched(embedder, texts: list[str], batch: int) -> dict[str, float]:
    """Queries/s of encoding ``texts`` in calls of ``batch`` (the route phase at N clients sends these)."""
    embedder.encode(texts[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.encode(texts[i : i + batch])
    return {"batched_qps": len(texts) / (time.perf_counter() - started), "batched_count": len(texts), "batch": batch}


def measure_in_process(embedder, measure, *args) -> dict[int, dict[str, float]]:
    """``measure(embedder, *args)`` with 1 and with 2 threads in this process (torch threads; for the ONNX
    embedder, one-thread passes run at once)."""
    import torch

    from avengers.core.embedding import create_embedder

    by_threads = {}
    for threads in (1, 2):
        if hasattr(embedder, "workers"):  # the ONNX embedder: its threads are fixed when it is made
            target = create_embedder(embedder._config.model_copy(update={"threads": threads}))
        else:
            torch.set_num_threads(threads)
            target = embedder
        by_threads[threads] = measure(target, *args)
        print(f"\n[in-process encode, {threads} thread(s)] {by_threads[threads]}", flush=True)
    return by_threads


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(
    name: str, config, queries, services: dict[str, Service], profile: Path | None, warmup_queries
) -> dict[str, Any]:
    """A warm-up load on ``warmup_queries`` (not measured), then the measured load, with CPU time per process."""
    from avengers.loadgen import run_load

    if config.warmup_seconds:
        warmup = config.model_copy(update={"duration_seconds": config.warmup_seconds, "requests": None, "warmup_seconds": 0})
        await run_load(warmup, warmup_queries)
    config = config.model_copy(update={"warmup_seconds": 0})
    embedder = services["embedder"]
    pids = {"load generator": os.getpid(), **{s.name: s.process.pid for s in services.values()}}
    before = await asyncio.to_thread(scrape, embedder)
    cpu_before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    spies = []
    if profile is not None:  # py-spy: where each service spends its time in this phase
        profile.mkdir(parents=True, exist_ok=True)
        for n, pid in pids.items():
            if n != "load generator":
                out = profile / f"{re.sub(r'[^a-z0-9]+', '_', name)}-{n}.txt"
                spies.append(await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw", "--nonblocking",
                    "-r", "50", "-p", str(pid), "-o", str(out),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                ))  # fmt: skip
    result = await run_load(config, queries)
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on interrupt
        await spy.wait()
    cpu = {n: cpu_seconds(pid) - cpu_before[n] for n, pid in pids.items()}
    after = await asyncio.to_thread(scrape, embedder)
    cpu_ms = {n: 1000 * seconds / result.requests for n, seconds in cpu.items()} if result.requests else {}
    print(f"\n[{name}]\n{result.summary()}\n  embedder mean batch {mean_batch(before, after):.1f} texts", flush=True)
    print("  CPU ms per request: " + ", ".join(f"{n} {ms:.2f}" for n, ms in cpu_ms.items()), flush=True)
    return {**result.to_dict(), "embedder_mean_batch": mean_batch(before, after), "cpu_ms_per_request": cpu_ms}


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "gpu": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------------------- report


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    enc, r1, r64, ask = results["in_process"], results["route_1"], results["route_64"], results["ask_64"]
    ratio = r1["latency_ms"]["p50"] / enc["single_p50_ms"]
    share = r64["qps"] / enc["batched_qps"]
    model = results["variant"] != "hashing"  # the route targets compare with a model's encode
    return {
        "route_p50_ratio": {
            "value": ratio, "target": f"<= {TARGETS['route_p50_ratio']}",
            "met": ratio <= TARGETS["route_p50_ratio"] if model else None,
        },
        "route_throughput_share": {
            "value": share, "target": f">= {TARGETS['route_throughput_share']:.0%}",
            "met": share >= TARGETS["route_throughput_share"] if model else None,
        },
        "ask_qps": {
            "value": ask["qps"],
            "target": f">= {TARGETS['ask_qps']:.0f}/s, 0 errors",
            "met": ask["qps"] >= TARGETS["ask_qps"] and ask["requests"] == ask["ok"],
        },
    }


def markdown(results: dict[str, Any], command: str) -> str:
    m, enc = results["machine"], results["in_process"]
    r1, r64, ask, v = results["route_1"], results["route_64"], results["ask_64"], results["verdicts"]

    def lat(r):
        x = r["latency_ms"]
        return f"{x['p50']:.1f} | {x['p90']:.1f} | {x['p99']:.1f} | {x['max']:.1f}"

    def errors(r):
        return ", ".join(f"{k} {n}" for k, n in r["errors"].items()) or "0"

    mark = {True: "met", False: "**missed**", None: "n/a: no model to compare with"}
    machine_line = (
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), no GPU, torch {m['torch']} with {m['torch_threads']} threads, "
        f"Python {m['python']}; load average at start {m['load_average_at_start'][0]:.2f}. Every service is its own "
        "process on this machine, and so is the load generator: all of them share the 2 cores."
    )
    forward = (
        f"{results['forward_batch']} text(s) per forward pass"
        if results.get("forward_batch")
        else "forward passes of texts of similar length (`batch_chars` 4096)"
    )
    data_line = (
        f"Data: {results['data']}; router K={results['router_k']} fitted on {results['train_rows']} labelled queries; "
        f"the load sends queries of the evaluation split (mean {results['mean_query_chars']:.0f} characters): Route "
        f"at 1 client sends the {results['single_queries']} queries encoded one by one in process, each once; Route at "
        f"{r64['concurrency']} clients the {results['throughput_queries']} queries encoded in calls of {enc['batch']} in "
        f"process, each once; Ask cycles through {results['queries']} queries for {results['duration']:g} s. Every gRPC "
        f"phase follows {results['warmup']:g} s of unmeasured load on other queries. Embedder service: "
        f"{results['embedding']} on {results['embedder_threads']} torch thread(s), {forward}, "
        f"micro-batching max_batch {results['batching']['max_batch']}, max_wait_ms "
        f"{results['batching']['max_wait_ms']:g}; the router embeds queries through it. Model pool: replay engine over "
        f"the evaluation labels ({results['models']} models). Ask: n={results['ask_samples']} samples, "
        f"self-consistency, response cache bypassed (`no_cache`), feedback records in {results['state']}."
    )
    in_process_rows = []
    for threads, r in sorted(results["in_process_by_threads"].items()):
        single = f"| in-process encode, one query at a time, {threads} thread(s) | 1 | | "
        single += f"{r['single_p50_ms']:.1f} | {r['single_p90_ms']:.1f} | | | | 1 |"
        batched = f"| in-process encode, calls of {r['batch']} texts, {threads} thread(s) | - | {r['batched_qps']:.1f} | | | | | | {r['batch']} |"
        in_process_rows += [single, batched]
    variant = results["variant"]
    title = {"minilm": "MiniLM", "minilm-onnx": "MiniLM on ONNX Runtime, int8"}.get(
        variant, "no embedding model (hashing): the cost of the gRPC path alone"
    )
    lines = [
        DOCS_MARK.format(variant=variant, edge="start"),
        f"## Serving path, {title} (`bench/bench_pipeline.py`)",
        "",
        f"Run {results['date']} with `{command}`.",
        "",
        machine_line,
        "",
        data_line,
        "",
        "| measurement | clients | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | mean embed batch |",
        "|---|---|---|---|---|---|---|---|---|",
        *in_process_rows,
        f"| Route by query (embed + route) over gRPC | 1 | {r1['qps']:.1f} | {lat(r1)} | {errors(r1)} | {r1['embedder_mean_batch']:.1f} |",
        f"| Route by query (embed + route) over gRPC | {r64['concurrency']} | {r64['qps']:.1f} | {lat(r64)} | {errors(r64)} | {r64['embedder_mean_batch']:.1f} |",
        f"| Ask end to end (replay pool) | {ask['concurrency']} | {ask['qps']:.1f} | {lat(ask)} | {errors(ask)} | {ask['embedder_mean_batch']:.1f} |",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| route p50 (1 client) <= 1.3 x in-process single encode (best: {enc['single_threads']} thread(s)) | {v['route_p50_ratio']['value']:.2f} x | {mark[v['route_p50_ratio']['met']]} |",
        f"| route throughput (64 clients) >= 70 % of the in-process batched rate (best: {enc['batched_threads']} thread(s)) | {v['route_throughput_share']['value']:.0%} | {mark[v['route_throughput_share']['met']]} |",
        f"| Ask >= 300/s with 0 errors (64 clients) | {ask['qps']:.0f}/s, {ask['requests'] - ask['ok']} errors | {mark[v['ask_qps']['met']]} |",
        "",
    ]
    processes = list(ask["cpu_ms_per_request"])
    lines += [
        "CPU time per request, by process (ms; from /proc, so it counts every thread, the load generator too):",
        "",
        "| phase | " + " | ".join(processes) + " | total | bound on 2 cores |",
        "|---|" + "---|" * (len(processes) + 2),
    ]
    for label, r in (("route, 1 client", r1), (f"route, {r64['concurrency']} clients", r64), (f"Ask, {ask['concurrency']} clients", ask)):
        cpu = r["cpu_ms_per_request"]
        total = sum(cpu.values())
        cells = " | ".join(f"{cpu.get(n, 0.0):.2f}" for n in processes)
        lines.append(f"| {label} | {cells} | {total:.2f} | {2000 / total:.0f}/s |" if total else f"| {label} | {cells} | | |")
    lines.append("")
    if results.get("notes"):
        lines += [results["notes"], ""]
    lines.append(DOCS_MARK.format(variant=variant, edge="end"))
    return "\n".join(lines)


def write_docs(path: Path, section: str, variant: str) -> None:
    """Replace this variant's section of ``path`` (between its markers), or append it."""
    start, end = DOCS_MARK.format(variant=variant, edge="start"), DOCS_MARK.format(variant=variant, edge="end")
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured on the project's machines; each section names its command.\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from avengers.config.clustering import ClusteringConfig
    from avengers.config.embedding import EmbeddingConfig
    from avengers.config.loadgen import LoadConfig
    from avengers.config.store import StoreConfig
    from avengers.core.embedding import create_embedder, default_cache_dir
    from avengers.core.fit import fit_router_on_embeddings
    from avengers.core.labels import read_labels
    from avengers.loadgen import Query
    from avengers.stores import create_store

    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    results: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), "variant": args.embedding
    }
    print(f"machine: {results['machine']}\nworkdir: {workdir}", flush=True)
    train_path, eval_path, results["data"] = data_files(args, workdir)
    train, evaluation = read_labels(train_path), read_labels(eval_path)
    rng = random.Random(0)
    rows = rng.sample(evaluation.rows, min(args.max_queries, len(evaluation.rows)))
    queries = [Query(r.query, r.id) for r in rows]
    results.update(
        queries=len(queries), mean_query_chars=float(np.mean([len(q.text) for q in queries])), train_rows=len(train),
        models=len(evaluation.models), duration=args.duration, warmup=args.warmup, ask_samples=args.ask_samples,
        single_queries=args.single_queries, throughput_queries=args.throughput_queries,
    )  # fmt: skip

    # The router: fitted on the train labels with cached embeddings (the cache only serves the fit).
    model = {"hashing": {"backend": "hashing", "dimension": 384}, "minilm-onnx": {"backend": "onnx"}}.get(args.embedding, {})
    cached = create_embedder(EmbeddingConfig(**model, cache_dir=str(default_cache_dir() / "embeddings")))
    artifact = fit_router_on_embeddings(train, cached.encode(train.queries), cached.name, ClusteringConfig(k=args.k, n_init=2))
    results["router_k"] = artifact.k
    store_config = StoreConfig(qdrant_path=str(workdir / "qdrant"))
    with create_store(store_config) as store:
        store.activate(store.publish(artifact))

    # The model alone in this process (no cache), measured right before the route phase it is compared with,
    # with the services started and idle: the machine's other load drifts less in between.
    embedder = create_embedder(EmbeddingConfig(**model, batch_size=args.forward_batch))
    single_set = cycled(queries, 0, args.single_queries)
    throughput_set = cycled(queries, args.single_queries, args.throughput_queries)
    warmup_set = cycled(queries, args.single_queries + args.throughput_queries, len(queries))

    # 2. The services, one process each.
    batching = {"max_batch": args.batch, "max_wait_ms": args.max_wait_ms, "max_queued_texts": 8192}
    results["batching"] = batching
    results["embedder_threads"] = args.embedder_threads
    results["forward_batch"] = args.forward_batch
    results["embedding"] = {
        "minilm": "all-MiniLM-L6-v2",
        "minilm-onnx": "all-MiniLM-L6-v2 on ONNX Runtime, int8 (one-thread passes, that many at once)",
    }.get(args.embedding, "hashing-384 (no model)")
    results["state"] = f"Redis ({args.redis})" if args.redis else "process memory"
    services: dict[str, Service] = {}
    started: list[Service] = []
    try:
        embedding = {**model, "threads": args.embedder_threads, "batch_size": args.forward_batch}
        services["embedder"] = await start_service("embedder", {"batching": batching, "embedding": embedding}, workdir)
        started.append(services["embedder"])
        embedder_address = services["embedder"].address
        services["router"] = await start_service(
            "router", {"store": store_config.to_dict(), "poll_interval_seconds": 0, "embedder_address": embedder_address}, workdir
        )
        started.append(services["router"])
        services["voter"] = await start_service("voter", {"embedder_address": embedder_address}, workdir)
        started.append(services["voter"])
        pool = {
            "models": [
                {"name": m, "backend": "replay", "max_n": 64, "replay": {"labels_path": str(eval_path), "label_model": m}}
                for m in evaluation.models
            ]
        }
        services["model_pool"] = await start_service("model_pool", pool, workdir)
        started.append(services["model_pool"])
        gateway = {
            "downstream": {
                "embedder": embedder_address,
                "router": services["router"].address,
                "voter": services["voter"].address,
                "model_pool": services["model_pool"].address,
            },
            "redis": {"url": args.redis, "key_prefix": f"bench-{os.getpid()}:"},
        }
        services["gateway"] = await start_service("gateway", gateway, workdir)
        started.append(services["gateway"])

        # 3. Load over gRPC: route on exactly the texts encoded in process, Ask for a duration.
        route, gateway_address = services["router"].address, services["gateway"].address
        fixed = {"duration_seconds": None, "warmup_seconds": args.warmup, "timeout_seconds": 60.0}
        singles = measure_in_process(embedder, measure_single, [q.text for q in single_set])
        results["route_1"] = await run_phase(
            "route, 1 client",
            LoadConfig(target="route", address=route, concurrency=1, requests=len(single_set), **fixed),
            single_set, services, args.profile, warmup_set,
        )  # fmt: skip
        batched = measure_in_process(embedder, measure_batched, [q.text for q in throughput_set], args.batch)
        results["route_64"] = await run_phase(
            f"route, {args.clients} clients",
            LoadConfig(target="route", address=route, concurrency=args.clients, requests=len(throughput_set), **fixed),
            throughput_set, services, args.profile, warmup_set,
        )  # fmt: skip
        by_threads = {t: {**singles[t], **batched[t]} for t in singles}
        best_single = min(by_threads, key=lambda t: by_threads[t]["single_p50_ms"])
        best_batched = max(by_threads, key=lambda t: by_threads[t]["batched_qps"])
        results["in_process_by_threads"] = by_threads
        results["in_process"] = {
            **by_threads[best_single],
            "batched_qps": by_threads[best_batched]["batched_qps"],
            "single_threads": best_single,
            "batched_threads": best_batched,
        }
        del embedder
        results["ask_64"] = await run_phase(
            f"ask, {args.clients} clients",
            LoadConfig(
                target="ask", address=gateway_address, concurrency=args.clients, n=args.ask_samples,
                duration_seconds=args.duration, warmup_seconds=args.warmup, timeout_seconds=60.0,
            ),
            queries, services, args.profile, warmup_set,
        )  # fmt: skip
    finally:
        await stop_services(started)
    results["verdicts"] = verdicts(results)
    print("\n" + json.dumps(results["verdicts"], indent=2), flush=True)
    return results


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds of the Ask phase")
    p.add_argument("--single-queries", type=int, default=200, help="queries encoded one by one / routed by 1 client")
    p.add_argument(
        "--throughput-queries", type=int, default=320, help="queries encoded in batches / routed by --clients clients"
    )
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per gRPC phase")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="in-process batch size and the embedder's max_batch")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="embedder micro-batching wait")
    p.add_argument(
        "--embedding", choices=["minilm", "minilm-onnx", "hashing"], default="minilm",
        help="hashing: no model (isolates the cost of the gRPC path from the cost of the embedding model)",
    )
    p.add_argument(
        "--embedder-threads", type=int, default=os.cpu_count(), help="torch threads of the Embedder service (default: cores)"
    )
    p.add_argument(
        "--forward-batch", type=int,
        help="texts per forward pass, in process and in the service (default: the embedder's, 1 on CPU)",
    )
    p.add_argument("--ask-samples", type=int, default=5, help="n of each Ask")
    p.add_argument("--k", type=int, default=64, help="router clusters")
    p.add_argument("--max-queries", type=int, default=2000, help="evaluation queries cycled by the load")
    p.add_argument("--train", help="labels to fit the router on (default: RouterDC train, else generated)")
    p.add_argument("--eval", help="labels whose queries are sent and replayed (default: RouterDC test)")
    p.add_argument("--generated", action="store_true", help="use generated labels even when RouterDC is present")
    p.add_argument("--redis", help="Redis URL for the gateway's state (default: process memory)")
    p.add_argument("--notes", help="a paragraph added under the tables (e.g. what was changed to get there)")
    p.add_argument("--json", help="write all results as JSON")
    p.add_argument("--profile", type=Path, help="record each service with py-spy (raw stacks) into this directory")
    p.add_argument("--write-docs", help="replace (or append) this benchmark's section in the given Markdown file")
    p.add_argument("--render", metavar="JSON", help="no run: report the results saved by --json")
    return p.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:])
        sys.exit(0)
    arguments = parse_args()
    if arguments.render:  # the report of a saved run, e.g. after changing the report's layout
        outcome = json.loads(Path(arguments.render).read_text())
    else:
        outcome = asyncio.run(main(arguments))
        outcome["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    if arguments.notes:
        outcome["notes"] = arguments.notes
    if arguments.json:
        Path(arguments.json).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.json).write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    report = markdown(outcome, outcome.get("command", "python bench/bench_pipeline.py"))
    if arguments.write_docs:
        write_docs(Path(arguments.write_docs), report, outcome["variant"])
    print(report)
