"""Centroid store operations on embedded Qdrant: publish a router, poll the active version, load a version.

    .venv/bin/python bench/store_ops.py [--k 64] [--models 8] [--calibration 5935] [--versions 5] [--repeats 20]

Fits ``--versions`` routers (K clusters of 384-dimensional unit vectors, the size of all-MiniLM-L6-v2, with
``--calibration`` random calibration queries and ``--models`` models) and publishes them one after the other
into a fresh embedded Qdrant directory, then times what a running router does at each poll
(``active_version``) and when the version changed (``load``), ``--repeats`` times each. The store opens the
directory for each operation (embedded Qdrant allows one client per directory), as the router service does.
Prints a Markdown table of median, min and max seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avengers.config.clustering import ClusteringConfig
from avengers.config.store import StoreConfig
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import LabeledQuery, LabelSet
from avengers.stores import create_store


def router(k: int, models: int, calibration: int, seed: int):
    rng = np.random.default_rng(seed)
    names = [f"model-{i}" for i in range(models)]
    rows = [
        LabeledQuery(str(i), "bench", "train", f"query {i}", {m: float(rng.random() < 0.5) for m in names})
        for i in range(calibration)
    ]
    vectors = rng.normal(size=(calibration, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return fit_router_on_embeddings(
        LabelSet(rows=rows, models=names), vectors, "bench-384", ClusteringConfig(k=k, n_init=1, seed=seed)
    )


def timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def line(name: str, seconds: list[float]) -> str:
    return f"| {name} | {len(seconds)} | {statistics.median(seconds):.3f} | {min(seconds):.3f} | {max(seconds):.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--calibration", type=int, default=5935, help="calibration queries (RouterDC train: 5,935)")
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    load_average = os.getloadavg()[0]

    artifacts = [router(args.k, args.models, args.calibration, seed) for seed in range(args.versions)]
    with tempfile.TemporaryDirectory() as tmp:
        config = StoreConfig(qdrant_path=str(Path(tmp) / "qdrant"))
        store = create_store(config)
        publish, versions = [], []
        for artifact in artifacts:
            started = time.perf_counter()
            versions.append(store.publish(artifact))
            store.activate(versions[-1])
            publish.append(time.perf_counter() - started)
        poll = [timed(store.active_version) for _ in range(args.repeats)]
        load = [timed(lambda: store.load(versions[-1])) for _ in range(args.repeats)]
        store.close()

    print(
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, load average at start {load_average:.2f}. Embedded Qdrant in a "
        f"temporary directory; K={args.k}, {args.models} models, {args.calibration} calibration queries, "
        f"{args.versions} versions.\n"
    )
    print("| operation | runs | median s | min s | max s |\n|---|---|---|---|---|")
    print(line(f"publish and activate a version (K={args.k})", publish))
    print(line(f"poll: active version, {args.versions} versions stored", poll))
    print(line("load the active version", load))
    print(f"\npublish, in order: {', '.join(f'{s:.3f}' for s in publish)} s")


if __name__ == "__main__":
    main()
