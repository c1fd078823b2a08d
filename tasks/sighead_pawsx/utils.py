"""Hooks of `sighead_pawsx`: PAWS-X sentence pairs, the second force-decoded as a paraphrase of the
first; quality = the human label (1 paraphrase, 0 not). Adversarial pairs share almost every word,
so only a signal that notices the changed meaning can tell them apart."""

from __future__ import annotations

from sighead_eval.harness.confidence import binary_results
from sighead_eval.harness.data import as_test_split, load_source, split_of

PROMPT = "Rewrite this sentence in other words:\n\n{sentence1}"


def build_docs(rows) -> list[dict]:
    docs = []
    for r in rows:
        if not r["sentence1"] or not r["sentence2"]:
            continue  # a few PAWS-X rows have an empty side
        doc_id = str(r["id"])
        docs.append(
            {
                "id": doc_id,
                "type": "paraphrase" if int(r["label"]) else "non-paraphrase",
                "split": split_of(f"sighead_pawsx/{doc_id}"),
                "prompt": PROMPT.format(sentence1=r["sentence1"]),
                "sentence2": r["sentence2"],
                "label": int(r["label"]),
            }
        )
    return docs


def dataset(data_files=None, language: str = "en", split: str = "test", **kwargs):
    rows = load_source("google-research-datasets/paws-x", language, split, data_files, task="sighead_pawsx")
    return as_test_split(build_docs(rows.to_list()))


def process_results(doc, results):
    return binary_results(results, bool(doc["label"]))
