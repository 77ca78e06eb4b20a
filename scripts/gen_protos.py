#!/usr/bin/env python3
"""Generate Python code for proto/avengers/v1/*.proto into src/avengers/v1 (grpcio-tools).

    python scripts/gen_protos.py           # regenerate
    python scripts/gen_protos.py --check   # exit 1 if the committed code is out of date
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("avengers") / "v1"
OUT_ROOT = ROOT / "src"
INIT = '"""Generated protobuf and gRPC code of proto/avengers/v1 (do not edit; run scripts/gen_protos.py)."""\n'


def generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    (out_root / PACKAGE / "__init__.py").write_text(INIT)
    return sorted((out_root / PACKAGE).glob("*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if src/avengers/v1 differs from a fresh generation")
    args = parser.parse_args()
    if not args.check:
        for path in generate(OUT_ROOT):
            print(path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in (OUT_ROOT / PACKAGE).glob("*.py*")}
        stale = sorted(
            name for name in fresh.keys() | committed.keys()
            if name not in fresh or name not in committed or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print(f"generated code is out of date: {', '.join(stale)}; run python scripts/gen_protos.py", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
