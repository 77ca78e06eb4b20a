"""Files shipped with the package: the default local stack of ``avengers up``.

- ``default_pool.yaml``: the model pool — two model families on llama.cpp (CPU), SmolLM2-135M-Instruct and
  Gemma 3 270M, with their prompts (chat templates inline).
- ``calibration_tasks.jsonl``: generated tasks with known answers (``avengers calibrate-tasks --count 120``).
- ``default_labels.jsonl``: the labels measured by running the default pool on those tasks
  (``avengers calibrate``); the default router of ``avengers up`` is fitted on it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(name: str) -> Path:
    """Path of a shipped data file (the package is installed as files, never zipped)."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not shipped in {__name__} (looked at {path})")
    return path
