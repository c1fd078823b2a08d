"""Swapped facts: one year, number or name of an encyclopedia sentence replaced by one of the same
kind from another article, the swapped characters known. One rule for the `sighead_wiki_facts`
task (its altered sentences) and for error-span training data (`sighead:wiki-swapped`, articles
disjoint from every evaluation task).

- `candidate(title, text)`: an article's first sentence of 6-45 words holding a year, a number or
  a name (other than the title's words), with the character spans of each kind of fact in it.
- `pools(candidates)`: every fact of each kind, with the article it came from.
- `swap(candidate, pools, rng)`: the sentence with one fact replaced (years first, then numbers,
  then names: the rarer kinds first) by one of the same kind from another article, with the old
  and the new fact's `[start, end)`; None when no other article has a fact of that kind.
"""

from __future__ import annotations

import random
import re

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-2][0-9])\b")
NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w,.]\d)")
NAME = re.compile(r"(?<=[a-z,;] )([A-Z][a-z]+(?: [A-Z][a-z]+)*)")
KINDS = ("year", "number", "name")
MIN_WORDS, MAX_WORDS = 6, 45


def facts(sentence: str, title: str) -> dict[str, list[tuple[int, int]]]:
    """Character spans of each kind of fact in the sentence."""
    years = [m.span(1) for m in YEAR.finditer(sentence)]
    nums = [m.span(1) for m in NUMBER.finditer(sentence) if not YEAR.fullmatch(m.group(1))]
    title_words = set(title.split())
    names = [m.span(1) for m in NAME.finditer(sentence) if not set(m.group(1).split()) & title_words]
    return {"year": years, "number": nums, "name": names}


def candidate(title: str, text: str) -> dict | None:
    """`{title, sentence, start, facts, kinds}` for the article's first sentence that can be
    altered (`start`: where the sentence begins in `text`), or None."""
    flat = text.replace("\n", " ")  # same length: offsets in it are offsets in `text`
    pos = 0
    for sentence in SENTENCE.split(flat):
        at = flat.find(sentence, pos)
        pos = at + len(sentence)
        stripped = sentence.strip()
        if not MIN_WORDS <= len(stripped.split()) <= MAX_WORDS:
            continue
        found = facts(stripped, title)
        kinds = [k for k in KINDS if found[k]]
        if kinds:
            start = at + (len(sentence) - len(sentence.lstrip()))
            return {"title": title, "sentence": stripped, "start": start, "facts": found, "kinds": kinds}
    return None


def pools(candidates: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Every fact of each kind in the candidates' sentences, as (title, text)."""
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in KINDS}
    for c in candidates:
        for k in KINDS:
            for a, b in c["facts"][k]:
                out[k].append((c["title"], c["sentence"][a:b]))
    return out


def swap(
    c: dict, pool: dict[str, list[tuple[str, str]]], rng: random.Random
) -> tuple[str, tuple[int, int]] | None:
    """(altered sentence, the new fact's span in it), or None when no other article offers a
    different fact of the kind chosen."""
    sentence = c["sentence"]
    kind = c["kinds"][0]  # years, then numbers, then names: the rarer kinds first
    a, b = rng.choice(c["facts"][kind])
    old = sentence[a:b]
    options = [v for t, v in pool[kind] if t != c["title"] and v != old]
    if not options:
        return None
    new = rng.choice(options)
    return sentence[:a] + new + sentence[b:], (a, b), (a, a + len(new))
