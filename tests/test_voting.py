"""Voting: majority, weighted, code behaviour groups, free-text medoid, model switch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from avengers.config.embedding import EmbeddingConfig
from avengers.config.sandbox import SandboxConfig
from avengers.config.voting import VotingConfig
from avengers.core.embedding import create_embedder
from avengers.core.voting import Candidate, JudgeOptions, create_judge, model_switch_vote, vote
from avengers.sandbox import create_sandbox

HUMANEVAL_TEST = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(0, 0) == 0
"""


@pytest.fixture(scope="module")
def hashing_embed():
    return create_embedder(EmbeddingConfig(backend="hashing")).encode


@pytest.fixture(scope="module")
def sandbox():
    return create_sandbox(SandboxConfig(timeout_seconds=2.0, startup_seconds=3.0))


def test_math_majority_with_equivalent_forms():
    result = vote(
        "math", ["\\boxed{0.5}", "so it is 1/2", "The answer is \\frac{1}{2}.", "Answer: 3", "no idea"]
    )
    assert result.answer == "1/2"
    assert result.text == "\\boxed{0.5}"
    assert result.winner == 0
    assert [(g.answer, g.votes, g.candidate_indices) for g in result.groups] == [
        ("1/2", 3, [0, 1, 2]),
        ("3", 1, [3]),
    ]
    assert result.abstained == 1
    assert result.agreement == pytest.approx(3 / 5)  # abstentions count in the denominator
    assert result.task_type == "math" and not result.switched


def test_ties_go_to_the_earliest_candidate():
    result = vote("multiple_choice", ["Answer: B", "Answer: A", "Answer: A", "Answer: B"])
    assert result.answer == "B" and result.winner == 0
    assert [g.answer for g in result.groups] == ["B", "A"]
    again = vote("multiple_choice", ["Answer: A", "Answer: B", "Answer: B", "Answer: A"])
    assert again.answer == "A"


def test_weighted_vote_follows_weight_not_count():
    candidates = [
        Candidate("Answer: A", "small", 0.1),
        Candidate("Answer: A", "small", 0.1),
        Candidate("Answer: B", "big", 0.9),
    ]
    assert vote("multiple_choice", candidates, "majority").answer == "A"
    weighted = vote("multiple_choice", candidates, "weighted")
    assert weighted.answer == "B"
    assert weighted.agreement == pytest.approx(0.9 / 1.1)
    assert weighted.groups[0].answer == "A" and weighted.groups[0].weight == pytest.approx(
        0.2
    )  # most votes first


def test_config_sets_the_default_method():
    candidates = [
        Candidate("Answer: A", weight=0.1),
        Candidate("Answer: A", weight=0.1),
        Candidate("(B)", weight=1),
    ]
    assert vote("multiple_choice", candidates, config=VotingConfig(method="weighted")).answer == "B"


def test_all_abstain():
    result = vote("multiple_choice", ["hmm", "no idea"])
    assert result.answer == "" and result.text == "" and result.groups == []
    assert result.abstained == 2 and result.agreement == 0.0 and result.winner is None


@pytest.mark.parametrize(
    "candidates,method,message",
    [
        ([], "majority", "no candidates"),
        (["A"], "plurality", "unknown vote method"),
        ([Candidate("A", weight=-1)], "weighted", "weight"),
        ([Candidate("A", weight=float("nan"))], "majority", "weight"),
    ],
)
def test_bad_input_is_refused(candidates, method, message):
    with pytest.raises(ValueError, match=message):
        vote("multiple_choice", candidates, method)


def test_unknown_task_type():
    with pytest.raises(ValueError, match="unknown task type"):
        create_judge("essay")


def test_code_groups_by_behaviour_in_the_sandbox(sandbox):
    candidates = [
        "```python\ndef add(a, b):\n    return a - b\n```",  # passes test 2 only
        "Sure!\n```python\ndef add(a, b):\n    return a + b\n```",
        "```python\ndef add(x, y):\n    return sum([x, y])\n```",  # different code, same behaviour
        "```python\ndef add(a, b):\n    return a - b  # again\n```",
        "```python\ndef add(a, b):\n    return a * b\n```",
        "I cannot write this.",  # abstains
    ]
    with ThreadPoolExecutor(2) as pool:
        result = vote(
            "code",
            candidates,
            options=JudgeOptions(
                tests=["assert add(2, 2) == 4", "assert add(0, 0) == 0", HUMANEVAL_TEST],
                entry_point="add",
                sandbox=sandbox,
                executor=pool,
            ),
        )
    # The group that passes most tests wins though it is not the largest...
    assert result.answer == "3/3 passed: PPP"
    assert result.winner == 1 and "return a + b" in result.text
    # ...groups are reported by votes, and equal behaviour groups different programs.
    by_answer = {g.answer: g.candidate_indices for g in result.groups}
    assert by_answer == {"3/3 passed: PPP": [1, 2], "1/3 passed: FPF": [0, 3], "2/3 passed: PPF": [4]}
    assert result.abstained == 1
    assert result.agreement == pytest.approx(2 / 6)


