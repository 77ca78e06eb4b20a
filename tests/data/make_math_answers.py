"""Regenerate ``math_answers.json``: real math answer strings from the benchmark gold data, for
tests/test_latex_differential.py (the test reads only the JSON file; nothing is downloaded or read from
the shared data at test time).

    .venv/bin/python tests/data/make_math_answers.py --benchmarks ../shared/data/benchmarks

Sources (the files as published; see their README): GSM8K test (gold answers after ``####`` and the
calculator annotations ``<<expression=result>>`` of the reference solutions), SVAMP (equation and answer),
AQuA-RAT test (the options of questions, with units, fractions, square roots and percentages).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

OUT = Path(__file__).with_name("math_answers.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("../shared/data/benchmarks"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.benchmarks

    gsm8k = [json.loads(line) for line in (root / "gsm8k_test.jsonl").read_text().splitlines()]
    golds = [row["answer"].split("####")[-1].strip() for row in gsm8k]
    unusual = sorted({g for g in golds if not g.isdigit()})  # thousands separators, negatives
    plain = rng.sample(sorted({g for g in golds if g.isdigit()}), 120)
    calculations = sorted({
        (expr.strip(), result.strip())
        for row in gsm8k
        for expr, result in re.findall(r"<<([^=<>]+)=([^<>]+)>>", row["answer"])
    })
    # Every kind of expression: divisions, brackets and decimals are rarer than products, so take more of them.
    rich = [c for c in calculations if any(s in c[0] for s in "/(.")]
    simple = [c for c in calculations if c not in rich]
    calculations = sorted(rng.sample(rich, 90) + rng.sample(simple, 40))

    svamp = json.loads((root / "svamp.json").read_text())
    equations = sorted({(row["Equation"].strip(), str(row["Answer"])) for row in rng.sample(svamp, 80)})

    aqua = [json.loads(line) for line in (root / "aqua_test.json").read_text().splitlines() if line.strip()]
    options = [[re.sub(r"^[A-E]\)\s*", "", o) for o in row["options"]] for row in aqua]
    mathy = [o for o in options if any(re.search(r"[√/^%π]|\d\s*\(", x) for x in o)]
    others = [o for o in options if o not in mathy]
    options = mathy + rng.sample(others, 28)  # all 42 with roots, fractions, powers, percentages

    fixture = {
        "about": "Real math answers from benchmark gold data; made by tests/data/make_math_answers.py.",
        "gsm8k_gold": unusual + sorted(plain, key=int),
        "gsm8k_calculations": [list(c) for c in calculations],
        "svamp_equations": [list(e) for e in equations],
        "aqua_options": options,
    }
    lines = [f"  {json.dumps(key)}: [\n" + ",\n".join(f"    {json.dumps(v, ensure_ascii=False)}" for v in value) + "\n  ]"
             if isinstance(value, list) else f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in fixture.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    count = len(fixture["gsm8k_gold"]) + 2 * len(calculations) + 2 * len(equations) + sum(map(len, options))
    print(f"{OUT}: {count} answer strings, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
