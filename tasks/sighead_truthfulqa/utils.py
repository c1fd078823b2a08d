"""Hooks of `sighead_truthfulqa`: TruthfulQA's true and false reference answers, each force-decoded
as the model's reply to its question; quality = 1 for a true answer, 0 for a false one (an
imitative falsehood, the kind of answer a model hallucinates)."""

from __future__ import annotations

from sighead_eval.harness.confidence import binary_results
from sighead_eval.harness.data import as_test_split, load_source, split_of


def build_docs(rows) -> list[dict]:
    docs = []
    for i, r in enumerate(rows):
        answers = [(a, 1) for a in r["correct_answers"]] + [(a, 0) for a in r["incorrect_answers"]]
        for j, (answer, truthful) in enumerate(answers):
            if not answer.strip():
                continue
            docs.append(
                {
                    "id": f"{i}-{j}",
                    "type": r["category"],
                    # every answer to a question in the same half
                    "split": split_of(f"sighead_truthfulqa/{i}"),
                    "question": r["question"],
                    "answer": answer.strip(),
                    "truthful": truthful,
                }
            )
    return docs


def dataset(data_files=None, split: str = "validation", **kwargs):
    rows = load_source("truthfulqa/truthful_qa", "generation", split, data_files, task="sighead_truthfulqa")
    return as_test_split(build_docs(rows.to_list()))


def process_results(doc, results):
    return binary_results(results, bool(doc["truthful"]))
