"""Free-text answers: the text itself, whitespace-normalised (the voter groups near-duplicates by embedding)."""

from __future__ import annotations

from avengers.core.answers.base import AnswerExtractor, register_extractor


@register_extractor("free_text")
class FreeTextExtractor(AnswerExtractor):
    """The whole text, stripped; the key collapses whitespace."""

    def extract(self, text: str) -> str | None:
        text = text.strip()
        return text or None
