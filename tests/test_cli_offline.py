import json

import pytest

from avengers.cli import main


def test_fit_eval_sweep(labels_dir, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    common = ["--embedder-backend", "hashing", "--cache-dir", cache]
    assert main(["fit", "--labels", str(labels_dir / "train.jsonl"), "--k", "6", "--out", str(tmp_path / "r"), *common]) == 0
    assert "router r-" in capsys.readouterr().out
    assert main(["eval", "--router", str(tmp_path / "r"), "--labels", str(labels_dir / "test.jsonl"), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["average"]["rows"] == 90 and {d["dataset"] for d in report["datasets"]} == {
        "arithmetic", "geography", "programming"}
    assert main(["eval", "--router", str(tmp_path / "r"), "--labels", str(labels_dir / "test.jsonl"), *common]) == 0
    assert "| **average** |" in capsys.readouterr().out
    out = tmp_path / "sweep"
    assert main(["sweep", "--labels", str(labels_dir / "train.jsonl"), "--eval", str(labels_dir / "test.jsonl"),
                 "--k", "1,3,9", "--out", str(out), *common]) == 0
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["k"] for r in rows] == [1, 3, 9]
    assert "| 9 |" in (out / "sweep.md").read_text()


def test_bad_labels_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "dataset": "d", "split": "s", "query": "q", "scores": {"m": 2}}\n')
    assert main(["fit", "--labels", str(bad), "--k", "2", "--out", str(tmp_path / "r"), "--no-cache",
                 "--embedder-backend", "hashing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "bad.jsonl:1 (id 'x'): score of 'm' is 2.0, outside [0, 1]" in err


def test_bad_k_list(labels_dir, tmp_path, capsys):
    assert main(["sweep", "--labels", str(labels_dir / "train.jsonl"), "--eval", str(labels_dir / "test.jsonl"),
                 "--k", "4,x", "--out", str(tmp_path), "--embedder-backend", "hashing", "--no-cache"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"]])
def test_help(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
