"""Hooks of `sighead_triviaqa`: trivia questions answered by the model without context; correct
when the response names one of the reference aliases (whole words, case and punctuation ignored)."""

from __future__ import annotations

from sighead_eval.harness.confidence import binary_results, response
from sighead_eval.harness.data import as_test_split, load_source, mentions, split_of

PROMPT = "{question} Answer briefly."


def build_docs(rows) -> list[dict]:
    docs = []
    for r in rows:
        answer = r["answer"]
        aliases = [
            a
            for a in dict.fromkeys([answer["value"], *answer["aliases"], *answer["normalized_aliases"]])
            if a
        ]
        doc_id = str(r["question_id"])
        docs.append(
            {
                "id": doc_id,
                "type": str(r.get("question_source") or "triviaqa"),
                "split": split_of(f"sighead_triviaqa/{doc_id}"),
                "prompt": PROMPT.format(question=r["question"].strip()),
                "answers": aliases,
            }
        )
    return docs


def dataset(data_files=None, config: str = "rc.nocontext", split: str = "validation", **kwargs):
    rows = load_source("mandarjoshi/trivia_qa", config, split, data_files, task="sighead_triviaqa")
    return as_test_split(build_docs(rows.to_list()))


def is_correct(doc: dict, text: str) -> bool:
    return mentions(text, doc["answers"])


def process_results(doc, results):
    return binary_results(results, is_correct(doc, response(results)))
