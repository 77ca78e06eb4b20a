"""Task types of queries: inference from the query text, and the instruction each type is asked with.

The voter extracts answers per task type (:mod:`avengers.core.answers`), so a query must carry one. When the
caller gives none, :func:`infer_task_type` decides with a few documented, deliberately simple rules, tried in
this order (the first that matches wins):

1. **code** when the caller gave tests or an entry point;
2. **multiple_choice** when the query lists at least two options on their own lines, lettered from "A"
   ("A. ...", "(B) ...", "C) ...", "D: ...");
3. **code** when the query holds a fenced block (```), a Python definition (``def f(``, ``class X:``) or asks
   to write/implement a function, program or script;
4. **math** on math cues: LaTeX (``\\frac``, ``\\sqrt``, ``$...$``), an arithmetic expression between numbers
   ("3 + 4", "2^5", "x = 7"), a wording such as "how many", "calculate", "solve", "what is the value", or two
   numbers with a quantity word ("area", "total", "average", "cost", "left", ...);
5. **free_text** otherwise.

The names are those of :data:`avengers.config.tasks.TASK_TYPES`.

:func:`task_messages` turns a query into the chat messages sent to the models: the task's instruction
(asking for the answer in the form its extractor reads best) as the system message, then the query as the
user message, unchanged, so backends that look recorded answers up by the query text still find them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from avengers.config.tasks import CODE, DEFAULT_INSTRUCTIONS, FREE_TEXT, MATH, MULTIPLE_CHOICE, TASK_TYPES

__all__ = [
    "CODE", "DEFAULT_INSTRUCTIONS", "FREE_TEXT", "MATH", "MULTIPLE_CHOICE", "TASK_TYPES",
    "infer_task_type", "option_letters", "task_messages",
]

_OPTION_LINE = re.compile(r"^\s*(?:\(([A-J])\)|([A-J])[.):])\s+\S", re.MULTILINE)
_CODE_CUES = re.compile(
    r"```|^\s*(?:async\s+)?def\s+\w+\s*\(|^\s*class\s+\w+\s*[(:]|"
    r"\b(?:write|implement|complete|code)\s+(?:a|an|the)?\s*(?:python\s+)?(?:function|program|script|method)\b",
    re.MULTILINE | re.IGNORECASE,
)
_MATH_CUES = re.compile(
    r"\\(?:frac|dfrac|sqrt|boxed|cdot|times|sum|int|pi|le|ge)\b|\$[^$\n]+\$|"
    r"\d\s*[-+*/^×÷]\s*\(?\s*\d|\b[a-z]\s*=\s*-?\d|\d\s*=\s*\d|"
    r"\b(?:how\s+many|how\s+much|calculate|compute|evaluate|solve|simplify|what\s+is\s+the\s+(?:value|sum|product|"
    r"remainder|area|probability)|sum\s+of|product\s+of|equation|remainder|divisible|integers?|percent)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUANTITY_WORDS = re.compile(
    r"\b(?:find|total|area|perimeter|volume|average|mean|difference|left|remain(?:s|ing)?|cost|price|speed|per|"
    r"twice|half|times|percent(?:age)?)\b",
    re.IGNORECASE,
)



def option_letters(query: str) -> list[str]:
    """Option letters listed on their own lines in ``query``, in order ("A. ...", "(B) ...")."""
    return [a or b for a, b in _OPTION_LINE.findall(query)]


def infer_task_type(query: str, *, tests: Sequence[str] = (), entry_point: str = "") -> str:
    """The task type of ``query`` by the rules of this module's docstring."""
    if tests or entry_point:
        return CODE
    letters = option_letters(query)
    if len(letters) >= 2 and letters[0] == "A" and "B" in letters:
        return MULTIPLE_CHOICE
    if _CODE_CUES.search(query):
        return CODE
    if _MATH_CUES.search(query) or (len(_NUMBER.findall(query)) >= 2 and _QUANTITY_WORDS.search(query)):
        return MATH
    return FREE_TEXT


def task_messages(
    query: str, task_type: str, instructions: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(role, content) chat messages for ``query``: the task's instruction (if any), then the query."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; known: {list(TASK_TYPES)}")
    instruction = (DEFAULT_INSTRUCTIONS if instructions is None else instructions).get(task_type, "")
    messages = [("system", instruction)] if instruction.strip() else []
    return [*messages, ("user", query)]
