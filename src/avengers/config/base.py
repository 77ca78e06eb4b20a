"""Base class of every config: strict pydantic model, field docstrings become descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A config usable from Python (keyword arguments), a dict, or a YAML file."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    @classmethod
    def from_yaml(cls, path: str | Path, key: str | None = None) -> Self:
        """Load from a YAML file; ``key`` selects a section of a larger file."""
        with open(path) as file:  # a YAML error then names the file
            data: Any = yaml.safe_load(file) or {}
        if key is not None:
            data = data.get(key, {})
        return cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
