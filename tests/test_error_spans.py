"""Error-span training (the authors' MQM mode): `train --error-spans` reads character spans of the
response (the MQM schema's `annotations`, or an `error_spans` column), trains the tokens inside
them as negatives weighted by `--error-span-weight`, and the package's own such data
(`sighead:wiki-swapped`) comes from articles disjoint from every evaluation task."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_model
from test_training import _config, _head

from sighead_eval.harness.data import task_hooks
from sighead_eval.training import TrainConfig, Trainer, encode_examples, load_records, train
from sighead_eval.training.data import check_error_rows, error_flags, error_spans
from sighead_eval.training.loss import sigmoid_head_loss


# -- the loss -------------------------------------------------------------------------------------
def test_the_loss_is_the_authors_weighted_bce_computed_by_hand():
    """The authors' `compute_loss_mqm`: correct positions give the reference (1) and their sampled
    negatives (0), an error position gives its reference alone as a negative; one
    `BCEWithLogitsLoss(weight=w on the error pairs)`, a mean over the pairs."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)  # (N, 1+K)
    valid = torch.rand(6, 3, generator=g) > 0.3
    errors = torch.tensor([False, True, False, False, True, False])
    values, targets, weights = [], [], []
    for row in range(6):
        if errors[row]:
            values.append(logits[row, 0]), targets.append(0.0), weights.append(10.0)
            continue
        values.append(logits[row, 0]), targets.append(1.0), weights.append(1.0)
        for k in range(3):
            if valid[row, k]:
                values.append(logits[row, 1 + k]), targets.append(0.0), weights.append(1.0)
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(weights))(
        torch.stack(values), torch.tensor(targets)
    )
    assert float(sigmoid_head_loss(logits, valid, errors, 10.0)) == pytest.approx(float(theirs), rel=1e-6)
    # no error position: the paper's loss, whatever the weight
    none = torch.zeros(6, dtype=torch.bool)
    assert torch.equal(sigmoid_head_loss(logits, valid, none, 10.0), sigmoid_head_loss(logits, valid))


# -- labels from spans ----------------------------------------------------------------------------
MQM_ROW = {
    "src": "Der Hund schläft im Garten.",
    "mt": "The cat sleeps in the garden.",
    "ref": "The dog sleeps in the garden.",
    "lp": "de-en",
    "annotations": [{"start": 4, "end": 7, "severity": "major", "category": "accuracy"}],
}


def _errors_by_token(tokenizer, example):
    response = example.ids[example.start :]
    return [(tokenizer.decode([t]), e) for t, e in zip(response, example.errors)]


def test_mqm_rows_are_formatted_as_the_authors_and_the_span_labels_its_tokens(tokenizer):
    [example] = encode_examples(build_model("llama"), tokenizer, [MQM_ROW], 512, None, with_errors=True)
    prompt = tokenizer.decode(example.ids[: example.start])
    assert (
        # the authors' f-string, which adds a full stop after the source's own
        "Translate the following text from German into English.\n"
        "German: Der Hund schläft im Garten..\nEnglish: " in prompt
    )
    labelled = _errors_by_token(tokenizer, example)
    bad = "".join(piece for piece, e in labelled if e)
    assert bad.strip() == "cat"  # the span's characters, shifted by the space the authors put first
    assert "".join(piece for piece, _ in labelled).strip().startswith("The cat sleeps")


def test_the_local_layout_reads_spans_from_a_jsonl_file(tmp_path, tokenizer):
    response = "Paris is the capital of Spain."
    path = tmp_path / "spans.jsonl"
    rows = [
        {"prompt": "Tell me a fact.", "response": response, "error_spans": [[24, 29]]},
        {"prompt": "Another.", "response": response, "error_spans": [{"start": 0, "end": 5}]},
        {"prompt": "A third.", "response": response, "error_spans": []},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = encode_examples(
        build_model("llama"), tokenizer, load_records(str(path)), 512, None, with_errors=True
    )
    bad = ["".join(p for p, e in _errors_by_token(tokenizer, x) if e).strip() for x in examples]
    assert bad == ["Spain", "Paris", ""]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "response": "abc"}, "has no `error_spans` column"),
        ({"prompt": "p", "response": "abc", "error_spans": [[0, 9]]}, "not inside the response"),
        ({"prompt": "p", "response": "abc", "error_spans": [["a", 2]]}, "integer character offsets"),
        ({"prompt": "p", "response": "abc", "error_spans": [0, 2]}, "integer character offsets"),
        ({"prompt": "p", "response": "abc", "error_spans": [[0, 1, 2]]}, "integer character offsets"),
        ({"prompt": "p", "response": "abc", "error_spans": 3}, "a list of spans"),
        ({**MQM_ROW, "lp": "xx-en"}, "language pair"),
    ],
)
def test_bad_spans_are_one_line_naming_the_row(row, message):
    with pytest.raises(ValueError, match=message) as info:
        check_error_rows(
            [{"prompt": "p", "response": "ok", "error_spans": []}, row] if "prompt" in row else [row]
        )
    assert "\n" not in str(info.value)
    assert "row 1" in str(info.value) or "row 0" in str(info.value)


def test_an_omission_has_no_characters():
    row = {**MQM_ROW, "annotations": [{"start": -1, "end": -1}, {"start": 4, "end": 7}]}
    assert error_spans(row, "mqm", " " + row["mt"]) == [(5, 8)]


