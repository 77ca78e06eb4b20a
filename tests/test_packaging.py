"""The installed package is what the images run (docker/Dockerfile: `pip install .`, not editable): every
Python package of the source tree must be listed in pyproject.toml, or a wheel silently leaves it out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def source_packages() -> set[str]:
    """Dotted names of the packages in the tree, as installed (src/avengers -> avengers, services -> avengers.services)."""
    roots = {ROOT / "src" / "avengers": "avengers", ROOT / "services": "avengers.services"}
    names = set()
    for root, prefix in roots.items():
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(root).parts
            names.add(".".join((prefix, *relative)))
    return names


def test_every_source_package_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    missing = sorted(source_packages() - listed)
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(listed - source_packages())
    assert not stale, f"pyproject.toml lists packages that do not exist: {stale}"
