"""Hooks of `sighead_arith`: arithmetic questions generated from a seed, answered by the model.

Types: `add` (2-60 plus 2-40), `sub` (20-99 minus 2-19), `mul` (2-19 times 2-12). Every question
is distinct, and the dev/test split goes by the question's text, so no question is in both halves.
The
answer is the first number in the response that is not one of the two operands (so "47 + 38 = 85"
and "The answer is 85." are both read as 85); correct when it equals the true result.
"""

from __future__ import annotations

import random

from sighead_eval.harness.confidence import binary_results, response
from sighead_eval.harness.data import as_test_split, numbers, split_of

# Small operands: a 135M model gets some right, so both classes are well populated.
OPS = {
    "add": ("+", lambda a, b: a + b, (2, 60), (2, 40)),
    "sub": ("-", lambda a, b: a - b, (20, 99), (2, 19)),
    "mul": ("*", lambda a, b: a * b, (2, 19), (2, 12)),
}
TEMPLATE = "What is {a} {op} {b}? Answer with the number."


def build_docs(seed: int = 1234, per_type: int = 100) -> list[dict]:
    if not isinstance(per_type, int) or per_type < 1:
        raise ValueError(f"sighead_arith: `per_type` should be a positive integer, got {per_type!r}")
    for kind, (_, _, ra, rb) in OPS.items():
        pairs = (ra[1] - ra[0] + 1) * (rb[1] - rb[0] + 1)
        if per_type > pairs:
            raise ValueError(
                f"sighead_arith: `per_type` = {per_type} is more than the {pairs} distinct `{kind}` questions"
            )
    rng = random.Random(seed)
    seen: set[tuple[str, int, int]] = set()
    docs = []
    for i in range(per_type):
        for kind, (op, fn, ra, rb) in OPS.items():  # interleaved, so `--limit N` takes a mix
            a, b = rng.randint(*ra), rng.randint(*rb)
            while (kind, a, b) in seen:  # every question once
                a, b = rng.randint(*ra), rng.randint(*rb)
            seen.add((kind, a, b))
            question = TEMPLATE.format(a=a, op=op, b=b)
            docs.append(
                {
                    "id": f"{seed}-{kind}-{i}",
                    "type": kind,
                    "split": split_of(f"sighead_arith/{question}"),
                    "question": question,
                    "operands": [a, b],
                    "answer": fn(a, b),
                }
            )
    return docs


def dataset(seed: int = 1234, per_type: int = 100, **kwargs):
    return as_test_split(build_docs(int(seed), int(per_type)))


def extracted(doc: dict, text: str) -> float | None:
    operands = [float(x) for x in doc["operands"]]
    for value in numbers(text):
        if value in operands:
            operands.remove(value)  # an echo of the question, once per operand
            continue
        return value
    return None


def is_correct(doc: dict, text: str) -> bool:
    value = extracted(doc, text)
    return value is not None and value == float(doc["answer"])


def process_results(doc, results):
    return binary_results(results, is_correct(doc, response(results)))
