"""Keep the model-pool part of the Helm chart's values.schema.json generated from ModelPoolConfig.

The chart's ``modelPool.models`` entries and ``modelPool.extraArgs`` are passed to the Ray Serve app as its
model-pool config, so their schema is the JSON schema of :class:`avengers.config.model_pool.ModelPoolConfig`
itself (field descriptions included). It lives in values.schema.json under ``$defs`` keys starting with
``modelPool.``; everything else in that file is written by hand. ``sync`` rewrites those keys;
``--check`` (and the chart tests) fail when the file is stale.

    python -m avengers.deploy.values_schema --write helm/avengers/values.schema.json
    python -m avengers.deploy.values_schema --check helm/avengers/values.schema.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFS_PREFIX = "modelPool."
# Top-level ModelPoolConfig fields the chart sets from its own values (so not allowed in extraArgs).
CHART_OWNED_POOL_FIELDS = frozenset({"app_name", "models", "server", "http_port", "grpc_request_timeout_s"})


def model_pool_defs() -> dict[str, Any]:
    """The generated ``$defs`` entries: every model of ModelPoolConfig, plus ``modelPool.extraArgs``."""
    from avengers.config.model_pool import ModelPoolConfig

    schema = ModelPoolConfig.model_json_schema(ref_template="#/$defs/" + DEFS_PREFIX + "{model}")
    defs = {DEFS_PREFIX + name: body for name, body in schema.get("$defs", {}).items()}
    extra = {k: v for k, v in schema["properties"].items() if k not in CHART_OWNED_POOL_FIELDS}
    defs[DEFS_PREFIX + "extraArgs"] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Top-level ModelPoolConfig fields the chart does not set itself: "
        + ", ".join(sorted(extra))
        + ".",
        "properties": extra,
    }
    # Keep what the chart's values can reach: the models and extraArgs (not e.g. ServerConfig).
    reachable: set[str] = set()
    pending = [DEFS_PREFIX + "ModelConfig", DEFS_PREFIX + "extraArgs"]
    while pending:
        name = pending.pop()
        if name not in reachable:
            reachable.add(name)
            pending.extend(_refs(defs[name]))
    return {name: defs[name] for name in sorted(reachable)}


def _refs(node: Any) -> list[str]:
    """Names of the ``#/$defs/...`` entries a schema node refers to."""
    if isinstance(node, dict):
        found = [str(node["$ref"]).removeprefix("#/$defs/")] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def synced(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its generated ``$defs`` replaced by fresh ones."""
    kept = {k: v for k, v in schema.get("$defs", {}).items() if not k.startswith(DEFS_PREFIX)}
    return {**schema, "$defs": {**kept, **model_pool_defs()}}


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def is_synced(path: Path) -> bool:
    text = Path(path).read_text()
    return text == dumps(synced(json.loads(text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("schema", type=Path, help="the chart's values.schema.json")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated part")
    mode.add_argument("--check", action="store_true", help="exit 1 if the generated part is stale")
    args = parser.parse_args(argv)
    if args.check:
        if is_synced(args.schema):
            return 0
        print(f"{args.schema} is stale: run python -m avengers.deploy.values_schema --write {args.schema}")
        return 1
    args.schema.write_text(dumps(synced(json.loads(args.schema.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
