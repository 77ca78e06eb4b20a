"""Routers as directories on a filesystem: the simplest store, for single hosts and tests.

Layout under the root::

    versions/<version>/   one router directory each (RouterArtifact.save)
    ACTIVE                the active version (one line), replaced atomically with os.replace

No locking beyond that: several processes may read and publish at once; activation is one rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from avengers.config.store import StoreConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.embedding import default_cache_dir
from avengers.stores.base import (
    CentroidStore,
    StoreConflict,
    StoredRouter,
    VersionNotFound,
    check_version,
    register_store,
)

log = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"


@register_store("directory")
class DirectoryCentroidStore(CentroidStore):
    """Router directories under one root (see the module docstring)."""

    def __init__(self, config: StoreConfig | None = None):
        config = config or StoreConfig(backend="directory")
        root = config.directory or os.environ.get("AVENGERS_ROUTER_STORE") or str(default_cache_dir() / "routers")
        self.root = Path(root).expanduser()
        self.versions = self.root / "versions"

    def describe(self) -> str:
        return f"router directory store at {self.root}"

    def _dir(self, version: str) -> Path:
        return self.versions / check_version(version)

    def publish(self, artifact: RouterArtifact) -> str:
        target = self._dir(artifact.version)
        if (target / "router.json").is_file():
            return artifact.version
        artifact.save(target)
        log.info("published router %s to %s", artifact.version, self.describe())
        return artifact.version

    def activate(self, version: str) -> None:
        if not (self._dir(version) / "router.json").is_file():
            raise VersionNotFound(f"router {version} is not published in {self.describe()}")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".active.", dir=self.root)
        with os.fdopen(fd, "w") as fh:
            fh.write(version + "\n")
        os.replace(tmp, self.root / ACTIVE_FILE)
        log.info("activated router %s in %s", version, self.describe())

    def active_version(self) -> str | None:
        try:
            version = (self.root / ACTIVE_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def load(self, version: str) -> RouterArtifact:
        directory = self._dir(version)
        if not (directory / "router.json").is_file():
            raise VersionNotFound(f"router {version} is not published in {self.describe()}")
        return RouterArtifact.load(directory)

    def list_versions(self) -> list[StoredRouter]:
        active = self.active_version()
        found = []
        for meta_path in sorted(self.versions.glob("*/router.json")):
            meta = json.loads(meta_path.read_text())
            found.append(StoredRouter.from_metadata(meta, active=meta["version"] == active, path=str(meta_path.parent)))
        return sorted(found, key=lambda r: (r.created_at, r.version), reverse=True)

    def delete(self, version: str, *, force: bool = False) -> None:
        directory = self._dir(version)
        if not directory.is_dir():
            raise VersionNotFound(f"router {version} is not published in {self.describe()}")
        if self.active_version() == version:
            if not force:
                raise StoreConflict(f"router {version} is active; activate another version first (or delete with force)")
            (self.root / ACTIVE_FILE).unlink(missing_ok=True)
        shutil.rmtree(directory)
        log.info("deleted router %s from %s", version, self.describe())
