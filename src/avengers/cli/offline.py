"""Offline commands on labels files: ``fit``, ``eval``, ``sweep``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedding import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig
from avengers.config.routing import RoutingConfig, ScoringConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.clustering import available_clusterers
from avengers.core.embedding import Embedder, create_embedder, default_cache_dir
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.tools.evaluation import evaluate
from avengers.tools.sweep import sweep_k, sweep_plot, sweep_table


def add_embedder_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("embedding")
    g.add_argument("--embedder", default=DEFAULT_EMBEDDING_MODEL, help="model name or local path (default: %(default)s)")
    g.add_argument("--embedder-backend", default="sentence-transformers", choices=["sentence-transformers", "hashing"])
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    g.add_argument("--cache-dir", default=str(default_cache_dir() / "embeddings"), help="embedding cache (default: %(default)s)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def embedder_from_args(args: argparse.Namespace, model: str | None = None) -> Embedder:
    return create_embedder(
        EmbeddingConfig(
            backend=args.embedder_backend,
            model=model or args.embedder,
            device=args.device,
            cache_dir=None if args.no_cache else args.cache_dir,
        )
    )


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("clustering and scoring")
    g.add_argument("--algorithm", default="kmeans", choices=available_clusterers())
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--n-init", type=int, default=10, help="k-means/GMM restarts")
    g.add_argument("--smoothing", type=float, default=0.0, help="pseudo-count toward each model's global mean")
    add_routing_args(parser)


def add_routing_args(parser: argparse.ArgumentParser, defaults_from_router: bool = False) -> None:
    g = parser.add_argument_group("routing" + (" (default: as fitted)" if defaults_from_router else ""))
    d = None if defaults_from_router else RoutingConfig()
    g.add_argument("--strategy", choices=["nearest", "soft"], default=d and d.strategy)
    g.add_argument("--top-k", type=int, default=d and d.top_k, help="soft routing: clusters that contribute")
    g.add_argument("--beta", type=float, default=d and d.beta, help="soft routing: softmax inverse temperature")
    g.add_argument("--top-n", type=int, default=d and d.top_n, help="models returned per query")


def routing_from_args(args: argparse.Namespace, base: RoutingConfig | None = None) -> RoutingConfig:
    base = base or RoutingConfig()
    update = {f: getattr(args, f) for f in ("strategy", "top_k", "beta", "top_n") if getattr(args, f) is not None}
    return RoutingConfig.model_validate({**base.to_dict(), **update})


def clustering_from_args(args: argparse.Namespace, k: int) -> ClusteringConfig:
    return ClusteringConfig(algorithm=args.algorithm, k=k, seed=args.seed, n_init=args.n_init)


def cmd_fit(args: argparse.Namespace) -> int:
    labels = read_labels(args.labels)
    embedder = embedder_from_args(args)
    print(f"embedding {len(labels)} calibration queries with {embedder.name}", file=sys.stderr)
    embeddings = embedder.encode(labels.queries, show_progress=True)
    artifact = fit_router_on_embeddings(
        labels,
        embeddings,
        embedder.name,
        clustering_from_args(args, args.k),
        ScoringConfig(smoothing=args.smoothing),
        routing_from_args(args),
    )
    artifact.save(args.out)
    counts = artifact.cluster_scores.counts
    print(
        f"router {artifact.version}: {artifact.k} clusters ({args.algorithm}, sizes {counts.min()}..{counts.max()}), "
        f"{len(artifact.models)} models, {len(labels)} queries -> {args.out}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    artifact = RouterArtifact.load(args.router)
    labels = read_labels(args.labels)
    embedder = embedder_from_args(args, model=artifact.embedder_model)
    if embedder.dimension != artifact.embedder_dimension:
        raise ValueError(f"embedder dimension {embedder.dimension} != router's {artifact.embedder_dimension}")
    embeddings = embedder.encode(labels.queries, show_progress=not args.json)
    report = evaluate(artifact, labels, embeddings, routing_from_args(args, artifact.routing))
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(f"router {report.router_version} on {report.labels} ({report.strategy} routing)")
        print(f"best single model on the calibration data: {report.best_single_model}\n")
        print(report.table())
    return 0


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--k expects comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError("--k values must be positive integers")
    return ks


def cmd_sweep(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    train = read_labels(args.labels)
    embedder = embedder_from_args(args)
    evals = {}
    train_emb = embedder.encode(train.queries, show_progress=True)
    for path in args.eval:
        ls = read_labels(path)
        evals[Path(path).stem] = (ls, embedder.encode(ls.queries, show_progress=True))
    points = sweep_k(
        train,
        train_emb,
        evals,
        ks,
        embedder.name,
        clustering_from_args(args, ks[0]),
        ScoringConfig(smoothing=args.smoothing),
        routing_from_args(args),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = sweep_table(points)
    (out / "sweep.md").write_text(table + "\n")
    (out / "sweep.json").write_text(
        json.dumps([{"k": p.k, **{n: r.to_dict() for n, r in p.reports.items()}} for p in points], indent=2) + "\n"
    )
    sweep_plot(points, out / "sweep.png", title=f"Routed score vs K ({args.algorithm}, {args.strategy})")
    print(table)
    print(f"\nwrote {out / 'sweep.md'}, {out / 'sweep.json'}, {out / 'sweep.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a router on a labels file")
    p.add_argument("--labels", required=True, help="calibration labels (JSONL)")
    p.add_argument("--k", type=int, default=64, help="clusters (default: %(default)s)")
    p.add_argument("--out", required=True, help="router directory to write")
    add_fit_args(p)
    add_embedder_args(p)
    p.set_defaults(handler=cmd_fit)

    p = sub.add_parser("eval", help="evaluate a router on a labels file")
    p.add_argument("--router", required=True, help="router directory")
    p.add_argument("--labels", required=True, help="evaluation labels (JSONL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_routing_args(p, defaults_from_router=True)
    add_embedder_args(p)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("sweep", help="fit for several K and evaluate each")
    p.add_argument("--labels", required=True, help="calibration labels (JSONL)")
    p.add_argument("--eval", required=True, action="append", help="evaluation labels (repeatable)")
    p.add_argument("--k", default="1,4,16,64,256", help="comma-separated K values (default: %(default)s)")
    p.add_argument("--out", required=True, help="directory for sweep.md, sweep.json, sweep.png")
    add_fit_args(p)
    add_embedder_args(p)
    p.set_defaults(handler=cmd_sweep)