def test_settings_refused_with_error_spans():
    with pytest.raises(ValueError, match="train_turns='last'"):
        TrainConfig(error_spans=True, train_turns="all")
    with pytest.raises(ValueError, match="error_span_weight"):
        TrainConfig(error_spans=True, error_span_weight=0)
    assert "error_span_weight" not in TrainConfig().settings()
    assert TrainConfig(error_spans=True).settings()["error_span_weight"] == 10.0


# -- training -------------------------------------------------------------------------------------
SENTENCES = ["The river runs to the sea.", "The old bridge is made of stone.", "Birds sing in the morning."]
WRONG = "purple"
SPAN_RECORDS = [
    {
        "prompt": f"Say thing {i}.",
        "response": f"{SENTENCES[i % 3]} It is {WRONG}." if i % 2 else SENTENCES[i % 3],
        "error_spans": [[len(SENTENCES[i % 3]) + 7, len(SENTENCES[i % 3]) + 7 + len(WRONG)]] if i % 2 else [],
    }
    for i in range(40)
]


def _span_run(config, tokenizer):
    return train(
        config, model=build_model("llama"), tokenizer=tokenizer, records=SPAN_RECORDS, progress=False
    )


def test_error_span_training_lowers_the_heads_confidence_in_the_errors(tmp_path, tokenizer):
    """The same data with and without its spans: with them, the dev ROC-AUC of correct references
    against the error tokens rises, and the card names the setting."""
    info = _span_run(_config(tmp_path, "spans", error_spans=True, lr=3e-2), tokenizer)
    before, after = info["dev_before"], info["dev_after"]
    assert before["dev_error_positions"] > 0
    assert after["dev_error_auroc"] > before["dev_error_auroc"] + 0.05
    assert "`error_span_weight` | `10.0`" in (tmp_path / "spans" / "README.md").read_text()
    plain = _span_run(_config(tmp_path, "plain", lr=3e-2), tokenizer)
    assert "dev_error_auroc" not in plain["dev_after"]
    assert not torch.equal(_head(tmp_path / "spans"), _head(tmp_path / "plain"))


def test_the_cache_holds_the_error_labels(tmp_path, tokenizer):
    """The cached frozen pass keeps which positions are errors, in its directory too, and a run over
    it learns from them as a run without the cache does."""
    config = _config(tmp_path, "cached", error_spans=True, lr=3e-2, cache_dir=str(tmp_path / "c"))
    for _ in range(2):  # built, then read back from the directory
        trainer = Trainer(
            config, model=build_model("llama"), tokenizer=tokenizer, records=SPAN_RECORDS, progress=False
        )
        trainer.build_cache()
        expected = error_flags(trainer.train_set)
        assert expected.any() and torch.equal(trainer.cache.errors.cpu(), expected)
    info = _span_run(config, tokenizer)
    assert info["dev_after"]["dev_error_auroc"] > info["dev_before"]["dev_error_auroc"] + 0.05


def test_a_bad_span_stops_before_the_model_loads(tmp_path, monkeypatch):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "abc", "error_spans": [[2, 1]]}) + "\n")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("sighead_eval.models.load_model", no_model)
    with pytest.raises(ValueError, match="row 0"):
        Trainer(TrainConfig(data=str(path), error_spans=True, output_dir=str(tmp_path / "o")), progress=False)


# -- the package's own data -----------------------------------------------------------------------
def test_swapped_wiki_data_is_disjoint_from_every_evaluation_task():
    """`sighead:wiki-swapped`: the training articles with one fact swapped, the span labelled; no
    article, sentence or swapped-in fact comes from an evaluation task's articles."""
    from sighead_eval import sources

    records = load_records("sighead:wiki-swapped")
    plain = sources.wiki_training_records()
    assert [r["messages"][0] for r in records] == [r["messages"][0] for r in plain]  # same articles, order
    swapped = [(r, p) for r, p in zip(records, plain) if r["error_spans"]]
    assert len(swapped) > len(records) / 2
    for r, p in swapped[:500]:
        (a, b) = r["error_spans"][0]
        text, original = r["messages"][1]["content"], p["messages"][1]["content"]
        assert text != original and text[:a] == original[:a]
        assert text[b:] == original[len(original) - (len(text) - b) :]
    titles = {a["title"] for a in sources.wiki_articles()}
    trained = {a["title"] for a in sources.wiki_training_articles()}
    held_out = {
        a["title"]
        for a in sources.wiki_articles()
        if a["topic"] in sources.WIKI_EVAL_TOPICS or sources.is_wiki_facts_article(a["title"])
    }
    held_out |= {t for t in titles if sources.is_geography_entity(t)}
    assert trained and not trained & held_out
    # every swapped-in fact occurs in some training article's text
    corpus = " ".join(a["text"].replace("\n", " ") for a in sources.wiki_training_articles())
    for r, _ in swapped[:300]:
        (a, b) = r["error_spans"][0]
        assert r["messages"][1]["content"][a:b] in corpus
    # and the wiki-facts task's sentences are nowhere in the training data
    task = {d["sentence"] for d in task_hooks("sighead_wiki_facts").build_docs()}
    answers = " ".join(r["messages"][1]["content"] for r in records)
    assert not any(s in answers for s in list(task)[:400])
