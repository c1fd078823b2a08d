"""Hooks of `sighead_geo_paraphrase`: answers to the geography wheel's questions, written by someone
else in many valid phrasings, true or false with a labelled error type, force-decoded.

Four question kinds per country (capital, currency, continent, an official language). Each true
answer comes in several phrasings (bare, full sentence, inverted, hedged, verbose with a true side
remark). False answers carry their error type:
- `plausible`: a wrong entity of the same kind (another country's capital);
- `implausible`: an entity of the wrong kind (the country's currency given as its capital);
- `contradiction`: a true sentence that contradicts itself ("..., so it is not Paris").
Quality is 1 for true answers, 0 for false ones. Dev and test halves are split by country.

Lengths are matched (version 2.0), so that answer length alone cannot tell true from false: every
false answer has a true twin of the same shape. A plausible or implausible answer takes one of
the fact's own true phrasings; a contradiction's twin is a true answer of the same construction
("..., so it is not Madrid.", phrasing `contrast`), which joins the true answers of the full task
and of the contradiction subtask. In version 1.0 the contradictions were longer than the true
answers and answer length alone reached ROC-AUC 0.863 on them.
"""

from __future__ import annotations

import random

from sighead_eval.harness.confidence import binary_results
from sighead_eval.harness.data import as_test_split, split_of
from sighead_eval.harness.spans import span_results
from sighead_eval.sources import geography

ERRORS = ("plausible", "implausible", "contradiction")
QUESTIONS = {
    "capital": "What is the capital of {country}?",
    "currency": "What currency is used in {country}?",
    "continent": "On which continent is {country}?",
    "language": "Name an official language of {country}.",
}
# True answers: every phrasing states the same fact; {x} is the value, {c} the country, and the
# verbose phrasing adds a true side remark ({side}).
PHRASINGS = {
    "capital": {
        "bare": "{x}.",
        "sentence": "The capital of {c} is {x}.",
        "inverted": "{x} is the capital of {c}.",
        "hedged": "I believe the capital of {c} is {x}.",
        "verbose": "The capital of {c}, a country in {side}, is {x}.",
    },
    "currency": {
        "bare": "The {x}.",
        "sentence": "The currency of {c} is the {x}.",
        "inverted": "The {x} is the currency used in {c}.",
        "hedged": "I think {c} uses the {x}.",
        "verbose": "In {c}, whose capital is {side}, people pay with the {x}.",
    },
    "continent": {
        "bare": "{x}.",
        "sentence": "{c} is in {x}.",
        "inverted": "In {x}: that is where {c} lies.",
        "hedged": "As far as I know, {c} is located in {x}.",
        "verbose": "{c}, whose capital is {side}, is a country in {x}.",
    },
    "language": {
        "bare": "{x}.",
        "sentence": "An official language of {c} is {x}.",
        "inverted": "{x} is an official language of {c}.",
        "hedged": "I would say {x} is one of the official languages of {c}.",
        "verbose": "In {c}, a country in {side}, {x} is an official language.",
    },
}
CONTRADICTION = "{sentence_stem}, so it is not {x}."
# For `implausible`: the kind of entity given instead (the country's own, so it is fluent text).
WRONG_KIND = {"capital": "currency", "currency": "capital", "continent": "language", "language": "currency"}


def _values(country: dict) -> dict[str, str | None]:
    return {
        "capital": (country["capitals"] or [None])[0],
        "currency": (country["currencies"] or [None])[0],
        "continent": country["region"] or None,
        "language": (country["languages"] or [None])[0],
    }


def _side(kind: str, values: dict) -> str:
    """The verbose phrasing's true side remark: the continent, or the capital."""
    return values["continent"] if kind in ("capital", "language") else values["capital"]


def _answer(kind: str, phrasing: str, value: str, country: str, side: str) -> str:
    return PHRASINGS[kind][phrasing].format(x=value, c=country, side=side)


def _value_span(kind: str, phrasing: str, value: str, country: str, side: str) -> list[int]:
    """`[start, end)` of the value in `_answer(...)`: a false answer's wrong entity (a true answer
    has `[]`: every document carries the field, as a dataset's columns come from its first row)."""
    start = len(PHRASINGS[kind][phrasing].split("{x}")[0].format(c=country, side=side))
    return [start, start + len(value)]


