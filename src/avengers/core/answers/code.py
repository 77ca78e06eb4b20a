"""Code answers: the Python program in a generated text (the last parseable fenced block, else the text)."""

from __future__ import annotations

import ast
import re

from avengers.core.answers.base import AnswerExtractor, register_extractor

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = {"python", "py", "python3", ""}


def parses(program: str) -> bool:
    try:
        ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _is_bare_expression(program: str) -> bool:
    """One expression statement, such as a single word of prose ("Here") that happens to parse."""
    try:
        body = ast.parse(program).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return len(body) == 1 and isinstance(body[0], ast.Expr)


@register_extractor("code")
class CodeExtractor(AnswerExtractor):
    """The program in a text: a fenced Python block, else the raw text when it parses as Python.

    Among fenced blocks (```python, ```py or unlabelled; an unclosed final fence counts; and the text before
    the first fence when it is a program — a reply whose opening fence was prefilled, which goes on "code ```
    prose"), those that parse are preferred; with an ``entry_point``, the last block defining it wins; otherwise the longest
    (the solution rather than a usage example), the last among equals.
    """

    def __init__(self, entry_point: str | None = None):
        self.entry_point = entry_point or None

    def extract(self, text: str) -> str | None:
        blocks = [
            m.group(2).strip("\n") for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_LABELS
        ]
        blocks = [b for b in blocks if b.strip()]
        opening = text.find("```")
        if opening > 0:  # code before the first fence: its opening fence was in the prompt (a prefilled reply)
            before = text[:opening].strip("\n")
            if before.strip() and parses(before) and not _is_bare_expression(before):
                blocks.insert(0, before)
        if not blocks:  # raw text: a program only if it parses (prose abstains)
            program = text.strip("\n")
            return program if program.strip() and parses(program) else None
        candidates = [b for b in blocks if parses(b)] or blocks
        if self.entry_point:
            definition = re.compile(
                rf"^\s*(?:async\s+)?def\s+{re.escape(self.entry_point)}\s*\(", re.MULTILINE
            )
            defining = [b for b in candidates if definition.search(b)]
            if defining:
                return defining[-1]
        longest = max(len(b) for b in candidates)
        return [b for b in candidates if len(b) == longest][-1]

    def normalise(self, answer: str) -> str | None:
        """Formatting- and comment-independent program text (ast round trip); raw text if it does not parse."""
        try:
            return ast.unparse(ast.parse(answer))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return answer.strip() or None
