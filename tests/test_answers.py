"""Answer extraction and normalisation per task type."""

from __future__ import annotations

import builtins
import sys
import time

import pytest

from avengers.core.answers import MathLimits, create_extractor, extractor_names, last_boxed, math_key


@pytest.fixture(scope="module")
def math():
    return create_extractor("math")


@pytest.fixture(scope="module")
def mc():
    return create_extractor("multiple_choice")


def test_registry_knows_every_task_type():
    assert extractor_names() == ["code", "free_text", "math", "multiple_choice"]
    with pytest.raises(ValueError, match="unknown task type"):
        create_extractor("poetry")


@pytest.mark.parametrize(
    "forms",
    [
        ["0.5", "1/2", "\\frac{1}{2}", ".50", "\\dfrac12", "\\tfrac{1}{2}", "$\\frac{1}{2}$", "0.500"],
        ["1,000", "1000", "1000.0", "$1,000", "\\$1000", "1{,}000", "1\\,000"],
        ["$5", "5", "\\$5.00", "5 dollars", "5\\text{ dollars}"],
        ["50\\%", "50%", "50"],
        ["2x+1", "1+2x", "x*2+1", "2 \\cdot x + 1", "x + x + 1"],
        ["\\sqrt{4}", "2", "4/2", "2^1", "\\sqrt[3]{8}"],
        ["\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", "\\frac{\\sqrt 3}{2}", "\\frac{3}{2\\sqrt{3}}"],
        ["(x+1)^2", "x^2+2x+1", "x^{2} + 2x + 1"],
        ["x+1", "\\frac{x^2-1}{x-1}", "\\frac{(x+1)^{3}}{(x+1)^{2}}"],
        ["-\\frac{1}{2}", "-0.5", "-1/2", "\\left(-\\frac{1}{2}\\right)"],
        ["x = 3", "3", "3."],
        ["3\\frac{1}{2}", "7/2", "3.5"],
        ["90^\\circ", "90^{\\circ}", "90"],
        ["\\pi/2", "\\frac{\\pi}{2}", "0.5\\pi"],
        ["(1, 2)", "(1,2)", "\\left( 1, 2 \\right)", "(1, 4/2)"],
        ["\\text{Monday}", "Monday", "monday"],
        # found by the differential test against math-verify (tests/test_latex_differential.py)
        ["\\boxed{5}", "5", "\\fbox{5}"],
        ["7(\u221a3 \u2013 1)", "7\\sqrt{3}-7", "7(\\sqrt{3} - 1)", "7(\u221a3 \u2212 1)"],
        ["\u221a12", "2\\sqrt{3}", "\\sqrt{12}"],
        ["2\u03c0", "2\\pi"],
        ["4 1/3", "13/3", "4\\frac{1}{3}", "4 1/3 km/h", "4 \\frac{1}{3} km/h"],
        ["9 \u00bd", "9.5"],
        ["(a-b)/2y", "\\frac{a-b}{2y}", "(a\u2212b)/2y"],
        ["1/2x", "\\frac{1}{2x}"],
        ["12 m/s", "12"],
    ],
)
def test_equivalent_math_answers_share_a_key(math, forms):
    keys = {form: math.normalise(form) for form in forms}
    assert len(set(keys.values())) == 1, keys


@pytest.mark.parametrize(
    "left,right",
    [
        ("1/2", "1/3"),
        ("2x+1", "2x-1"),
        ("x^2", "2x"),
        ("(1,2)", "(2,1)"),
        ("50", "0.5"),
        ("\\sqrt{2}", "1.414"),
        ("2% profit", "2% loss"),
        ("5 am", "5 pm"),
        ("3 pi", "3"),
        ("(ay-by)/2", "(a-b)/2y"),
    ],
)
def test_different_math_answers_differ(math, left, right):
    assert math.normalise(left) != math.normalise(right)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("So the total is $\\boxed{\\frac{1}{2}}$.", "1/2"),
        ("First \\boxed{3}, wait, actually \\boxed{4}", "4"),
        ("The answer is \\boxed{\\frac{\\sqrt{3}}{2}}", "sqrt(3)/2"),
        ("The answer is 42.", "42"),
        ("Answer: $\\frac{3}{4}$", "3/4"),
        ("The final answer is: 12. I hope it is correct.", "12"),
        ("The answer is 12 apples because each of the 3 kids has 4.", "12"),
        ("She pays 3 then 7 more, so 10 in total", "10"),
        ("#### 1,234", "1234"),
        ("The answer is -7", "-7"),
    ],
)
def test_math_extraction(math, text, expected):
    assert math.key(text) == expected


def test_math_abstains_without_an_answer(math):
    assert math.key("I do not know.") is None
    assert math.key("") is None


