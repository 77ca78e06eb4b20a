"""Answer extraction of base-model outputs that continue with a new few-shot exemplar."""

from __future__ import annotations

from avengers.core.answers import create_extractor
from avengers.core.answers.base import cut_continuation


def test_the_answer_before_a_self_written_next_question_counts():
    text = (
        "Let's think step by step. Procurement is acquiring goods. The answer is (I).\n\n"
        "Question:\nWhich of these is a type of ethics?\nOptions:\nA. x\nB. y\n"
        "Answer: Let's think step by step. The answer is (A)."
    )
    assert create_extractor("multiple_choice").key(text) == "I"
    math = "3 + 4 = 7. The answer is 7.\nQ: What is 2 + 2?\nA: 2 + 2 = 4. The answer is 4."
    assert create_extractor("math").key(math) == "7"


def test_a_text_that_opens_with_the_question_is_kept():
    text = "Question: what is asked?\nThe answer is (B)."
    assert cut_continuation(text) == text
    assert create_extractor("multiple_choice").key(text) == "B"
    assert cut_continuation("no exemplar here. The answer is (C).") == "no exemplar here. The answer is (C)."
