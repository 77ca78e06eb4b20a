"""Rough edges found walking README.md and docs/*.md on a fresh clone, one test each: the process-wide
--threads kept by `evaluate`, one-line errors for bad config values and malformed YAML, a closed stdout pipe,
`sweep` sweeping a selector that uses K, `fit` checking its options before embedding, `ask` refusing 0 for
counts and routing with every selector of the contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from avengers.cli import build_parser, main
from avengers.cli.ask import ask_request, describe, shorten
from avengers.v1 import gateway_pb2, router_pb2, voter_pb2


def test_evaluate_keeps_the_process_wide_threads():
    parser = build_parser()
    common = ["evaluate", "--from-samples", "s.jsonl", "--out", "o"]
    assert parser.parse_args(["--threads", "1", *common]).threads == 1
    assert parser.parse_args([*common, "--threads", "2"]).threads == 2
    assert parser.parse_args(common).threads is None


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_bad_config_value_is_one_line_naming_model_field_and_value(tmp_path, capsys):
    config = tmp_path / "voter.yaml"
    config.write_text("server:\n  port: 99999\n")
    assert main(["serve", "voter", "--config", str(config)]) == 2
    assert one_error_line(capsys) == (
        "avengers serve: error: VoterServiceConfig: server.port: Input should be less than or equal to 65535 "
        "(got '99999')"
    )


def test_malformed_yaml_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "voter.yaml"
    config.write_text("server: [\n")
    assert main(["serve", "voter", "--config", str(config)]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"avengers serve: error: not valid YAML: {config}, line 2, column 1:"), err


def test_a_missing_file_is_named(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "tasks.jsonl"
    assert main(["calibrate-tasks", "--count", "3", "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"avengers calibrate-tasks: error: {out}: no such file or directory"


def test_a_closed_stdout_pipe_stops_quietly(tmp_path):
    # The reader closes its end before the command writes (it is still importing): the write fails with EPIPE.
    process = subprocess.Popen(
        [sys.executable, "-m", "avengers", "calibrate-tasks", "--count", "3", "--out", str(tmp_path / "t.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_sweep_routes_with_a_cluster_selector_unless_told(labels_dir, tmp_path, capsys):
    common = ["--labels", str(labels_dir / "train.jsonl"), "--eval", str(labels_dir / "test.jsonl"), "--k", "1,6",
              "--embedder-backend", "hashing", "--no-cache"]
    assert main(["sweep", *common, "--out", str(tmp_path / "s")]) == 0
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [row["test"]["strategy"] for row in rows] == ["nearest", "nearest"]
    # K=1 routes every query to the one best model; K=6 routes per topic.
    assert rows[0]["test"]["average"]["routed"] != rows[1]["test"]["average"]["routed"]
    capsys.readouterr()
    assert main(["sweep", *common, "--out", str(tmp_path / "h"), "--strategy", "hknn"]) == 2
    assert "--strategy hknn does not use the clusters" in one_error_line(capsys)
    assert not (tmp_path / "h").exists()


def test_fit_checks_its_options_before_embedding(labels_dir, tmp_path, capsys):
    assert main(["fit", "--labels", str(labels_dir / "train.jsonl"), "--k", "0", "--out", str(tmp_path / "r"),
                 "--embedder-backend", "hashing", "--no-cache"]) == 2
    captured = capsys.readouterr()
    assert "embedding" not in captured.err and "Traceback" not in captured.err
    assert captured.err.strip() == (
        "avengers fit: error: ClusteringConfig: k: Input should be greater than or equal to 1 (got '0')"
    )


@pytest.mark.parametrize("option", ["--n", "--k", "--max-tokens"])
def test_ask_refuses_zero_instead_of_silently_using_the_default(option, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["ask", "q", option, "0"])
    assert exit_.value.code == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_ask_routes_with_every_selector_of_the_contract():
    for name in ("hknn", "knn", "logistic", "mf", "shrinkage", "nearest", "soft"):
        request = ask_request(build_parser().parse_args(["ask", "q", "--routing", name]))
        assert router_pb2.RoutingStrategy.Name(request.routing) == f"ROUTING_STRATEGY_{name.upper()}"
    request = ask_request(build_parser().parse_args(["ask", "q"]))
    assert request.routing == 0 and request.sampling.n == 0 and request.top_k == 0  # the gateway's defaults


def test_long_free_text_answers_are_shortened_in_the_votes_line():
    long = "Hello! " + "word " * 100
    response = gateway_pb2.AskResponse(
        answer=long, vote=voter_pb2.VoteResponse(counts=[voter_pb2.VoteCount(answer=long, votes=1)])
    )
    votes = next(line for line in describe(response, False).splitlines() if line.startswith("votes:"))
    assert len(votes) < 120 and shorten(long) in votes and shorten(long).endswith("...")
