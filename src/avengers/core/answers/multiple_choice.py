"""Multiple-choice answers: one option letter A–J, explicit patterns ("Answer: C", "The answer is (C)") first."""

from __future__ import annotations

import re

from avengers.core.answers.base import TEXT_COMMAND, AnswerExtractor, last_boxed, register_extractor

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
            inner = TEXT_COMMAND.sub(lambda m: m.group(1), boxed).strip()
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
