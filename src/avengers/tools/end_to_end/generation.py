"""Generating the recording: every model answers every benchmark item once greedily and n times sampled.

Models are asked with the gateway's chat messages (:func:`avengers.core.tasks.task_messages`: the task type's
instruction, then the query unchanged) and the item's id as ``task_id`` (replay engines look recordings up by
it). Models run concurrently, each with ``concurrency`` requests in flight; a progress bar counts the calls.

Every finished (item, model) pair is appended at once to ``samples.jsonl.partial`` next to the final file,
so an interrupted run resumes where it stopped (same settings) instead of starting over; the final file is
written atomically at the end and the partial one removed. A call that fails because of the request
(INVALID_ARGUMENT, e.g. a prompt longer than the model's context; RESOURCE_EXHAUSTED; DEADLINE_EXCEEDED) is
recorded as empty samples with the ``error`` (they abstain in every vote); a pool that is down or does not
serve the model stops the run with one line, and a re-run resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from avengers.config.evaluate import GenerationConfig
from avengers.core.ensemble import DependencyError, ModelPoolClient, Sampling
from avengers.core.tasks import task_messages
from avengers.tools.end_to_end.benchmarks import BenchmarkItem
from avengers.tools.end_to_end.samples import RecordedSample, SamplesError, parse_sample, sample_line

RECORDED_FAILURES = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "OUT_OF_RANGE"})
"""Statuses of a Generate call recorded as an abstaining sample instead of stopping the run."""


def _sample(item: BenchmarkItem, model: str, text: str, **fields: Any) -> RecordedSample:
    return RecordedSample(
        id=item.id,
        dataset=item.dataset,
        query=item.query,
        answer=item.answer,
        task_type=item.task_type,
        model=model,
        text=text,
        split=item.split,
        tests=item.tests,
        entry_point=item.entry_point,
        **fields,
    )


def settings_fingerprint(items: Sequence[BenchmarkItem], models: Sequence[str], config: GenerationConfig) -> str:
    """What a partial recording must match to be resumed."""
    return json.dumps(
        {"items": [i.id for i in items], "models": list(models), "generation": config.to_dict()}, sort_keys=True
    )


def load_partial(path: Path, fingerprint: str) -> list[RecordedSample]:
    """Samples of an interrupted run with the same settings ([] when there is none or it differs)."""
    header = path.with_name(path.name + ".settings")
    if not path.is_file() or not header.is_file() or header.read_text() != fingerprint:
        return []
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rows.append(parse_sample(json.loads(line), f"{path}:{line_no}"))
        except (json.JSONDecodeError, SamplesError):
            break  # a line cut by the interruption: that pair is generated again
    return rows


async def generate_samples(
    items: Sequence[BenchmarkItem],
    models: Sequence[str],
    pool: ModelPoolClient,
    config: GenerationConfig,
    *,
    partial: Path | None = None,
    instructions: Mapping[str, str] | None = None,
    progress: bool = True,
) -> list[RecordedSample]:
    """Every model's samples of every item, in item order then model order."""
    fingerprint = settings_fingerprint(items, models, config)
    done: dict[tuple[str, str], list[RecordedSample]] = {}
    if partial is not None:
        for sample in load_partial(partial, fingerprint):
            done.setdefault((sample.id, sample.model), []).append(sample)
        # Keep only complete pairs (greedy + n sampled).
        done = {key: rows for key, rows in done.items() if len(rows) == config.n + 1}
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.with_name(partial.name + ".settings").write_text(fingerprint)
        with partial.open("w", encoding="utf-8") as fh:
            fh.writelines(sample_line(s) for rows in done.values() for s in rows)
    todo = [(item, model) for item in items for model in models if (item.id, model) not in done]
    bar = tqdm(
        total=len(items) * len(models), initial=len(items) * len(models) - len(todo), desc="generating",
        unit="answer", disable=not progress, dynamic_ncols=True,
    )
    sink = partial.open("a", encoding="utf-8") if partial is not None else None
    limits = {model: asyncio.Semaphore(config.concurrency) for model in models}
    greedy_sampling = Sampling(n=1, temperature=0.0, max_tokens=config.max_tokens, seed=config.seed)
    sampled = Sampling(n=config.n, temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed)

    async def call(item: BenchmarkItem, model: str, sampling: Sampling, greedy: bool) -> list[RecordedSample]:
        started = time.perf_counter()
        try:
            drawn = await pool.generate(
                model,
                task_messages(item.query, item.task_type, instructions),
                sampling,
                task_id=item.id,
                request_id=f"evaluate-{item.id}-{model}-{'greedy' if greedy else 'sampled'}",
                timeout=config.timeout_seconds,
            )
        except DependencyError as exc:
            if exc.status not in RECORDED_FAILURES:
                raise
            error = f"{exc.status}: {exc.message}"
            return [_sample(item, model, "", tokens=0, greedy=greedy, error=error) for _ in range(sampling.n)]
        seconds = (time.perf_counter() - started) / max(1, len(drawn))
        return [
            _sample(item, model, s.text, tokens=s.completion_tokens, greedy=greedy, seconds=seconds) for s in drawn
        ]

    async def answer(item: BenchmarkItem, model: str) -> None:
        async with limits[model]:
            rows = await call(item, model, greedy_sampling, True)
            rows += await call(item, model, sampled, False)
        done[(item.id, model)] = rows
        if sink is not None:
            sink.writelines(sample_line(s) for s in rows)
            sink.flush()
        bar.update()
        bar.set_postfix_str(model, refresh=False)

    async def run_model(model: str) -> None:
        await asyncio.gather(*(answer(item, m) for item, m in todo if m == model))

    try:
        tasks = [asyncio.ensure_future(run_model(m)) for m in models]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return [s for item in items for model in models for s in done[(item.id, model)]]
