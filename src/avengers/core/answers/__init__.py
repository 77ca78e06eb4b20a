"""Answer extraction and normalisation, one module per task type.

:func:`create_extractor` builds the extractor of a task type (:data:`avengers.config.tasks.TASK_TYPES`);
importing this package registers every extractor: :mod:`.mathematics` (exact numbers and bounded symbolic
expressions, parsed by :mod:`.latex`), :mod:`.multiple_choice`, :mod:`.code` and :mod:`.free_text`.
"""

from avengers.core.answers import code, free_text, mathematics, multiple_choice  # noqa: F401  (registration)
from avengers.core.answers.base import (
    TASK_TYPES,
    AnswerExtractor,
    balanced_group,
    create_extractor,
    extractor_names,
    last_boxed,
    register_extractor,
    warm_up,
)
from avengers.core.answers.latex import MathLimits, MathParseError
from avengers.core.answers.mathematics import clean_math, exact_number, fraction_key, math_key, symbolic_key

__all__ = [
    "TASK_TYPES",
    "AnswerExtractor",
    "MathLimits",
    "MathParseError",
    "balanced_group",
    "clean_math",
    "create_extractor",
    "exact_number",
    "extractor_names",
    "fraction_key",
    "last_boxed",
    "math_key",
    "register_extractor",
    "symbolic_key",
    "warm_up",
]
