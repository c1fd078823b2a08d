"""Hooks of `sighead_gsm8k`: grade-school maths word problems the model answers itself; correct
when the last number of the response equals the reference's final answer (after `####`)."""

from __future__ import annotations

from sighead_eval.harness.confidence import binary_results, response
from sighead_eval.harness.data import as_test_split, load_source, numbers, split_of

PROMPT = "{question}\nSolve it step by step, then give the final answer as a number on the last line."


def final_answer(reference: str) -> float:
    tail = reference.rsplit("####", 1)[-1]
    found = numbers(tail)
    if not found:
        raise ValueError(f"sighead_gsm8k: no final answer after '####' in {reference[-80:]!r}")
    return found[-1]


def build_docs(rows) -> list[dict]:
    docs = []
    for i, r in enumerate(rows):
        doc_id = str(i)
        docs.append(
            {
                "id": doc_id,
                "type": "gsm8k",
                "split": split_of(f"sighead_gsm8k/{doc_id}"),
                "prompt": PROMPT.format(question=r["question"]),
                "answer": final_answer(r["answer"]),
            }
        )
    return docs


def dataset(data_files=None, split: str = "test", **kwargs):
    rows = load_source("openai/gsm8k", "main", split, data_files, task="sighead_gsm8k")
    return as_test_split(build_docs(rows.to_list()))


def is_correct(doc: dict, text: str) -> bool:
    found = numbers(text)
    return bool(found) and found[-1] == float(doc["answer"])


def process_results(doc, results):
    return binary_results(results, is_correct(doc, response(results)))
