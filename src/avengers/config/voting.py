"""How candidate answers are compared and voted on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from avengers.config.base import ConfigModel

DEFAULT_SWITCH_THRESHOLD = 0.8
"""Model switch (arXiv 2505.19797, §3): when the first model's winning share of its own samples is below this,
the vote goes over every model's samples. The one definition of the paper's 0.8 in the project."""


class VotingConfig(ConfigModel):
    method: Literal["majority", "weighted"] = "majority"
    """Default vote: "majority" (one vote per candidate) or "weighted" (each candidate votes with its
    weight, e.g. its model's routing score)."""

    switch_threshold: float = Field(default=DEFAULT_SWITCH_THRESHOLD, gt=0.0, le=1.0)
    """Model switch: vote over all candidates when the first model's winning share is below this."""

    near_duplicate_similarity: float = Field(default=0.9, ge=0.0, le=1.0)
    """Free text: candidates whose embeddings have at least this cosine similarity to a group's most
    central member count as the same answer."""

    free_text_embed_chars: int = Field(default=2000, ge=1)
    """Free text: characters of each candidate that are embedded for the medoid (the start of the text)."""

    math_symbolic: bool = True
    """Math: compare non-numeric answers symbolically (bounded sympy parse); off = textual comparison."""

    math_max_symbolic_chars: int = Field(default=200, ge=1, le=2000)
    """Math: longest answer handed to the symbolic parser; longer ones compare as text."""
