"""Engine for an existing OpenAI-compatible server (``vllm serve``, llama.cpp ``llama-server``, TGI, ...).

n samples go out as ONE request with ``n`` (the server prefills the prompt once), unless
``openai.split_n`` is set for servers that ignore ``n``: then n concurrent n=1 requests are sent. A server
that answers with fewer choices than asked is reported as UNAVAILABLE rather than silently returning less.

Errors: connection failures and 5xx -> EngineUnavailable, timeouts -> EngineTimeout, 400/422 ->
InvalidRequest, 404 -> NotServed (the server does not serve the model); the model pool maps them to
UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT and NOT_FOUND. Retries (``max_retries``, off by
default) apply to connection errors, 429 and 5xx only. The API key is read from the environment variable
named by ``api_key_env``, never from the config file.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from avengers.config.model_pool import ModelConfig
from avengers.engines.base import (
    Engine,
    EngineError,
    EngineMisconfigured,
    EngineNotInstalled,
    EngineTimeout,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    NotServed,
    SampleDelta,
    register_engine,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _http_error(status: int, body: str, model: str) -> EngineError:
    detail = body.strip()[:500]
    try:
        detail = json.loads(body).get("error", {}).get("message", detail) or detail
    except (ValueError, AttributeError):
        pass
    message = f"model {model!r}: server answered HTTP {status}: {detail}"
    if status in (400, 422):
        return InvalidRequest(message)
    if status == 404:
        return NotServed(message)
    return EngineUnavailable(message)


@register_engine("openai")
class OpenAIHTTPEngine(Engine):
    """Generation through /v1/chat/completions or /v1/completions of a running server."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self._options = config.openai
        self._client: Any = None

    @property
    def served_model(self) -> str:
        return self._options.served_model_name or self.config.model_id or self.config.name

    @property
    def model_id(self) -> str:
        return f"{self.served_model} @ {self._options.base_url}"

    async def start(self) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise EngineNotInstalled("the openai backend needs httpx (pip install avengers[pool])") from exc
        headers = {}
        if self._options.api_key_env:
            key = os.environ.get(self._options.api_key_env)
            if not key:
                raise EngineMisconfigured(
                    f"model {self.name!r}: environment variable {self._options.api_key_env} (API key) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=self._options.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self._options.timeout_s, connect=self._options.connect_timeout_s),
            limits=httpx.Limits(max_connections=self._options.max_connections),
        )

    async def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- requests ------------------------------------------------------------------------------------

    def _body(self, request: GenerationRequest, n: int, seed: int | None, stream: bool) -> tuple[str, dict]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.served_model,
            "n": n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            **self._options.extra_body,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if seed is not None:
            body["seed"] = seed
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self._options.api == "chat":
            body["messages"] = request.chat()
            return "chat/completions", body
        body["prompt"] = request.prompt or request.query_text
        return "completions", body

    def _parts(self, request: GenerationRequest) -> list[tuple[int, int, int | None]]:
        """(first index, n, seed) of each HTTP request making up one generation."""
        s = request.sampling
        if not self._options.split_n or s.n == 1:
            return [(0, s.n, s.seed)]
        return [(i, 1, None if s.seed is None else s.seed + i) for i in range(s.n)]

    async def _send(self, path: str, body: dict, stream: bool) -> Any:
        """The HTTP response (open, for streams), with the configured retries and error statuses."""
        import httpx

        if self._client is None:
            raise EngineUnavailable(f"model {self.name!r}: engine not started")
        attempt = 0
        while True:
            try:
                req = self._client.build_request("POST", path, json=body)
                response = await self._client.send(req, stream=stream)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self._options.max_retries:
                    attempt += 1
                    continue
                raise EngineTimeout(f"model {self.name!r}: server timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                if attempt < self._options.max_retries:
                    attempt += 1
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise EngineUnavailable(
                    f"model {self.name!r}: cannot reach {self._options.base_url}: {type(exc).__name__}: {exc}"
                ) from exc
            if response.status_code < 400:
                return response
            text = (await response.aread()).decode("utf-8", errors="replace")
            await response.aclose()
            if response.status_code in RETRY_STATUSES and attempt < self._options.max_retries:
                attempt += 1
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            raise _http_error(response.status_code, text, self.name)

    @staticmethod
    def _choice_text(choice: dict) -> str:
        if "message" in choice:
            return (choice.get("message") or {}).get("content") or ""
        return choice.get("text") or ""

    async def _generate_part(self, request: GenerationRequest, first: int, n: int, seed: int | None) -> tuple[list[GeneratedSample], int]:
        path, body = self._body(request, n, seed, stream=False)
        response = await self._send(path, body, stream=False)
        try:
            payload = response.json()
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineUnavailable(f"model {self.name!r}: malformed response from the server: {exc}") from exc
        if len(choices) != n:
            raise EngineUnavailable(
                f"model {self.name!r}: asked the server for n={n} samples, got {len(choices)} "
                "(set openai.split_n for servers without n)"
            )
        usage = payload.get("usage") or {}
        completion_total = int(usage.get("completion_tokens") or 0)
        samples = []
        for offset, choice in enumerate(choices):
            text = self._choice_text(choice)
            # Per-choice token counts are not in the OpenAI schema: split the total evenly, else count words.
            tokens = completion_total // n if completion_total else len(text.split())
            samples.append(GeneratedSample(first + offset, text, choice.get("finish_reason") or "stop", tokens))
        return samples, int(usage.get("prompt_tokens") or 0)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        parts = await asyncio.gather(*(self._generate_part(request, *p) for p in self._parts(request)))
        samples = [s for part, _ in parts for s in part]
        result = GenerationResult(samples=samples, prompt_tokens=max(p for _, p in parts))
        self.stats.record(result, prefills=len(parts))
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        if len(self._parts(request)) > 1:  # split_n: stream each whole sample as it completes
            async for delta in super().stream(request):
                yield delta
            return
        path, body = self._body(request, request.sampling.n, request.sampling.seed, stream=True)
        response = await self._send(path, body, stream=True)
        counts = [0] * request.sampling.n
        # Each sample's last delta waits for the usage event after the last choice (stream_options.include_usage)
        # so it can carry the prompt tokens; servers that send none give 0.
        last: list[SampleDelta] = []
        prompt_tokens = 0
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    raise EngineUnavailable(f"model {self.name!r}: malformed stream event: {data[:200]}") from exc
                prompt_tokens = int((event.get("usage") or {}).get("prompt_tokens") or prompt_tokens)
                for choice in event.get("choices") or []:
                    index = int(choice.get("index", 0))
                    if not 0 <= index < len(counts):
                        continue
                    delta = choice.get("delta")
                    text = (delta or {}).get("content") if delta is not None else choice.get("text")
                    if text:  # one chunk is one token on vLLM and llama.cpp servers
                        counts[index] += 1
                    finish = choice.get("finish_reason") or ""
                    if finish:
                        last.append(SampleDelta(index, text or "", finish, counts[index]))
                    elif text:
                        yield SampleDelta(index, text)
        finally:
            await response.aclose()
        for delta in last:
            yield replace(delta, prompt_tokens=prompt_tokens)
        self.stats.record_counts(prompt_tokens, sum(counts), len(counts))
