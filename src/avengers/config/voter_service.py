"""The Voter service: request limits, how free text is embedded, the code sandbox."""

from __future__ import annotations

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.config.embedding import EmbeddingConfig
from avengers.config.sandbox import SandboxConfig
from avengers.config.server import ServerConfig
from avengers.config.voting import VotingConfig

DEFAULT_VOTER_PORT = 50053


class VoterLimitsConfig(ConfigModel):
    """Largest requests the Voter accepts (larger ones end with INVALID_ARGUMENT)."""

    max_candidates: int = Field(default=256, ge=1)
    """Candidates in one request."""

    max_candidate_chars: int = Field(default=65_536, ge=1)
    """Characters of one candidate's text."""

    max_model_chars: int = Field(default=256, ge=1)
    """Characters of a candidate's model name."""

    max_tests: int = Field(default=64, ge=0)
    """Test snippets of a code task."""

    max_tests_chars: int = Field(default=65_536, ge=0)
    """Total characters of a code task's tests."""

    max_concurrent_votes: int = Field(default=8, ge=1)
    """Votes computed at once (worker threads); more requests wait for a free worker."""


class VoterServiceConfig(ConfigModel):
    server: ServerConfig = ServerConfig(port=DEFAULT_VOTER_PORT)
    """Bind address, message limits and shutdown grace (default port 50053)."""

    voting: VotingConfig = VotingConfig()
    """Default method and model-switch threshold, free-text and math comparison."""

    limits: VoterLimitsConfig = VoterLimitsConfig()
    """Request size limits and concurrency."""

    sandbox: SandboxConfig = SandboxConfig()
    """Where and how code candidates run against their tests; ``max_parallel`` candidates run at once per
    service process, across all requests."""

    embedder_address: str | None = None
    """host:port of the Embedder service used for free-text medoids. None: ``$AVENGERS_EMBEDDER_ADDR``;
    when that is unset too, free text is embedded in process with ``embedding``."""

    embed_timeout_seconds: float = Field(default=10.0, gt=0.0)
    """Deadline of one call to the Embedder service."""

    embed_batch: int = Field(default=64, ge=1)
    """Texts per call to the Embedder service (keep at or below its ``max_batch``)."""

    embedding: EmbeddingConfig = EmbeddingConfig()
    """In-process embedder for free text when no Embedder service is configured (loaded on first use)."""
