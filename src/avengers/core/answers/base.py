"""The answer-extractor interface and its registry, and helpers shared by the extractors.

Each :class:`AnswerExtractor` pulls the answer out of a generated text (:meth:`~AnswerExtractor.extract`)
and turns it into a canonical key (:meth:`~AnswerExtractor.normalise`) so that equivalent answers compare
equal; :meth:`~AnswerExtractor.key` does both. Extractors register by task-type name
(:data:`avengers.config.tasks.TASK_TYPES`); :func:`create_extractor` builds one."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from avengers.config.tasks import TASK_TYPES  # noqa: F401  (re-exported by the package)
from avengers.registry import registry


class AnswerExtractor(ABC):
    """Pulls an answer out of a generated text and normalises it to a comparable key."""

    name: ClassVar[str]

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The raw answer in ``text``, or None when the text holds none."""

    def normalise(self, answer: str) -> str | None:
        """Canonical key of a raw answer (equal keys = equivalent answers); None when unusable."""
        answer = " ".join(answer.split())
        return answer or None

    def key(self, text: str) -> str | None:
        """``normalise(extract(cut_continuation(text)))``: the candidate's vote, or None to abstain."""
        raw = self.extract(cut_continuation(text))
        return None if raw is None else self.normalise(raw)


_CONTINUATION = re.compile(r"\n[ \t]*(?:Question|Q)[ \t]*:")


def cut_continuation(text: str) -> str:
    """``text`` up to a line that opens a new exemplar ("Question:", "Q:") after some answer text.

    Base models prompted with few-shot examples answer, then go on writing a question and answer of their own
    ("... The answer is (A).\n\nQuestion: ... The answer is (G)."); the answer is the one before. On the
    published MMLU-Pro chain-of-thought outputs, taking the last "answer is" read Llama-3-8B as 21% right
    instead of 34%."""
    match = _CONTINUATION.search(text)
    if match and text[: match.start()].strip():
        return text[: match.start()]
    return text


EXTRACTORS = registry("answer extractor", home="avengers.core.answers", label="task type")
"""Answer extractors by task-type name (:data:`avengers.config.tasks.TASK_TYPES`)."""

register_extractor = EXTRACTORS.register
"""Class decorator: make an extractor available under a task-type name."""


def extractor_names() -> list[str]:
    return EXTRACTORS.names()


def create_extractor(task_type: str, **options: Any) -> AnswerExtractor:
    """The extractor for ``task_type`` ("math", "multiple_choice", "code", "free_text")."""
    return EXTRACTORS.create(task_type, **options)


# --------------------------------------------------------------------------------------------------------
# Helpers shared by the extractors


def warm_up() -> None:
    """Import what symbolic math equivalence needs (sympy takes about a second), so a server pays it at start
    instead of on its first math vote."""
    import sympy  # noqa: F401


def balanced_group(text: str, open_index: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[open_index] == "{"`` and the index after it."""
    depth = 0
    for i in range(open_index, len(text)):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i], i + 1
    return None


TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
"""``\\text{...}`` and its kin: the group holds plain text."""

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces) or ``\\boxed x``; None when absent."""
    for match in reversed(list(_BOXED.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] == "{":
            group = balanced_group(text, start)
            if group is not None:
                return group[0].strip()
            continue
        token = re.match(r"[^\s$]+", text[start:])
        if token:
            return token.group(0)
    return None
