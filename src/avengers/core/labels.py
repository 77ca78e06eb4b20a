"""The labels format: one JSON object a line with per-model correctness of each query.

Each row has ``id`` (str), ``dataset`` (str), ``split`` (str), ``query`` (str) and ``scores``
({model: float in [0, 1]}), and optionally ``costs`` ({model: float >= 0}, e.g. dollars or tokens per
query; the same models as ``scores``) for cost-aware routing. Every row must score the same models. This is the format of the
calibration data a router is fitted on and of the data it is evaluated on.

Reading is strict: the first bad row raises :class:`LabelsError` whose message names the file,
the line number and the row id, so the user can fix the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED_FIELDS: dict[str, type] = {"id": str, "dataset": str, "split": str, "query": str, "scores": dict}


class LabelsError(ValueError):
    """A labels file that cannot be used; the message names the offending row."""


@dataclass(frozen=True)
class LabeledQuery:
    """One row of a labels file."""

    id: str
    dataset: str
    split: str
    query: str
    scores: dict[str, float]
    costs: dict[str, float] | None = None
    """Cost of each model on this query (optional)."""


@dataclass
class LabelSet:
    """Rows of a labels file, with the score matrix laid out for the algorithms."""

    rows: list[LabeledQuery]
    models: list[str]
    """Model names in the order of the score matrix columns (as first seen in the file)."""
    source: str = "<memory>"

    @property
    def queries(self) -> list[str]:
        return [r.query for r in self.rows]

    @property
    def datasets(self) -> list[str]:
        """Dataset of each row."""
        return [r.dataset for r in self.rows]

    @property
    def dataset_names(self) -> list[str]:
        """Distinct datasets, in order of first appearance."""
        return list(dict.fromkeys(self.datasets))

    def score_matrix(self, models: list[str] | None = None) -> np.ndarray:
        """(n_rows, n_models) float64 matrix of scores, columns in ``models`` order."""
        models = self.models if models is None else models
        missing = [m for m in models if m not in self.models]
        if missing:
            raise LabelsError(f"{self.source}: models {missing} are not scored in this file")
        return np.array([[r.scores[m] for m in models] for r in self.rows], dtype=np.float64)

    @property
    def has_costs(self) -> bool:
        """Whether every row has costs."""
        return all(r.costs is not None for r in self.rows)

    def cost_matrix(self, models: list[str] | None = None) -> np.ndarray | None:
        """(n_rows, n_models) float64 costs, columns in ``models`` order; None unless every row has costs."""
        if not self.has_costs:
            return None
        models = self.models if models is None else models
        return np.array([[r.costs[m] for m in models] for r in self.rows], dtype=np.float64)  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, mask: np.ndarray | list[bool]) -> LabelSet:
        rows = [r for r, keep in zip(self.rows, mask) if keep]
        return LabelSet(rows=rows, models=self.models, source=self.source)


def _where(source: str, line_no: int, row_id: object | None = None) -> str:
    where = f"{source}:{line_no}"
    if isinstance(row_id, str):
        where += f" (id {row_id!r})"
    return where


def parse_row(obj: object, source: str, line_no: int, models: list[str] | None) -> LabeledQuery:
    """Validate one decoded JSON row; raise LabelsError naming the row."""
    if not isinstance(obj, dict):
        raise LabelsError(f"{_where(source, line_no)}: expected a JSON object, got {type(obj).__name__}")
    row_id = obj.get("id")
    where = _where(source, line_no, row_id)
    for name, kind in REQUIRED_FIELDS.items():
        if name not in obj:
            raise LabelsError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], kind):
            raise LabelsError(f"{where}: field {name!r} must be {kind.__name__}, got {type(obj[name]).__name__}")
    if not obj["query"].strip():
        raise LabelsError(f"{where}: empty query")
    scores = obj["scores"]
    if not scores:
        raise LabelsError(f"{where}: 'scores' has no models")
    clean: dict[str, float] = {}
    for model, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LabelsError(f"{where}: score of {model!r} must be a number, got {value!r}")
        value = float(value)
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise LabelsError(f"{where}: score of {model!r} is {value}, outside [0, 1]")
        clean[model] = value
    if models is not None and set(clean) != set(models):
        extra = sorted(set(clean) - set(models))
        absent = sorted(set(models) - set(clean))
        detail = "; ".join(
            part
            for part in (f"not in earlier rows: {extra}" if extra else "", f"missing: {absent}" if absent else "")
            if part
        )
        raise LabelsError(f"{where}: models differ from the first row ({detail})")
    costs = None
    if obj.get("costs") is not None:
        costs = parse_costs(obj["costs"], where, clean)
    return LabeledQuery(
        id=row_id, dataset=obj["dataset"], split=obj["split"], query=obj["query"], scores=clean, costs=costs
    )


def parse_costs(costs: object, where: str, scores: dict[str, float]) -> dict[str, float]:
    """Validate the optional ``costs`` of a row: a finite number >= 0 for each scored model."""
    if not isinstance(costs, dict):
        raise LabelsError(f"{where}: field 'costs' must be dict, got {type(costs).__name__}")
    if set(costs) != set(scores):
        raise LabelsError(f"{where}: 'costs' must name the scored models {sorted(scores)}, got {sorted(costs)}")
    clean: dict[str, float] = {}
    for model, value in costs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise LabelsError(f"{where}: cost of {model!r} must be a finite number >= 0, got {value!r}")
        clean[model] = float(value)
    return clean


def read_labels(path: str | Path) -> LabelSet:
    """Read and validate a labels JSONL file."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise LabelsError(f"{source}: no such file")
    rows: list[LabeledQuery] = []
    models: list[str] | None = None
    seen_ids: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelsError(f"{_where(source, line_no)}: invalid JSON ({exc.msg})") from None
            row = parse_row(obj, source, line_no, models)
            if row.id in seen_ids:
                raise LabelsError(
                    f"{_where(source, line_no, row.id)}: duplicate id (first on line {seen_ids[row.id]})"
                )
            seen_ids[row.id] = line_no
            if models is None:
                models = list(row.scores)
            rows.append(row)
    if not rows:
        raise LabelsError(f"{source}: empty labels file (no rows)")
    return LabelSet(rows=rows, models=models or [], source=source)


def write_labels(path: str | Path, rows: list[LabeledQuery]) -> None:
    """Write rows in the labels format."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in rows:
            obj = {"id": r.id, "dataset": r.dataset, "split": r.split, "query": r.query, "scores": r.scores}
            if r.costs is not None:
                obj["costs"] = r.costs
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
