"""The import rules of docs/ARCHITECTURE.md, checked on the source (static: every import statement, at any depth).

- a service (``services/<name>/``) never imports another service;
- ``avengers.core`` imports only ``avengers.core`` and ``avengers.config`` of the project;
- ``avengers.config`` imports only ``avengers.config`` (configs are leaves: everything may read them);
- ``avengers.registry`` (the generic registry) is a leaf that every layer may import;
- no library package imports the services or the CLI (the CLI and the chart check sit on top of everything).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "avengers"
SERVICES = ROOT / "services"


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``avengers`` import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if name == "avengers"]
    return [(line, name) for line, name in found if name == "avengers" or name.startswith("avengers.")]


def module_name(path: Path) -> str:
    if path.is_relative_to(SERVICES):
        parts = ("avengers", "services", *path.relative_to(SERVICES).with_suffix("").parts)
    else:
        parts = ("avengers", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(p for p in parts if p != "__init__")


def allowed(importer: str, imported: str) -> bool:
    """Whether module ``importer`` may import ``imported`` under the layering rules."""

    def within(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    if within(importer, "avengers.services"):
        own = ".".join(importer.split(".")[:3])  # avengers.services.<name>
        other_service = within(imported, "avengers.services") and imported != "avengers.services"
        return not other_service or within(imported, own)
    if imported == "avengers.registry":
        return True  # a leaf every layer may use
    if within(importer, "avengers.core"):
        return within(imported, "avengers.core") or within(imported, "avengers.config")
    if within(importer, "avengers.config"):
        return within(imported, "avengers.config")
    if within(importer, "avengers.cli") or importer == "avengers.__main__" or within(importer, "avengers.deploy"):
        return True  # the command line (and the chart check, which compares the chart with `avengers serve`)
    # every other library package: no services, no CLI
    return not (within(imported, "avengers.services") or within(imported, "avengers.cli"))


def violations(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        importer = module_name(path)
        for line, imported in project_imports(path):
            if not allowed(importer, imported):
                found.append(f"{path.relative_to(ROOT)}:{line}: {importer} imports {imported}")
    return found


def source_files() -> list[Path]:
    return sorted(p for p in [*SRC.rglob("*.py"), *SERVICES.rglob("*.py")] if "v1" not in p.relative_to(ROOT).parts)


def test_the_code_base_keeps_the_layering_rules():
    assert violations(source_files()) == []


@pytest.mark.parametrize(
    ("relative", "source", "bad"),
    [
        ("services/voter/x.py", "from avengers.services.gateway import servicer\n", True),
        ("services/voter/x.py", "def f():\n    import avengers.services.router.snapshots\n", True),
        ("services/voter/x.py", "from avengers.services.voter.embedding import TextEmbedder\n", False),
        ("services/voter/x.py", "from . import embedding\n", False),
        ("src/avengers/core/x.py", "from avengers.rpc.errors import Unavailable\n", True),
        ("src/avengers/core/x.py", "from avengers import sandbox\n", True),
        ("src/avengers/core/x.py", "from avengers.config.tasks import TASK_TYPES\nfrom .scoring import X\n", False),
        ("src/avengers/config/x.py", "from avengers.core.tasks import infer_task_type\n", True),
        ("src/avengers/engines/x.py", "from avengers.services.model_pool import servicer\n", True),
    ],
)
def test_a_forbidden_import_is_reported(tmp_path, monkeypatch, relative, source, bad):
    """The checker itself: it fails on a service importing another service and on core importing outside
    core/config, and passes the allowed cases."""
    root = tmp_path
    monkeypatch.setattr(__import__(__name__), "ROOT", root)
    monkeypatch.setattr(__import__(__name__), "SRC", root / "src" / "avengers")
    monkeypatch.setattr(__import__(__name__), "SERVICES", root / "services")
    path = root / relative
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert bool(violations([path])) is bad
