"""Hooks of `sighead_wmt_da` and `sighead_wmt_mqm`: machine translations with human quality scores.

Each MT output is force-decoded as the model's answer to a translation request; each estimator's
confidence is correlated with the human score (DA z-score or MQM). Rows are filtered by language
pair (`lp`, default en-de) and optionally `year`; `max_samples` (default 2000) keeps the first
rows after a seeded shuffle so that a run stays a few minutes long on a CPU.
"""

from __future__ import annotations

import random

from sighead_eval.harness.confidence import graded_results
from sighead_eval.harness.data import LANGUAGES, as_test_split, load_source, split_of

PROMPT = "Translate this {source} text into {target}:\n\n{src}"


def build_docs(rows, task: str, lp: str | None = "en-de", year=None, max_samples: int | None = 2000, seed=0):
    rows = [r for r in rows if (lp in (None, "", "all") or r["lp"] == lp)]
    if year not in (None, ""):
        rows = [r for r in rows if int(r["year"]) == int(year)]
    if not rows:
        raise ValueError(
            f"{task}: no rows for lp={lp!r}, year={year!r}; pick another `lp` or `year` in --metadata"
        )
    random.Random(seed).shuffle(rows)
    if max_samples:
        rows = rows[: int(max_samples)]
    docs = []
    for i, r in enumerate(rows):
        src_lang, _, tgt_lang = r["lp"].partition("-")
        doc_id = f"{r['lp']}-{r.get('year', '')}-{i}"
        docs.append(
            {
                "id": doc_id,
                "type": r["lp"],
                "split": split_of(f"{task}/{doc_id}"),
                "prompt": PROMPT.format(
                    source=LANGUAGES.get(src_lang, src_lang),
                    target=LANGUAGES.get(tgt_lang, tgt_lang),
                    src=r["src"],
                ),
                "mt": r["mt"],
                "score": float(r["score"]),
            }
        )
    return docs


def _dataset(hub_id: str, task: str, data_files=None, lp="en-de", year=None, max_samples=2000, **kwargs):
    rows = load_source(hub_id, None, "train", data_files, task=task).to_list()
    return as_test_split(build_docs(rows, task, lp, year, max_samples))


def dataset_da(**kwargs):
    return _dataset("RicardoRei/wmt-da-human-evaluation", "sighead_wmt_da", **kwargs)


def dataset_mqm(**kwargs):
    return _dataset("RicardoRei/wmt-mqm-human-evaluation", "sighead_wmt_mqm", **kwargs)


def process_results(doc, results):
    return graded_results(results, doc["score"])
