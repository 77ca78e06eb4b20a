"""Answer extraction and normalisation, one extractor per task type.

Each :class:`AnswerExtractor` pulls the answer out of a generated text (:meth:`~AnswerExtractor.extract`)
and turns it into a canonical key (:meth:`~AnswerExtractor.normalise`) so that equivalent answers compare
equal; :meth:`~AnswerExtractor.key` does both. Extractors register by task-type name ("math",
"multiple_choice", "code", "free_text"); :func:`create_extractor` builds one.

Math keys are exact: numbers become reduced fractions ("0.5", "1/2", "\\frac{1}{2}", ".50" -> "1/2";
"1,000" and "$1000" -> "1000"; "50\\%" -> "50", the percent sign being dropped), other expressions are
read by a small recursive-descent parser of LaTeX/plain math into sympy objects — never ``eval`` — with
bounded input length, literal size, exponents, node count and expansion size, then expanded and cancelled
(never the unbounded ``simplify``) so that equal expressions print the same ("2x+1" == "1+2x",
"\\sqrt{4}" == "2"). Whatever cannot be parsed falls back to a whitespace-free lowercase string.
"""

from __future__ import annotations

import ast
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, ClassVar

TASK_TYPES = ("math", "multiple_choice", "code", "free_text")
"""Task-type names, as the voter and the registry know them."""


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
        """``normalise(extract(text))``: the candidate's vote, or None to abstain."""
        raw = self.extract(text)
        return None if raw is None else self.normalise(raw)


ExtractorFactory = Callable[..., AnswerExtractor]
_REGISTRY: dict[str, ExtractorFactory] = {}


def register_extractor(name: str) -> Callable[[type[AnswerExtractor]], type[AnswerExtractor]]:
    """Class decorator: make an extractor available under a task-type name."""

    def wrap(cls: type[AnswerExtractor]) -> type[AnswerExtractor]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def extractor_names() -> list[str]:
    return sorted(_REGISTRY)


def create_extractor(task_type: str, **options: Any) -> AnswerExtractor:
    """The extractor for ``task_type`` ("math", "multiple_choice", "code", "free_text")."""
    try:
        factory = _REGISTRY[task_type]
    except KeyError:
        raise ValueError(f"unknown task type {task_type!r}; known: {extractor_names()}") from None
    return factory(**options)


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


# --------------------------------------------------------------------------------------------------------
# Math


class MathParseError(ValueError):
    """An expression the bounded parser refuses (syntax, size or magnitude)."""


_NUMBER_TOKEN = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+(?![\d.]))?|\.\d+")
_COMMAND_TOKEN = re.compile(r"\\[A-Za-z]+|\\.")
_FUNCTIONS = {
    "sqrt",
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "log",
    "ln",
    "exp",
    "arcsin",
    "arccos",
    "arctan",
}
_CONSTANTS = {"pi", "infty", "inf", "oo"}
_GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "theta",
    "lambda",
    "mu",
    "sigma",
    "phi",
    "omega",
    "tau",
    "rho",
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens: num, name, cmd, op."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char.isdigit() or (char == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            match = _NUMBER_TOKEN.match(text, i)
            assert match is not None
            tokens.append(("num", match.group(0)))
            i = match.end()
        elif char.isalpha() and char.isascii():
            j = i
            while j < len(text) and text[j].isalpha() and text[j].isascii():
                j += 1
            word = text[i:j]
            if word in _FUNCTIONS or word in _CONSTANTS:
                tokens.append(("name", word))
            else:  # "xy" is x*y: one variable per letter
                tokens.extend(("name", letter) for letter in word)
            i = j
        elif char == "\\":
            match = _COMMAND_TOKEN.match(text, i)
            if match is None:
                raise MathParseError("dangling backslash")
            tokens.append(("cmd", match.group(0)[1:]))
            i = match.end()
        elif char in "+-*/^()[]{}!":
            tokens.append(("op", char))
            i += 1
        else:
            raise MathParseError(f"unexpected character {char!r}")
    return tokens