def test_boxed_needs_balanced_braces():
    assert last_boxed("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert last_boxed("\\boxed{unclosed {") is None
    assert last_boxed("\\boxed 7 apples") == "7"


@pytest.mark.parametrize(
    "hostile",
    [
        "9^9^9^9",
        "10^{10^{10}}",
        "2^{99999999}",
        "x^" * 150 + "2",
        "(" * 400 + "1" + ")" * 400,
        "1" * 5000,
        "99999999999999999999999!",
        "\\sqrt{" * 100 + "2" + "}" * 100,
        "lambda: 1",
        "().__class__.__bases__[0]",
        "\\sin(x)^{100}+\\cos(x)^{100}",
        "(a+b+c+d+e+f+g+h)^{10}",
        "(x+1)^{1000}",
        "\\frac{(a+b+c+d)^{10}}{(a-b+c-d)^{10}}",
        "(1+\\sqrt{2}+\\sqrt{3}+\\sqrt{5})^{30}",
    ],
)
def test_hostile_math_is_bounded(math, hostile):
    started = time.monotonic()
    key = math.normalise(hostile)
    assert key is None or isinstance(key, str)
    assert time.monotonic() - started < 30  # guards a hang; not a speed assertion


HOSTILE_CODE = [
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w').write('x')",
    "__import__('pathlib').Path('{marker}').touch()",
    "exec(\"open('{marker}', 'w')\")",
    "eval(\"__import__('os').mkdir('{marker}')\")",
    "__import__('builtins').__setattr__('avengers_pwned', 1)",
    "setattr(__import__('sys'), 'avengers_pwned', 1)",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{marker}'])",
]


@pytest.mark.parametrize("template", HOSTILE_CODE)
def test_hostile_math_is_never_evaluated(math, template, tmp_path):
    """Python in an answer is text: the file it would create does not exist and the globals it would set are
    unset, whether it comes as the raw answer, boxed, after "Answer:" or in math delimiters."""
    marker = tmp_path / "pwned"
    code = template.format(marker=marker)
    for text in (code, f"The answer is \\boxed{{{code}}}.", f"Answer: {code}", f"Answer: ${code}$"):
        key = math.key(text)
        assert key is None or isinstance(key, str)
        assert math.normalise(code) is None or isinstance(math.normalise(code), str)
    assert not marker.exists()
    assert not hasattr(builtins, "avengers_pwned") and not hasattr(sys, "avengers_pwned")


def test_symbolic_comparison_can_be_turned_off():
    assert math_key("2x+1", MathLimits(), symbolic=False) != math_key("1+2x", MathLimits(), symbolic=False)
    assert math_key("0.5", MathLimits(), symbolic=False) == "1/2"


@pytest.mark.parametrize(
    "text",
    [
        "Answer: C",
        "(C)",
        "the answer is C.",
        "C. Paris is the capital.",
        "C",
        "\\boxed{C}",
        "\\boxed{\\text{(C)}}",
        "**Answer: C**",
        "The correct option is C",
        "Option C is correct.",
        "Looking at (A) and (B), neither works. The best answer is (C).",
        "A. foo\nB. bar\nThe answer is C",
        "I think a is wrong. Answer: (C)",
        "I choose C.",
        "So I'd go with C",
        "My answer: option (c)",
        "Answer: C) Paris",
        "The answer is: **C) Paris**",
    ],
)
def test_multiple_choice_letter(mc, text):
    assert mc.key(text) == "C"


@pytest.mark.parametrize(
    "text",
    [
        "A good answer needs more thought.",
        "I am not sure which one is right.",
        "answer: a",
        "Z",
        "The answer is K",
        "I pick a good one",
        "Answer: a",
    ],
)
def test_multiple_choice_no_false_positive(mc, text):
    assert mc.key(text) is None


def test_code_prefers_block_defining_entry_point():
    text = (
        "Here is the solution:\n```python\ndef add(a, b):\n    return a + b\n```\n"
        "Usage:\n```python\nprint(add(1, 2))\n```\n"
    )
    extractor = create_extractor("code", entry_point="add")
    assert extractor.extract(text) == "def add(a, b):\n    return a + b"
    # Without an entry point the longest parseable block wins.
    assert create_extractor("code").extract(text).startswith("def add")


def test_code_fences_raw_text_and_prose():
    code = create_extractor("code")
    assert code.extract("```py\nx = 1\n") == "x = 1"  # an unclosed final fence counts
    assert code.extract("def f():\n    return 1\n") == "def f():\n    return 1"
    assert code.extract("I cannot solve this, sorry.") is None
    assert code.extract("```\nprint(1)\n```") == "print(1)"
    assert code.extract("```javascript\nconsole.log(1)\n```\n```python\nprint(2)\n```") == "print(2)"


def test_code_before_a_lone_closing_fence_is_the_program():
    """A reply whose opening fence was prefilled: code, a closing fence, then prose (SmolLM2 on HumanEval)."""
    reply = "def add(a, b):\n    return a + b\n```\n\nThis function adds two numbers and returns the sum."
    assert create_extractor("code", entry_point="add").extract(reply) == "def add(a, b):\n    return a + b"
    assert create_extractor("code").extract(reply) == "def add(a, b):\n    return a + b"
    # prose before a real fenced block is not taken for a program
    assert create_extractor("code").extract("Here:\n```python\nprint(2)\n```") == "print(2)"
    assert create_extractor("code").extract("Sure\n```python\nprint(2)\n```") == "print(2)"


def test_code_key_ignores_comments_and_formatting():
    code = create_extractor("code")
    assert code.normalise("def add(a,b):  # sum\n  return a+b") == code.normalise(
        "def add(a, b):\n    return a + b"
    )
    assert code.normalise("def add(a, b):\n    return a - b") != code.normalise(
        "def add(a, b):\n    return a + b"
    )


def test_free_text_is_stripped():
    text = create_extractor("free_text")
    assert text.extract("  Paris.\n") == "Paris."
    assert text.key("Paris   is\n big") == "Paris is big"
    assert text.key("   ") is None
