"""Math answers: the last ``\\boxed{}``, "Answer:" line or last number, normalised to an exact key.

Numbers become reduced fractions ("0.5", "1/2", "\\frac{1}{2}", ".50" -> "1/2"; "1,000" and "$1000" -> "1000";
"50\\%" -> "50", the percent sign being dropped), other expressions are read by the bounded parser of
:mod:`avengers.core.answers.latex` into sympy objects, then expanded and cancelled (never the unbounded
``simplify``) so that equal expressions print the same ("2x+1" == "1+2x", "\\sqrt{4}" == "2"). Whatever
cannot be parsed falls back to a whitespace-free lowercase string."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

from avengers.core.answers.base import (
    TEXT_COMMAND,
    AnswerExtractor,
    balanced_group,
    last_boxed,
    register_extractor,
)
from avengers.core.answers.latex import KNOWN_WORDS, MathLimits, MathParseError, parse_expression

MAX_NUMBER_CHARS = 1000
"""Longer numeric answers compare as text (Python refuses to convert huge digit strings)."""


def fraction_key(value: Fraction) -> str:
    """ "1/2", "-3", "1000": the canonical text of an exact rational."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


_LATEX_SPACING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\[!,;:> ]|\\q?quad(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_PLAIN_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(
    r"([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}"
)
_MIXED_NUMBER = re.compile(r"(\d+)\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_PLAIN_MIXED_NUMBER = re.compile(r"(\d+)\s+(\d+)\s*/\s*(\d+)")
_NUMBER_WITH_UNIT = re.compile(
    r"([-+]?(?:\d+\s*\\frac\s*\{\d+\}\s*\{\d+\}|\d+\s+\d+/\d+|[\d.,/]*\d))\s+([A-Za-z][A-Za-z ./]*)"
)
_ASSIGNMENT = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*([^=]+)")
_WHOLE_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
SENSE_WORDS = frozenset({
    "profit", "loss", "gain", "am", "pm", "increase", "decrease", "more", "less", "older", "younger",
    "before", "after", "ago", "later", "north", "south", "east", "west", "left", "right", "up", "down",
    "above", "below", "faster", "slower", "not",
})  # fmt: skip
"""Words after a number that change what it means ("2% profit" is not "2% loss"): kept, unlike units."""
_UNICODE_MATH = str.maketrans({
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u00f7": "/",
    "\u03c0": "\\pi ", "\u00b2": "^2", "\u00b3": "^3", "\u00bd": "\\frac{1}{2}", "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}",
})  # fmt: skip
"""Unicode math as plain text writes it ("7(\u221a3 \u2013 1)", "2\u03c0", "9 \u00bd"): en/em dash and minus sign,
times, dot, division, pi, squared, cubed, halves and quarters."""
_UNICODE_ROOT = re.compile(r"\u221a\s*(\d+(?:\.\d+)?|[A-Za-z])")


def clean_math(answer: str) -> str:
    """Strip LaTeX decoration, units and currency from a raw math answer (no parsing)."""
    s = answer.strip().translate(_UNICODE_MATH)
    s = _UNICODE_ROOT.sub(r"\\sqrt{\1}", s).replace("\u221a", "\\sqrt")  # √12 is sqrt(12), \sqrt12 is sqrt(1)*2
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        while s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    if (boxed := _WHOLE_BOXED.match(s)) and (group := balanced_group(s, boxed.end() - 1)) and group[1] == len(s):
        s = group[0].strip()  # a gold answer written "\boxed{5}"
    s = s.replace("{,}", ",").replace("\\displaystyle", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = _LATEX_SPACING.sub("", s)
    s = TEXT_COMMAND.sub(lambda m: " " + m.group(1) + " ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.strip().rstrip(".").strip()
    assignment = _ASSIGNMENT.fullmatch(s)
    if assignment:
        s = assignment.group(1).strip()
    unit = _NUMBER_WITH_UNIT.fullmatch(s)
    if unit and len(unit.group(2).strip()) >= 2:
        words = set(re.findall(r"[a-z]+", unit.group(2).lower()))
        if not words & (SENSE_WORDS | KNOWN_WORDS):  # "5 dollars" is 5; "2% loss" and "3 pi" are not 2 and 3
            s = unit.group(1)
    return s.strip()


def exact_number(s: str) -> Fraction | None:
    """The exact value of a plain numeric answer (integer, decimal, thousands, a/b, \\frac, mixed)."""
    if len(s) > MAX_NUMBER_CHARS:
        return None
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    if m := _PLAIN_FRACTION.fullmatch(s):
        return None if int(m.group(2)) == 0 else Fraction(int(m.group(1)), int(m.group(2)))
    if m := _LATEX_FRACTION.fullmatch(s):
        denominator = Fraction(m.group(3))
        if denominator == 0:
            return None
        value = Fraction(m.group(2)) / denominator
        return -value if m.group(1) == "-" else value
    if m := _PLAIN_MIXED_NUMBER.fullmatch(s):  # "4 1/3" is 13/3
        if int(m.group(3)) == 0:
            return None
        return int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3)))
    if m := _MIXED_NUMBER.fullmatch(s):
        if int(m.group(3)) == 0:
            return None
        return int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3)))
    return None