def build_docs(seed: int = 0, phrasings_per_fact: int = 2) -> list[dict]:
    """Per country and kind: `phrasings_per_fact` true phrasings (seeded choice) and the
    contradiction's true twin; one false answer of each error type, the plausible and implausible
    ones in one of the fact's true phrasings. With the default 2, a fact has three true answers
    (two phrasings and a `contrast`) and three false ones (two in those phrasings and a
    contradiction): the same shapes on both sides."""
    if not isinstance(phrasings_per_fact, int) or not 1 <= phrasings_per_fact <= 5:
        raise ValueError(f"`phrasings_per_fact` should be an integer from 1 to 5, got {phrasings_per_fact!r}")
    countries = geography()
    values = {c["code"]: _values(c) for c in countries}
    docs = []
    for c in countries:
        mine = values[c["code"]]
        rng = random.Random(f"{seed}:{c['code']}")
        for kind, question in QUESTIONS.items():
            x = mine[kind]
            if not x:
                continue  # a country with no such fact
            side = _side(kind, mine)
            base = {
                "type": kind,
                "country": c["country"],
                "question": question.format(country=c["country"]),
                "split": split_of(f"sighead_geo_paraphrase/{c['code']}"),
                "twin": "",  # every document has the field (a dataset's columns come from its first row)
            }
            chosen = rng.sample(list(PHRASINGS[kind]), phrasings_per_fact)
            for phrasing in chosen:
                docs.append({**base, "phrasing": phrasing, "error": "none", "correct": 1, "error_span": [],
                             "answer": _answer(kind, phrasing, x, c["country"], side)})  # fmt: skip
            # other countries' values, as often as they occur, so a wrong entity is as long as a true one
            others = sorted(v[kind] for v in values.values() if v[kind] and v[kind] != x)
            wrong = rng.choice(others)
            phrasing = rng.choice(chosen)  # a true twin of the same phrasing exists
            docs.append({**base, "phrasing": phrasing, "error": "plausible", "correct": 0,
                         "answer": _answer(kind, phrasing, wrong, c["country"], side),
                         "error_span": _value_span(kind, phrasing, wrong, c["country"], side)})  # fmt: skip
            # the country's own entity of another kind; never the true value (version 2.1: a country
            # without a currency got its own capital as the "implausible" capital in 2.0)
            other_kind = next(
                v for v in (mine[WRONG_KIND[kind]], mine["continent"], mine["language"]) if v and v != x
            )
            phrasing = rng.choice(chosen)
            where = (kind, phrasing, other_kind, c["country"], side)
            docs.append({**base, "phrasing": phrasing, "error": "implausible", "correct": 0,
                         "answer": _answer(*where), "error_span": _value_span(*where)})  # fmt: skip
            stem = _answer(kind, "sentence", x, c["country"], side).rstrip(".")
            article = "" if kind != "currency" else "the "
            wrong_part = "not " + article + x  # the clause that makes the sentence false
            lead = CONTRADICTION.split("not {x}")[0].format(sentence_stem=stem)
            docs.append({**base, "phrasing": "sentence", "error": "contradiction", "correct": 0,
                         "answer": CONTRADICTION.format(sentence_stem=stem, x=article + x),
                         "error_span": [len(lead), len(lead) + len(wrong_part)]})  # fmt: skip
            contrast = article + rng.choice([o for o in others if o != wrong] or others)
            docs.append({**base, "phrasing": "contrast", "error": "none", "correct": 1, "error_span": [],
                         "twin": "contradiction",
                         "answer": CONTRADICTION.format(sentence_stem=stem, x=contrast)})  # fmt: skip
    for i, d in enumerate(docs):
        d["id"] = f"{d['country']}-{d['type']}-{d['error']}-{d['phrasing']}-{i}"
    # Interleave countries' documents so that `--limit N` takes a mix of kinds and errors.
    rng = random.Random(seed)
    rng.shuffle(docs)
    return docs


def dataset(seed: int = 0, phrasings_per_fact: int = 2, error: str | None = None, **kwargs):
    """The documents; with `error`, the false ones of that error type beside their true twins: the
    fact's own phrasings for plausible and implausible errors, the `contrast` answers for
    contradictions (so that, in each, true and false answers have the same shapes)."""
    docs = build_docs(int(seed), int(phrasings_per_fact))
    if error is not None:
        if error not in ERRORS:
            raise ValueError(f"sighead_geo_paraphrase: `error` should be one of {ERRORS}, got {error!r}")
        twin = "contradiction" if error == "contradiction" else ""
        docs = [d for d in docs if d["error"] == error or (d["error"] == "none" and d["twin"] == twin)]
    return as_test_split(docs)


def process_results(doc, results):
    return binary_results(results, bool(doc["correct"]))


def process_results_word(doc, results):
    """`sighead_geo_paraphrase_word`: a false answer's wrong entity (or, in a contradiction, the
    clause "not X") is BAD; every token of a true answer is OK."""
    return span_results(results, doc["split"], [doc["error_span"]] if doc["error_span"] else [])
