"""Task types and the instruction each is asked with: names shared by the recipe, the configs and the services.

A leaf module (imports nothing of the project), so configs, the core library and every service can use the
same names without importing one another. The voter extracts answers per task type
(:mod:`avengers.core.answers`), and :func:`avengers.core.tasks.task_messages` sends a query with its type's
instruction.
"""

from __future__ import annotations

MATH, MULTIPLE_CHOICE, CODE, FREE_TEXT = "math", "multiple_choice", "code", "free_text"

TASK_TYPES: tuple[str, ...] = (MATH, MULTIPLE_CHOICE, CODE, FREE_TEXT)
"""Every task type, in the order of the ``TaskType`` proto enum."""

DEFAULT_INSTRUCTIONS: dict[str, str] = {
    MATH: "Solve the problem. Think briefly, then finish with a line 'Answer: <final answer>'.",
    MULTIPLE_CHOICE: "Choose the correct option. Finish with a line 'Answer: <letter>'.",
    CODE: "Write the complete Python solution in one ```python code block.",
    FREE_TEXT: "",
}
"""Instruction (system message) per task type; empty sends the query alone."""