def split_top_level(s: str, separator: str = ",") -> list[str]:
    """Split at separators outside brackets and braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(s):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def expanded_terms(expr: Any) -> int:
    """Upper bound on the number of terms ``expand`` produces (multinomial count for powers of sums)."""
    if expr.is_Add:
        return sum(expanded_terms(arg) for arg in expr.args)
    if expr.is_Mul:
        return math.prod(expanded_terms(arg) for arg in expr.args)
    if expr.is_Pow and expr.exp.is_Integer:
        terms, power = expanded_terms(expr.base), abs(int(expr.exp))
        return math.comb(power + terms - 1, terms - 1) if terms > 1 else 1
    return 1


@lru_cache(maxsize=4096)
def symbolic_key(s: str, limits: MathLimits) -> str | None:
    """Canonical text of a parsed, expanded and cancelled expression; None when the bounded parse refuses it."""
    if len(s) > limits.max_chars:
        return None
    words = re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", " ", s))
    if any(w not in KNOWN_WORDS for w in words):
        return None  # prose ("Monday"), not a product of single-letter variables
    try:
        import sympy

        expr = parse_expression(s, limits)
        if expr.is_Rational:
            return fraction_key(Fraction(int(expr.p), int(expr.q)))
        # One form for (x+1)^2 and x^2+2x+1, and for (x^2-1)/(x-1) and x+1. No general simplify():
        # its run time has no useful bound (trigonometric identities can take minutes).
        if expanded_terms(expr) > limits.max_expanded_terms:
            return None
        expr = sympy.expand(expr)
        symbols = expr.free_symbols
        if symbols and not expr.is_polynomial(*symbols) and expr.is_rational_function(*symbols):
            expr = sympy.expand(sympy.cancel(expr))
        if expr.is_Rational:
            return fraction_key(Fraction(int(expr.p), int(expr.q)))
        return str(expr)
    except (MathParseError, ArithmeticError, TypeError, ValueError, RecursionError, AttributeError):
        return None


def math_key(answer: str, limits: MathLimits, symbolic: bool = True, depth: int = 0) -> str | None:
    """Canonical key of a raw math answer: exact number, canonical expression, tuple, or plain text."""
    s = clean_math(answer)
    if not s:
        return None
    value = exact_number(s)
    if value is not None:
        return fraction_key(value)
    if depth == 0 and not _THOUSANDS.fullmatch(s):
        brackets = s[0] + s[-1] if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}" else ""
        inner = s[1:-1] if brackets else s
        parts = split_top_level(inner)
        if len(parts) > 1 and all(p.strip() for p in parts):
            keys = [math_key(p, limits, symbolic, depth + 1) for p in parts]
            return brackets[:1] + ",".join(k or p.strip() for k, p in zip(keys, parts)) + brackets[1:]
    if symbolic:
        key = symbolic_key(s, limits)
        if key is not None:
            return key
    return re.sub(r"\s+", "", s).lower()


_ANSWER_MARKER = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?|####", re.IGNORECASE)
_INLINE_MATH = re.compile(r"\$([^$]+)\$|\\\((.+?)\\\)")
_LAST_VALUE = re.compile(
    r"[-+]?\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}|[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?(?:\s*/\s*\d+)?"
    r"|[-+]?\.\d+"
)


@register_extractor("math")
class MathExtractor(AnswerExtractor):
    """Last ``\\boxed{...}``, else the last "Answer:"/"The answer is"/"####", else the last number."""

    def __init__(self, symbolic: bool = True, max_symbolic_chars: int = 200):
        self.symbolic = symbolic
        self.limits = MathLimits(max_chars=max_symbolic_chars)

    def extract(self, text: str) -> str | None:
        boxed = last_boxed(text)
        if boxed:
            return boxed
        markers = list(_ANSWER_MARKER.finditer(text))
        if markers:
            span = text[markers[-1].end() :].strip().split("\n", 1)[0].strip()
            answer = self._answer_in_span(span)
            if answer:
                return answer
        values = list(_LAST_VALUE.finditer(text))
        return values[-1].group(0) if values else None

    @staticmethod
    def _answer_in_span(span: str) -> str | None:
        inline = _INLINE_MATH.search(span)
        if inline:
            return (inline.group(1) or inline.group(2)).strip()
        span = re.split(r"\.\s+(?=[A-Z])", span, maxsplit=1)[0].strip().rstrip(".").strip()
        if len(span.split()) > 3:  # prose after the marker: its first number
            value = _LAST_VALUE.search(span)
            return value.group(0) if value else None
        return span or None

    def normalise(self, answer: str) -> str | None:
        return math_key(answer, self.limits, self.symbolic)
