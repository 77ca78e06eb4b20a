import json

import numpy as np
import pytest

from avengers.core.labels import LabelsError, read_labels
from conftest import MODELS, write_jsonl


def row(**over):
    r = {"id": "q1", "dataset": "d", "split": "train", "query": "what?", "scores": {"a": 1.0, "b": 0.0}}
    r.update(over)
    return r


def test_reads_rows_and_score_matrix(labels_dir):
    ls = read_labels(labels_dir / "train.jsonl")
    assert len(ls) == 180
    assert ls.models == MODELS
    m = ls.score_matrix()
    assert m.shape == (180, 3) and set(np.unique(m)) <= {0.0, 1.0}
    assert ls.dataset_names and set(ls.dataset_names) == {"arithmetic", "geography", "programming"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"query": None}, "field 'query' must be str"),
        ({"scores": {"a": 1.5, "b": 0.0}}, "score of 'a' is 1.5, outside [0, 1]"),
        ({"scores": {"a": -0.1, "b": 0.0}}, "outside [0, 1]"),
        ({"scores": {"a": "x", "b": 0.0}}, "must be a number"),
        ({"scores": {"a": True, "b": 0.0}}, "must be a number"),
        ({"scores": {"a": 1.0, "c": 0.0}}, "models differ from the first row"),
        ({"scores": {}}, "'scores' has no models"),
        ({"query": "   "}, "empty query"),
    ],
)
def test_bad_second_row_names_the_row(tmp_path, bad, message):
    second = row(id="q2", **bad)
    path = write_jsonl(tmp_path / "l.jsonl", [row(), second])
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    text = str(err.value)
    assert message in text
    assert f"{path}:2" in text and "'q2'" in text
    assert "\n" not in text


def test_missing_field_named(tmp_path):
    bad = row()
    del bad["dataset"]
    path = write_jsonl(tmp_path / "l.jsonl", [bad])
    with pytest.raises(LabelsError, match=r"l.jsonl:1 \(id 'q1'\): missing field 'dataset'"):
        read_labels(path)


def test_empty_file_and_invalid_json_and_duplicates(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(LabelsError, match="empty labels file"):
        read_labels(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(row()) + "\n{not json\n")
    with pytest.raises(LabelsError, match="broken.jsonl:2: invalid JSON"):
        read_labels(broken)
    dup = write_jsonl(tmp_path / "dup.jsonl", [row(), row()])
    with pytest.raises(LabelsError, match="duplicate id"):
        read_labels(dup)
    with pytest.raises(LabelsError, match="no such file"):
        read_labels(tmp_path / "nope.jsonl")
