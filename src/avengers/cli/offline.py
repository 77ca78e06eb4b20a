"""Offline commands on labels files: ``fit``, ``eval``, ``sweep``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedding import DEFAULT_EMBEDDING_MODEL, EMBEDDERS, EmbeddingConfig
from avengers.config.routing import SELECTORS, RoutingConfig, ScoringConfig, SelectorsConfig, fit_routing
from avengers.core.artifact import RouterArtifact
from avengers.core.clustering import available_clusterers
from avengers.core.embedding import Embedder, create_embedder, default_cache_dir
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.tools.evaluation import DEFAULT_BOOTSTRAP, alpha_curve, curve_plot, curve_table, evaluate
from avengers.tools.sweep import CLUSTER_SELECTORS, sweep_k, sweep_plot, sweep_table


def add_embedder_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("embedding")
    g.add_argument("--embedder", default=DEFAULT_EMBEDDING_MODEL, help="model name or local path (default: %(default)s)")
    g.add_argument(
        "--embedder-backend",
        default="sentence-transformers",
        choices=EMBEDDERS.names(),
        help="torch (sentence-transformers), the same model on ONNX Runtime (onnx: exported on first use, "
        "int8 unless --onnx-precision fp32), or feature hashing",
    )
    g.add_argument("--onnx-precision", default="int8", choices=["int8", "fp32"], help="onnx backend: weights")
    g.add_argument("--max-seq-tokens", type=int, help="truncate texts to this many tokens (default: the model's window)")
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    g.add_argument("--cache-dir", default=str(default_cache_dir() / "embeddings"), help="embedding cache (default: %(default)s)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def embedder_from_args(args: argparse.Namespace, model: str | None = None) -> Embedder:
    return create_embedder(
        EmbeddingConfig(
            backend=args.embedder_backend,
            model=model or args.embedder,
            device=args.device,
            onnx_precision=args.onnx_precision,
            max_seq_tokens=args.max_seq_tokens,
            cache_dir=None if args.no_cache else args.cache_dir,
        )
    )


def add_fit_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("clustering and scoring")
    g.add_argument("--algorithm", default="kmeans", choices=available_clusterers())
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--n-init", type=int, default=10, help="k-means/GMM restarts")
    g.add_argument("--smoothing", type=float, default=0.0, help="pseudo-count toward each model's global mean")
    g = parser.add_argument_group("selectors")
    g.add_argument(
        "--selectors",
        default=None,
        help="learned selectors to fit besides nearest/soft, comma-separated, or 'none' "
        f"(default: {','.join(SelectorsConfig().fit)}; known: {', '.join(SELECTORS.names())})",
    )
    g.add_argument("--selectors-config", metavar="YAML", help="SelectorsConfig file (neighbours, C, MF, shrinkage); flags win")
    g.add_argument("--knn-neighbours", type=int, help="kNN: calibration queries averaged")
    add_routing_args(parser)


def add_routing_args(parser: argparse.ArgumentParser, defaults_from_router: bool = False) -> None:
    g = parser.add_argument_group("routing" + (" (default: as fitted)" if defaults_from_router else ""))
    d = None if defaults_from_router else fit_routing()
    g.add_argument("--strategy", choices=SELECTORS.names(), default=d and d.strategy, help="selector that ranks the models")
    g.add_argument("--distance", choices=["euclidean", "cosine"], default=d and d.distance, help="query-to-centroid distance")
    g.add_argument("--top-k", type=int, default=d and d.top_k, help="soft routing: clusters that contribute")
    g.add_argument("--beta", type=float, default=d and d.beta, help="soft routing: softmax inverse temperature")
    g.add_argument("--top-n", type=int, default=d and d.top_n, help="models returned per query")


DEFAULT_K = 32
"""K of `avengers fit`: the best cluster selector (soft, K=32) in the cross-validated selector study."""

ROUTING_FLAGS = ("strategy", "distance", "top_k", "beta", "top_n")


def routing_from_args(args: argparse.Namespace, base: RoutingConfig | None = None) -> RoutingConfig:
    base = base or fit_routing()
    update = {f: getattr(args, f) for f in ROUTING_FLAGS if getattr(args, f, None) is not None}
    if isinstance(getattr(args, "alpha", None), float):
        update["alpha"] = args.alpha
    return RoutingConfig.model_validate({**base.to_dict(), **update})


def selectors_from_args(args: argparse.Namespace) -> SelectorsConfig:
    base = SelectorsConfig.from_yaml(args.selectors_config) if args.selectors_config else SelectorsConfig()
    update: dict[str, object] = {}
    if args.selectors is not None:
        names = [n.strip() for n in args.selectors.split(",") if n.strip() and n.strip() != "none"]
        update["fit"] = [n for n in names if n not in ("nearest", "soft")]
    if args.knn_neighbours is not None:
        update["knn_neighbours"] = args.knn_neighbours
    return SelectorsConfig.model_validate({**base.to_dict(), **update})


def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--alpha expects comma-separated numbers in [0, 1], got {text!r}") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"--alpha values must be in [0, 1], got {text!r}")
    return alphas


def clustering_from_args(args: argparse.Namespace, k: int) -> ClusteringConfig:
    return ClusteringConfig(algorithm=args.algorithm, k=k, seed=args.seed, n_init=args.n_init)


def cmd_fit(args: argparse.Namespace) -> int:
    labels = read_labels(args.labels)
    # Every option checked before the (long) embedding pass.
    clustering, routing, selectors = clustering_from_args(args, args.k), routing_from_args(args), selectors_from_args(args)
    scoring = ScoringConfig(smoothing=args.smoothing)
    embedder = embedder_from_args(args)
    print(f"embedding {len(labels)} calibration queries with {embedder.name}", file=sys.stderr)
    embeddings = embedder.encode(labels.queries, show_progress=True)
    artifact = fit_router_on_embeddings(
        labels,
        embeddings,
        embedder.name,
        clustering,
        scoring,
        routing,
        selectors=selectors,
        select_models_count=args.select_models,
    )
    artifact.save(args.out)
    counts = artifact.cluster_scores.counts
    print(
        f"router {artifact.version}: {artifact.k} clusters ({args.algorithm}, sizes {counts.min()}..{counts.max()}), "
        f"{len(artifact.models)} models, {len(labels)} queries, selectors {', '.join(artifact.strategies)} "
        f"(default {artifact.routing.strategy}){', with costs' if artifact.costs is not None else ''} -> {args.out}"
    )
    pruning = artifact.stats.get("pool_pruning")
    if pruning:
        print(
            f"pool pruned to {len(pruning['kept'])} of {len(pruning['from'])} models: {', '.join(pruning['kept'])}; "
            f"calibration score of nearest routing {100 * pruning['calibration_routed_all']:.2f} -> "
            f"{100 * pruning['calibration_routed_kept']:.2f}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    artifact = RouterArtifact.load(args.router)
    labels = read_labels(args.labels)
    embedder = embedder_from_args(args, model=artifact.embedder_model)
    if embedder.dimension != artifact.embedder_dimension:
        raise ValueError(f"embedder dimension {embedder.dimension} != router's {artifact.embedder_dimension}")
    embeddings = embedder.encode(labels.queries, show_progress=not args.json)
    alphas = parse_alphas(args.alpha) if args.alpha else [artifact.routing.alpha]
    routing = routing_from_args(args, artifact.routing)
    if len(alphas) > 1:
        points = alpha_curve(artifact, labels, embeddings, alphas, routing)
        if args.json:
            json.dump([p.__dict__ for p in points], sys.stdout, indent=2)
            print()
        else:
            print(f"router {artifact.version} on {labels.source} ({routing.strategy}): accuracy vs cost over alpha\n")
            print(curve_table(points))
        if args.plot:
            curve_plot(points, Path(args.plot), title=f"{Path(labels.source).stem}: accuracy vs cost ({routing.strategy})")
            print(f"\nwrote {args.plot}", file=sys.stderr)
        return 0
    routing = routing.model_copy(update={"alpha": alphas[0]})
    report = evaluate(artifact, labels, embeddings, routing, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        alpha = f", alpha {report.alpha:g}" if report.alpha else ""
        print(f"router {report.router_version} on {report.labels} ({report.strategy} routing{alpha})")
        print(f"best single model on the calibration data: {report.best_single_model}\n")
        print(report.table())
        if report.intervals:
            print("\n" + report.interval_lines())
        if report.mean_cost is not None:
            print(f"mean cost per query of the routed models: {report.mean_cost:.4g}")
    return 0


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--k expects comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError("--k values must be positive integers")
    return ks


def sweep_selectors(args: argparse.Namespace) -> SelectorsConfig:
    """The selectors a sweep fits: as given, else only the one the routing strategy needs."""
    config = selectors_from_args(args)
    if args.selectors is None:
        needed = [] if args.strategy in ("nearest", "soft") else [args.strategy]
        config = config.model_copy(update={"fit": needed})
    return config


def cmd_sweep(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    if args.strategy not in CLUSTER_SELECTORS:
        raise ValueError(
            f"--strategy {args.strategy} does not use the clusters: every K would score the same; "
            f"sweep K with {', '.join(CLUSTER_SELECTORS)}"
        )
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
        selectors=sweep_selectors(args),
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
    p.add_argument(
        "--k", type=int, default=DEFAULT_K,
        help="clusters (default: %(default)s, the best K of the cluster selectors in the selector study)",
    )
    p.add_argument("--out", required=True, help="router directory to write")
    p.add_argument("--alpha", type=float, default=None, help="default cost weight in [0, 1] (needs costs in the labels)")
    p.add_argument(
        "--select-models", type=int, metavar="N", help="keep the N models that cover the clusters best (pool pruning)"
    )
    add_fit_args(p)
    add_embedder_args(p)
    p.set_defaults(handler=cmd_fit)

    p = sub.add_parser("eval", help="evaluate a router on a labels file")
    p.add_argument("--router", required=True, help="router directory")
    p.add_argument("--labels", required=True, help="evaluation labels (JSONL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--alpha", help="cost weight, or several comma-separated (0,0.1,...,1) for the accuracy-versus-cost curve"
    )
    p.add_argument("--plot", metavar="PNG", help="with several --alpha: write the curve as a PNG")
    p.add_argument(
        "--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples for the 95%% intervals (0: none)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
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
    # K matters only to the cluster selectors: the sweep routes with the paper's nearest centroid unless told.
    p.set_defaults(handler=cmd_sweep, strategy="nearest")
