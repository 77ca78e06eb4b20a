"""n samples as ONE request vs n requests of one sample, on the CPU engine (llama.cpp, SmolLM2-135M-Instruct).

    .venv/bin/python bench/bench_sampling.py [--n 10] [--max-tokens 32] [--repeats 3] [--threads 1]

For a short and a long prompt, the same n samples are drawn two ways from the same engine: one request with
n samples (the prompt is prefilled once and its KV cache reused by every sample), and n requests of one
sample each with the seeds sample i would get (seed + i) — so both ways generate the SAME texts and the
comparison is of work, not of luck. Reports wall time, generated tokens/s, prefills and prompt tokens
evaluated (median of ``--repeats`` runs, alternating the order). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

from avengers.config.model_pool import ModelConfig
from avengers.engines import GenerationRequest, SamplingSpec, create_engine
from avengers.engines.llama_cpp import LlamaCppEngine

SHORT_PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?"
FEW_SHOT = [
    ("A farmer has 15 cows and buys 7 more. Then 4 cows are sold. How many cows are left?", "15 + 7 - 4 = 18. The answer is 18."),
    ("Tom reads 12 pages a day for 5 days, then 20 pages on the sixth day. How many pages did he read?", "12 * 5 + 20 = 80. The answer is 80."),
    ("A box holds 24 pencils. How many pencils are in 6 boxes if 10 pencils are removed?", "24 * 6 - 10 = 134. The answer is 134."),
    ("Sara has 3 times as many marbles as Ben. Ben has 14 marbles. How many do they have together?", "3 * 14 + 14 = 56. The answer is 56."),
    ("A train travels 60 km per hour for 3 hours and 45 km per hour for 2 hours. How far does it go?", "60 * 3 + 45 * 2 = 270. The answer is 270."),
    ("A shop sells pens at 2 dollars each. Anna buys 9 pens and pays with a 50 dollar bill. What is her change?", "50 - 2 * 9 = 32. The answer is 32."),
    ("There are 8 rows of 13 chairs. 17 chairs are empty. How many people are seated?", "8 * 13 - 17 = 87. The answer is 87."),
    ("A baker makes 120 rolls and sells 3/4 of them. How many rolls are left?", "120 - 90 = 30. The answer is 30."),
]
LONG_PROMPT = (
    "Solve each problem step by step and end with 'The answer is N.'\n\n"
    + "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in FEW_SHOT * 2)
    + f"\n\nQuestion: {SHORT_PROMPT}\nAnswer:"
)


def request(prompt: str, n: int, seed: int, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(sampling=SamplingSpec(n=n, temperature=0.7, max_tokens=max_tokens, seed=seed), prompt=prompt)


async def one_request(engine: LlamaCppEngine, prompt: str, n: int, max_tokens: int) -> tuple[float, list[str], int, int]:
    """(seconds, texts, completion tokens, prompt tokens evaluated)."""
    start = time.perf_counter()
    result = await engine.generate(request(prompt, n, 1000, max_tokens))
    elapsed = time.perf_counter() - start
    evaluated = result.prompt_tokens - 1 + n  # prefill of all but the last prompt token, then one per sample
    return elapsed, [s.text for s in result.samples], result.completion_tokens, evaluated


async def n_requests(engine: LlamaCppEngine, prompt: str, n: int, max_tokens: int) -> tuple[float, list[str], int, int]:
    start = time.perf_counter()
    results = [await engine.generate(request(prompt, 1, 1000 + i, max_tokens)) for i in range(n)]
    elapsed = time.perf_counter() - start
    return (
        elapsed,
        [r.samples[0].text for r in results],
        sum(r.completion_tokens for r in results),
        sum(r.prompt_tokens for r in results),
    )


async def measure(engine: LlamaCppEngine, prompt: str, n: int, max_tokens: int, repeats: int) -> dict[str, dict]:
    runs: dict[str, list] = {"one": [], "many": []}
    for r in range(repeats):
        order = [("one", one_request), ("many", n_requests)]
        for name, fn in order if r % 2 == 0 else reversed(order):
            before = engine.stats.prefills
            seconds, texts, tokens, evaluated = await fn(engine, prompt, n, max_tokens)
            runs[name].append((seconds, texts, tokens, evaluated, engine.stats.prefills - before))
    if runs["one"][0][1] != runs["many"][0][1]:
        raise AssertionError("one request of n and n requests of one generated different texts")
    out = {}
    for name, rs in runs.items():
        seconds = statistics.median(r[0] for r in rs)
        out[name] = {
            "seconds": seconds,
            "tokens": rs[0][2],
            "tokens_per_s": rs[0][2] / seconds,
            "evaluated": rs[0][3],
            "prefills": rs[0][4],
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default: %(default)s)")
    args = parser.parse_args()

    engine = create_engine(
        ModelConfig(name="smollm2-135m", backend="llama_cpp", llama_cpp={"n_ctx": 2048, "n_threads": args.threads})
    )
    await engine.start()
    try:
        print(f"SmolLM2-135M-Instruct Q4_1, llama.cpp, {args.threads} thread(s), n={args.n}, max_tokens={args.max_tokens}, "
              f"temperature 0.7, median of {args.repeats}; {platform.machine()}, {platform.python_version()}\n")
        print("| prompt | way | wall s | generated tokens | tokens/s | prefills | prompt tokens evaluated |")
        print("|---|---|---|---|---|---|---|")
        for label, prompt in (("short", SHORT_PROMPT), ("long few-shot", LONG_PROMPT)):
            result = await measure(engine, prompt, args.n, args.max_tokens, args.repeats)
            prompt_tokens = (await engine.generate(request(prompt, 1, 0, 1))).prompt_tokens
            for way, key in ((f"1 request, n={args.n}", "one"), (f"{args.n} requests, n=1", "many")):
                m = result[key]
                print(
                    f"| {label} ({prompt_tokens} tok) | {way} | {m['seconds']:.2f} | {m['tokens']} | "
                    f"{m['tokens_per_s']:.1f} | {m['prefills']} | {m['evaluated']} |"
                )
            speedup = result["many"]["seconds"] / result["one"]["seconds"]
            print(f"| {label} | speed-up of one request | {speedup:.2f}x | | | | |")
    finally:
        await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