def test_code_with_failing_majority_still_prefers_more_tests_passed(sandbox):
    candidates = ["def f():\n    return 1\n", "def f():\n    return 1\n", "def f():\n    return 2\n"]
    result = vote("code", candidates, options=JudgeOptions(tests=["assert f() == 2"], sandbox=sandbox))
    assert result.answer == "1/1 passed: P" and result.winner == 2


def test_code_without_tests_groups_by_program_text():
    candidates = [
        "```python\ndef f(x):\n    return x + 1\n```",
        "```python\ndef f(x):\n    return x+1  # plus one\n```",
        "```python\ndef f(x):\n    return 1 + x\n```",
    ]
    result = vote("code", candidates)
    assert result.groups[0].candidate_indices == [0, 1]
    assert result.answer == "def f(x):\n    return x + 1"


def test_free_text_medoid(hashing_embed):
    candidates = [
        "The Eiffel Tower is in Berlin.",
        "The Eiffel Tower is in Paris, France.",
        "The Eiffel Tower is located in Paris, France.",
        "The Eiffel Tower is in Paris, France.",
        "Bananas are yellow.",
        "   ",
    ]
    result = vote("free_text", candidates, options=JudgeOptions(embed=hashing_embed))
    assert result.winner in (1, 3)
    assert result.answer == "The Eiffel Tower is in Paris, France."
    assert result.groups[0].candidate_indices == [1, 3]  # exact duplicates are near-duplicates
    assert result.abstained == 1
    assert sum(g.votes for g in result.groups) == 5


def test_free_text_medoid_with_a_custom_embedding():
    # Two tight clusters; the larger one holds the medoid.
    vectors = {
        "a1": [1.0, 0.0],
        "a2": [0.99, 0.14],
        "a3": [0.99, -0.05],
        "b1": [0.0, 1.0],
        "b2": [0.1, 0.99],
    }

    def embed(texts):
        m = np.array([vectors[t] for t in texts], dtype=np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    result = vote(
        "free_text",
        ["b1", "a1", "a2", "b2", "a3"],
        options=JudgeOptions(embed=embed),
        config=VotingConfig(near_duplicate_similarity=0.95),
    )
    texts = ["b1", "a1", "a2", "b2", "a3"]
    matrix = embed(texts)
    medoid = texts[int(np.argmax((matrix @ matrix.T).sum(axis=1)))]
    assert medoid.startswith("a")
    assert result.answer == medoid
    assert result.groups[0].candidate_indices == [1, 2, 4]
    assert result.agreement == pytest.approx(3 / 5)


def test_free_text_needs_an_embedder():
    with pytest.raises(ValueError, match="embedding"):
        vote("free_text", ["some text"])


def test_model_switch_keeps_a_confident_first_model():
    candidates = [Candidate("Answer: A", "m1")] * 5 + [Candidate("Answer: B", "m2")] * 5
    result = model_switch_vote("multiple_choice", candidates)
    assert result.answer == "A" and not result.switched
    assert result.agreement == 1.0
    assert result.groups[0].candidate_indices == [0, 1, 2, 3, 4]


def test_model_switch_falls_back_to_all_candidates():
    first = ["Answer: A", "Answer: A", "Answer: A", "Answer: B", "Answer: C"]  # 0.6 < 0.8
    candidates = [Candidate(t, "m1") for t in first] + [Candidate("Answer: B", "m2")] * 5
    result = model_switch_vote("multiple_choice", candidates)
    assert result.switched
    assert result.answer == "B"
    assert result.groups[0].candidate_indices == [3, 5, 6, 7, 8, 9]
    assert result.agreement == pytest.approx(6 / 10)
    # A lower threshold keeps the first model's answer.
    assert model_switch_vote("multiple_choice", candidates, threshold=0.5).answer == "A"


def test_model_switch_threshold_must_be_a_share():
    with pytest.raises(ValueError, match="threshold"):
        model_switch_vote("multiple_choice", ["Answer: A"], threshold=1.5)


def test_model_switch_evaluates_each_code_candidate_once(sandbox):
    runs = []

    class CountingSandbox:
        def run(self, program, tests=(), entry_point=None, timeout_seconds=None):
            runs.append(program)
            return sandbox.run(program, tests, entry_point, timeout_seconds)

    candidates = [
        Candidate("def f():\n    return 1\n", "m1"),
        Candidate("def f():\n    return 3\n", "m1"),
        Candidate("def f():\n    return 1 + 2\n", "m2"),
    ]
    result = model_switch_vote(
        "code", candidates, options=JudgeOptions(tests=["assert f() == 3"], sandbox=CountingSandbox())
    )
    assert result.switched and result.answer == "1/1 passed: P"
    assert result.groups[0].candidate_indices == [1, 2]
    assert len(runs) == 3  # the first model's candidates were not run again
