"""A bounded recursive-descent parser of LaTeX / plain math into sympy objects — never ``eval``.

Input length, literal size, exponents, node count and expansion size are bounded (:class:`MathLimits`), so
any text parses in bounded time; this is what the voter uses while serving. ``math-verify`` (the reference
checker of math answers) is not used here because its timeout relies on SIGALRM, which works only in the
main thread; tests/test_latex_differential.py compares the two on real answers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


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

    Grammar: expr := term (('+'|'-') term)*; term := product (('*'|'/') product)*; product := unary power*
    (implicit multiplication); unary := ('-'|'+') unary | power; power := postfix ('^' unary)?; postfix := atom '!'*;
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
        value = self.product()
        while True:
            token = self.peek()
            if token in (("op", "*"), ("cmd", "cdot"), ("cmd", "times")):
                self.take()
                value = value * self.product()
            elif token in (("op", "/"), ("cmd", "div")):
                self.take()
                divisor = self.product()
                if divisor == 0:
                    raise MathParseError("division by zero")
                value = value / divisor
            else:
                return value
            self.count()

    def product(self) -> Any:
        """Implicit multiplication, which binds tighter than ``*`` and ``/``: "1/2x" is 1/(2x), "(a-b)/2y" is
        (a-b)/(2y), as math-verify (latex2sympy) and most authors read them."""
        value = self.unary()
        while self.starts_atom(self.peek()):
            value = value * self.power()
            self.count()
        return value

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




KNOWN_WORDS = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)
"""Words of three letters or more that the parser reads (functions, constants); any other word is prose."""


def parse_expression(text: str, limits: MathLimits):
    """The sympy object of ``text`` (LaTeX or plain math); :class:`MathParseError` when the bounded parse refuses it."""
    return _MathParser(_tokenize(text), limits).parse()