class _MathParser:
    """Recursive descent over LaTeX/plain math tokens, building sympy objects (no eval).

    Grammar: expr := term (('+'|'-') term)*; term := unary (('*'|'/'|implicit) unary)*;
    unary := ('-'|'+') unary | power; power := postfix ('^' unary)?; postfix := atom '!'*;
    atom := number | name | function atom | \\frac{..}{..} | \\sqrt[n]{..} | (expr) | {expr}.
    """

    def __init__(self, tokens: list[tuple[str, str]], limits: MathLimits):
        import sympy

        self.sp = sympy
        self.tokens = tokens
        self.pos = 0
        self.limits = limits
        self.nodes = 0

    # token helpers
    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise MathParseError("unexpected end of expression")
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        token = self.take()
        if token[1] != value:
            raise MathParseError(f"expected {value!r}, got {token[1]!r}")

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise MathParseError("expression too large")

    def parse(self) -> Any:
        expr = self.expr()
        if self.peek() is not None:
            raise MathParseError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return expr

    def expr(self) -> Any:
        value = self.term()
        while (token := self.peek()) is not None and token in (("op", "+"), ("op", "-")):
            self.take()
            right = self.term()
            value = value + right if token[1] == "+" else value - right
            self.count()
        return value

    def starts_atom(self, token: tuple[str, str] | None) -> bool:
        if token is None:
            return False
        kind, value = token
        if kind in ("num", "name"):
            return True
        if kind == "cmd":
            return value not in ("cdot", "times", "div")
        return value in ("(", "{", "[")

    def term(self) -> Any:
        value = self.unary()
        while True:
            token = self.peek()
            if token in (("op", "*"), ("cmd", "cdot"), ("cmd", "times")):
                self.take()
                value = value * self.unary()
            elif token in (("op", "/"), ("cmd", "div")):
                self.take()
                divisor = self.unary()
                if divisor == 0:
                    raise MathParseError("division by zero")
                value = value / divisor
            elif self.starts_atom(token):
                value = value * self.power()
            else:
                return value
            self.count()

    def unary(self) -> Any:
        token = self.peek()
        if token == ("op", "-"):
            self.take()
            return -self.unary()
        if token == ("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            exponent = self.unary()
            return self.checked_pow(base, exponent)
        return base

    def checked_pow(self, base: Any, exponent: Any) -> Any:
        if exponent.is_number:
            power = abs(float(exponent))
            if power > self.limits.max_exponent:
                raise MathParseError("exponent too large")
            if base.is_Rational:
                if base != 0 and self.magnitude_digits(base) * power > self.limits.max_digits:
                    raise MathParseError("number too large")
            elif base.is_Atom or base.is_Function:  # x^n, pi^n, sin(x)^n: one node whatever n
                if power > self.limits.max_symbolic_exponent:
                    raise MathParseError("exponent too large")
            elif power > self.limits.max_compound_exponent:  # (a+b)^n expands to many terms
                raise MathParseError("exponent of a compound expression too large")
        self.count()
        return self.sp.Pow(base, exponent)

    def magnitude_digits(self, value: Any) -> float:
        """Approximate |log10(|value|)| of a numeric sympy value without building huge floats."""
        if value.is_Rational:
            p, q = abs(int(value.p)), int(value.q)
            return abs(p.bit_length() - q.bit_length()) * math.log10(2) + 1
        try:
            return abs(math.log10(abs(complex(value.evalf(15))) or 1.0)) + 1
        except (OverflowError, TypeError, ValueError):
            raise MathParseError("number too large") from None

    def postfix(self) -> Any:
        value = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            if not (value.is_Integer and 0 <= int(value) <= self.limits.max_factorial):
                raise MathParseError("factorial of a non-integer or too large")
            value = self.sp.factorial(value)
        return value

    def group(self) -> Any:
        """A {...} group, or a single token as LaTeX allows (\\frac12, \\sqrt2)."""
        token = self.peek()
        if token == ("op", "{"):
            self.take()
            value = self.expr()
            self.expect("}")
            return value
        if token is not None and token[0] == "num" and len(token[1]) > 1 and token[1].isdigit():
            # \frac12 means \frac{1}{2}: LaTeX takes one character as the argument.
            self.tokens[self.pos] = ("num", token[1][1:])
            return self.number(token[1][0])
        return self.atom()

    def number(self, text: str) -> Any:
        if len(text.replace(".", "")) > self.limits.max_digits_literal:
            raise MathParseError("number literal too long")
        mantissa, _, exponent = text.lower().partition("e")
        value = Fraction(mantissa)
        if exponent:
            if abs(int(exponent)) > self.limits.max_exponent:
                raise MathParseError("exponent too large")
            value *= Fraction(10) ** int(exponent)
        self.count()
        return self.sp.Rational(value.numerator, value.denominator)

    def atom(self) -> Any:
        kind, value = self.take()
        sp = self.sp
        self.count()
        if kind == "num":
            return self.number(value)
        if kind == "op" and value in "({[":
            inner = self.expr()
            self.expect({"(": ")", "{": "}", "[": "]"}[value])
            return inner
        if kind == "name":
            if value in _FUNCTIONS:
                return self.function(value)
            if value == "pi":
                return sp.pi
            if value in ("infty", "inf", "oo"):
                return sp.oo
            if value == "e":
                return sp.E
            if value == "i":
                return sp.I
            return sp.Symbol(value)
        if kind == "cmd":
            if value in ("frac", "dfrac", "tfrac"):
                numerator = self.group()
                denominator = self.group()
                if denominator == 0:
                    raise MathParseError("division by zero")
                return numerator / denominator
            if value == "sqrt":
                index = None
                if self.peek() == ("op", "["):
                    self.take()
                    index = self.expr()
                    self.expect("]")
                radicand = self.group()
                return sp.sqrt(radicand) if index is None else self.checked_pow(radicand, 1 / index)
            if value in _FUNCTIONS:
                return self.function(value)
            if value == "pi":
                return sp.pi
            if value == "infty":
                return sp.oo
            if value in _GREEK:
                return sp.Symbol(value)
        raise MathParseError(f"unsupported token {value!r}")

    def function(self, name: str) -> Any:
        sp = self.sp
        argument = self.power() if self.peek() != ("op", "(") else self.atom()
        functions = {
            "sqrt": sp.sqrt,
            "sin": sp.sin,
            "cos": sp.cos,
            "tan": sp.tan,
            "cot": sp.cot,
            "sec": sp.sec,
            "csc": sp.csc,
            "log": sp.log,
            "ln": sp.log,
            "exp": sp.exp,
            "arcsin": sp.asin,
            "arccos": sp.acos,
            "arctan": sp.atan,
        }
        return functions[name](argument)


@dataclass(frozen=True)
class MathLimits:
    """Bounds that keep the symbolic parse cheap whatever the input."""

    max_chars: int = 200
    """Longest expression handed to the parser."""
    max_nodes: int = 200
    """Most tokens/operations in one expression."""
    max_exponent: float = 1000
    """Largest |exponent| of a power or of scientific notation."""
    max_digits: float = 1000
    """Largest number of decimal digits a numeric power may produce."""
    max_digits_literal: int = 60
    """Longest number literal."""
    max_factorial: int = 100
    """Largest n in n!."""
    max_symbolic_exponent: float = 100
    """Largest |exponent| of a symbol, constant or function (x^n, \\pi^n, \\sin(x)^n)."""
    max_expanded_terms: int = 300
    """Expressions whose expansion could have more terms compare as text."""
    max_compound_exponent: float = 10
    """Largest |exponent| of a sum, product or power ((a+b)^n), which expansion multiplies out."""


MAX_NUMBER_CHARS = 1000
"""Longer numeric answers compare as text (Python refuses to convert huge digit strings)."""


def fraction_key(value: Fraction) -> str:
    """ "1/2", "-3", "1000": the canonical text of an exact rational."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


_LATEX_SPACING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\[!,;:> ]|\\q?quad(?![A-Za-z])")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_PLAIN_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(
    r"([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}"
)
_MIXED_NUMBER = re.compile(r"(\d+)\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_NUMBER_WITH_UNIT = re.compile(r"([-+]?[\d.,/]*\d)\s+([A-Za-z][A-Za-z .]+)")
_ASSIGNMENT = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*([^=]+)")


def clean_math(answer: str) -> str:
    """Strip LaTeX decoration, units and currency from a raw math answer (no parsing)."""
    s = answer.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        while s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.replace("{,}", ",").replace("\\displaystyle", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _DEGREES.sub("", s)
    s = _LATEX_SPACING.sub("", s)
    s = _TEXT_COMMAND.sub(lambda m: " " + m.group(1) + " ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.strip().rstrip(".").strip()
    assignment = _ASSIGNMENT.fullmatch(s)
    if assignment:
        s = assignment.group(1).strip()
    unit = _NUMBER_WITH_UNIT.fullmatch(s)
    if unit and len(unit.group(2).strip()) >= 2:
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
    if any(w not in _FUNCTIONS and w not in _CONSTANTS for w in words):
        return None  # prose ("Monday"), not a product of single-letter variables
    try:
        import sympy

        expr = _MathParser(_tokenize(s), limits).parse()
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


# --------------------------------------------------------------------------------------------------------
# Multiple choice

_LETTER = r"\(?\[?\s*([A-J])\s*\]?\)?"
_END = r"(?=$|[\s.,;:!?)\]*])"
_MC_EXPLICIT = [
    re.compile(
        r"(?:final\s+answer|answer|correct\s+(?:answer|option|choice)|best\s+(?:answer|option|choice))"
        r"\s*(?:is|would\s+be|will\s+be|:|=)?\s*:?\s*(?:option|choice|letter)?\s*\**\s*" + _LETTER + _END,
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:option|choice)\s*" + _LETTER + r"\s+is\s+(?:the\s+)?(?:correct|right|best)", re.IGNORECASE
    ),
    re.compile(
        r"\b(?:choose|chose|pick|select|go\s+with)\s+(?:option|choice)?\s*" + _LETTER + _END, re.IGNORECASE
    ),
]
_MC_BARE = re.compile(r"\**\s*" + _LETTER + r"\s*[.):]?\s*\**")
_MC_LEADING = re.compile(r"\**\s*(?:\(([A-J])\)|([A-J])[.):])\s+\S")


@register_extractor("multiple_choice")
class MultipleChoiceExtractor(AnswerExtractor):
    """One option letter A-J, from explicit patterns first (last match wins) to looser ones.

    Order: ``\\boxed{C}``; "answer is C" / "Answer: (C)" / "correct option is C" / "option C is correct";
    a bare "C", "(C)" or "C." as the whole text; a first or last line that starts with "C." / "(C)".
    Capital letters only, so "a" in prose is never an answer.
    """

    def __init__(self, letters: str = "ABCDEFGHIJ"):
        self.letters = letters

    def _valid(self, letter: str | None) -> str | None:
        letter = letter.upper() if letter else None
        return letter if letter and letter in self.letters else None

    def extract(self, text: str) -> str | None:
        boxed = last_boxed(text)
        if boxed:
            inner = _TEXT_COMMAND.sub(lambda m: m.group(1), boxed).strip()
            match = _MC_BARE.fullmatch(inner)
            if match and self._valid(match.group(1)):
                return match.group(1)
        for pattern in _MC_EXPLICIT:
            matches = [m for m in pattern.finditer(text) if self._valid(m.group(1))]
            # "Answer: a" in lower case is not a letter answer ("(a)" is); the words match in any case.
            matches = [m for m in matches if m.group(1).isupper() or text[m.start(1) - 1 : m.start(1)] == "("]
            if matches:
                return matches[-1].group(1).upper()
        stripped = text.strip()
        bare = _MC_BARE.fullmatch(stripped)
        if bare and self._valid(bare.group(1)):
            return bare.group(1)
        lines = [line.strip() for line in stripped.splitlines() if line.strip()]
        for line in (lines[:1] + lines[-1:]) if lines else []:
            leading = _MC_LEADING.match(line)
            if leading:
                letter = self._valid(leading.group(1) or leading.group(2))
                if letter:
                    return letter
        return None

    def normalise(self, answer: str) -> str | None:
        answer = answer.strip().strip("()[]*.: ").upper()
        return answer if len(answer) == 1 and answer in self.letters else None


# --------------------------------------------------------------------------------------------------------
# Code

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LABELS = {"python", "py", "python3", ""}


def parses(program: str) -> bool:
    try:
        ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


@register_extractor("code")
class CodeExtractor(AnswerExtractor):
    """The program in a text: a fenced Python block, else the raw text when it parses as Python.

    Among fenced blocks (```python, ```py or unlabelled; an unclosed final fence counts), those that
    parse are preferred; with an ``entry_point``, the last block defining it wins; otherwise the longest
    (the solution rather than a usage example), the last among equals.
    """

    def __init__(self, entry_point: str | None = None):
        self.entry_point = entry_point or None

    def extract(self, text: str) -> str | None:
        blocks = [
            m.group(2).strip("\n") for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_LABELS
        ]
        blocks = [b for b in blocks if b.strip()]
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


# --------------------------------------------------------------------------------------------------------
# Free text


@register_extractor("free_text")
class FreeTextExtractor(AnswerExtractor):
    """The whole text, stripped; the key collapses whitespace."""

    def extract(self, text: str) -> str | None:
        text = text.strip()
        return text or None
