"""The paper's benchmarks as lm-eval tasks (`tasks/sighead_paper`) and the error-span metrics."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from sighead_eval import estimators as E
from sighead_eval import spans as S
from sighead_eval.harness import spans as H
from sighead_eval.harness.data import task_hooks, tasks_dir

ALL = "|".join(E.TOKEN_ESTIMATORS)

PAPER = Path(__file__).parent / "fixtures" / "paper"
HUB = Path(__file__).parent / "fixtures" / "hub"
#: Each mirrored task and the --metadata that points it at its fixture (the authors' layout).
FIXTURE_METADATA = {
    "sighead_paper_wmt22_ende_bestmt": {"data_dir": str(PAPER / "wmt22_general_MT_ende_DA_bestmt")},
    "sighead_paper_wmt22_ende_worstmt": {"data_files": str(HUB / "wmt-da-human-evaluation.jsonl")},
    "sighead_paper_wmt24_ende_bestmt": {"data_dir": str(PAPER / "wmt24_ende_FD_allmt")},
    "sighead_paper_wmt24_ende_worstmt": {"data_dir": str(PAPER / "wmt24_ende_FD_allmt")},
    "sighead_paper_wmt24_ende_allmt": {"data_dir": str(PAPER / "wmt24_ende_FD_allmt")},
    "sighead_paper_wmt24_enzh_bestmt": {"data_dir": str(PAPER / "wmt24_enzh_FD_bestmt")},
    "sighead_paper_wmt24_enzh_worstmt": {"data_dir": str(PAPER / "wmt24_enzh_FD_bestmt")},
    "sighead_paper_wmt24_enzh_allmt": {"data_dir": str(PAPER / "wmt24_enzh_FD_bestmt")},
    "sighead_paper_wmt24_enes": {"data_dir": str(PAPER / "wmt24_enes_FD_allmt")},
    "sighead_paper_pawsx": {"data_dir": str(PAPER / "pawsx")},
    "sighead_paper_gsm8k": {
        "responses_file": str(PAPER / "inference_gsm8k" / "results.json"),
        "judge_file": str(PAPER / "inference_gsm8k" / "qwen25_72B.txt"),
        "questions_file": str(HUB / "gsm8k-main.jsonl"),
    },
    "sighead_paper_truthfulqa": {"data_files": str(PAPER / "truthfulqa-judged.jsonl")},
    "sighead_paper_wmt24_esa": {"data_files": str(PAPER / "wmt24_esa_original.jsonl")},
    "sighead_paper_biomqm": {"data_files": str(PAPER / "bio-mqm-dataset.jsonl")},
}
U = task_hooks("sighead_paper")


def test_every_mirrored_task_has_a_fixture_and_a_row_on_the_reproduction_page():
    yamls = {p.stem for p in (tasks_dir() / "sighead_paper").glob("*.yaml")}
    assert yamls == set(FIXTURE_METADATA)
    page = (Path(__file__).parent.parent / "docs" / "reproduction.md").read_text()
    for task in FIXTURE_METADATA:
        assert f"`{task}`" in page, task


# -- the data layouts ------------------------------------------------------------------------------
def test_wmt_authors_folder_and_hub_schema_give_the_same_documents(tmp_path):
    folder = PAPER / "wmt22_general_MT_ende_DA_bestmt"
    docs = U.translation_docs("t", "en-de", data_dir=str(folder))
    assert len(docs) == 10 and docs[2]["score"] == -1.2
    assert docs[0]["prompt"] == (
        "Translate the following text from English into German.\n"
        "English: The cat sleeps on the sofa..\nGerman: "
    )  # the authors' prompt, its doubled full stop included
    assert docs[0]["reply"] == " Die Katze schläft auf dem Sofa."
    rows = [
        {"lp": "en-de", "src": s, "mt": m, "score": float(q), "year": 2022}
        for s, m, q in zip(*(U._lines(folder / n) for n in ("test.en", "test.de", "da_z_score.txt")))
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert U.translation_docs("t", "en-de", data_files=str(tmp_path / "rows.jsonl")) == docs
    wmt24 = U.translation_docs("t", "en-zh", data_dir=str(PAPER / "wmt24_enzh_FD_bestmt"))
    assert "from English into Chinese" in wmt24[0]["prompt"] and wmt24[0]["reply"] == " 猫在沙发上睡觉。"


def test_wmt_layout_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="give `data_dir` or `data_files`"):
        U.translation_docs("sighead_paper_x", "en-de")
    shutil.copytree(PAPER / "wmt24_ende_FD_allmt", tmp_path / "d")
    (tmp_path / "d" / "text.scores").write_text("1\n2\n")
    with pytest.raises(ValueError, match=r"different line counts \{'source': 10, 'MT': 10, 'score': 2\}"):
        U.translation_docs("t", "en-de", data_dir=str(tmp_path / "d"))
    (tmp_path / "d" / "text.scores").unlink()
    with pytest.raises(FileNotFoundError, match=r"none of \['text.scores', 'da_z_score.txt'\]"):
        U.translation_docs("t", "en-de", data_dir=str(tmp_path / "d"))


def test_pawsx_authors_files_and_hub_schema():
    docs = U.dataset_pawsx(data_dir=str(PAPER / "pawsx"))["test"].to_list()
    assert [d["label"] for d in docs] == [0, 1, 0, 1, 1, 0, 1, 0]
    assert docs[0]["prompt"] == (
        'What is a different but equivalent (paraphrase) way of saying: "The river flows from the north to '
        'the south."?\n'
    )
    hub = U.dataset_pawsx(data_files=str(HUB / "paws-x-en.jsonl"))["test"].to_list()
    assert hub and all(d["reply"].startswith(" ") for d in hub)


def test_error_spans_read_alike_from_every_schema():
    """The authors' ESA lines (inclusive ends, omissions), MQM rows (exclusive ends) and BioMQM's
    schema (inclusive) give the same documents; spans index the reply, after its leading space."""
    esa = U.dataset_wmt24_esa(data_files=str(PAPER / "wmt24_esa_original.jsonl"))["test"].to_list()
    mqm = U.dataset_wmt24_esa(data_files=str(PAPER / "wmt-mqm-error-spans.jsonl"))["test"].to_list()
    bio = U.dataset_biomqm(data_files=str(PAPER / "bio-mqm-dataset.jsonl"), lp="en-es")["test"].to_list()
    assert len(esa) == 12 and [d["spans"] for d in esa] == [d["spans"] for d in mqm] == [
        d["spans"] for d in bio
    ]
    third = esa[2]
    ((a, b),) = third["spans"]
    assert third["reply"][a:b] == "peras"
    assert esa[8]["spans"] == []  # an omission marks no character
    with pytest.raises(ValueError, match="accepted: the authors' ESA lines"):
        U.span_rows("t", [{"source": "x"}])


def test_judged_answers_from_the_authors_files_leave_unjudged_rows_out(tmp_path):
    meta = FIXTURE_METADATA["sighead_paper_gsm8k"]
    docs = U.dataset_gsm8k(**meta)["test"].to_list()
    assert [d["label"] for d in docs] == [1, 0, 1, 0, 1]  # the None row is left out
    first = json.loads((HUB / "gsm8k-main.jsonl").read_text().splitlines()[0])["question"]
    assert docs[0]["reply"] == " Step by step: the answer is 0." and docs[0]["prompt"] == first
    (tmp_path / "short.txt").write_text("1\n0\n")
    with pytest.raises(ValueError, match="6 questions, 6 responses, 2 judge scores"):
        U.dataset_gsm8k(**{**meta, "judge_file": str(tmp_path / "short.txt")})
    judged = U.dataset_truthfulqa(data_files=str(PAPER / "truthfulqa-judged.jsonl"), judge_threshold=0.5)
    assert [d["label"] for d in judged["test"].to_list()] == [1, 0, 0, 1]


# -- the metrics -----------------------------------------------------------------------------------
def test_character_spans_of_tokens_from_their_texts():
    text = " Die Katze schläft."
    assert S.char_spans([" Die", " Katze", " schl", "äft", "."], text) == [
        (0, 4),
        (4, 10),
        (10, 15),
        (15, 18),
        (18, 19),
    ]
    # SentencePiece pieces decoded alone lose their space: it goes to the token
    assert S.char_spans(["Die", "Katze"], " Die Katze") == [(0, 4), (4, 10)]
    # a character split over two byte-level tokens: both pieces cover it
    assert S.char_spans(["Port", "-", "\ufffd", "\ufffd", "loula"], "Port-Íloula") == [
        (0, 4), (4, 5), (5, 6), (5, 6), (6, 11)
    ]  # fmt: skip


def test_span_and_word_level_scores_by_hand():
    gold = [S.char_labels([[2, 5]], 8), S.char_labels([], 4)]
    predicted = [np.array([0, 0, 0, 1, 1, 1, 0, 0]), np.array([1, 0, 0, 0])]
    scores = S.span_scores(predicted, gold)  # tp 2, fp 2, fn 1
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    rng = np.random.default_rng(0)
    gold_bad, pred_bad = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    qe = S.word_qe_scores(pred_bad, gold_bad)
    assert qe["f1_bad"] == pytest.approx(f1_score(gold_bad, pred_bad, pos_label=1))
    assert qe["f1_ok"] == pytest.approx(f1_score(gold_bad, pred_bad, pos_label=0))
    assert qe["f1_mult"] == pytest.approx(qe["f1_bad"] * qe["f1_ok"])
    assert qe["mcc"] == pytest.approx(matthews_corrcoef(gold_bad, pred_bad))


def test_the_threshold_is_chosen_on_dev_and_scored_on_test():
    """Dev's best threshold differs from test's own best: the reported test figure is the one at
    dev's threshold (the authors' grid: 20 values from the lowest to the highest dev score)."""

    def item(split, scores, bad):
        spans = [[i, i + 1] for i in range(len(scores))]
        gold = [[i, i + 1] for i, b in enumerate(bad) if b]
        return {
            "split": split,
            "scores": scores,
            "spans": spans,
            "bad": bad,
            "gold": gold,
            "n_chars": len(scores),
        }

    dev = item("dev", [0.1, 0.2, 0.9, 0.95], [1, 1, 0, 0])  # BAD below ~0.2
    test = item("test", [0.1, 0.5, 0.6, 0.95], [1, 1, 1, 0])  # its own best cut would be above 0.6
    grid = np.linspace(0.1, 0.95, 20)
    chosen = grid[int(np.argmax([S.span_scores(*S._chars([dev], t))["f1"] for t in grid]))]
    expected = S.span_scores(*S._chars([test], chosen))["f1"]
    assert H.span_f1([dev, test]) == pytest.approx(expected)
    tuned_on_test = item("dev", test["scores"], test["bad"])
    assert H.span_f1([dev, test]) < H.span_f1([tuned_on_test, test])
    assert H.mcc([dev, test]) == pytest.approx(
        S.word_qe_scores(np.array(test["scores"]) < chosen, np.array(test["bad"]))["mcc"]
    )
    assert H.bad_auroc([dev, test]) == pytest.approx(1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        H.span_f1([test])
    assert any("chosen on the same samples" in str(w.message) for w in caught)


def test_the_span_template_lists_every_estimator_and_metric():
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(tasks_dir() / "_span_template", resolve_func=False)
    assert [f["name"] for f in cfg["filter_list"]] == list(H.SPAN_ESTIMATORS)
    assert [m["metric"] for m in cfg["metric_list"]] == list(H.SPAN_METRICS)
    for m in H.SPAN_METRICS:
        assert callable(getattr(H, m))


# -- in lm-eval --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False)


@pytest.mark.parametrize("task", sorted(FIXTURE_METADATA))
def test_each_mirrored_task_runs_on_its_fixture_in_lm_eval(tiny_dir, task):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import sighead_eval.harness  # noqa: F401  (registers `sighead`)

    manager = TaskManager(
        include_path=str(tasks_dir()), include_defaults=False, metadata=FIXTURE_METADATA[task]
    )
    out = lm_eval.simple_evaluate(
        model="sighead",
        # every estimator, the opt-in `combined` too
        model_args=f"pretrained={tiny_dir / 'base'},adapter={tiny_dir / 'head'},estimators={ALL}",
        tasks=[task],
        batch_size=4,
        apply_chat_template=True,
        task_manager=manager,
        log_samples=True,
    )
    res = out["results"][task]
    if task.endswith(("_esa", "_biomqm")):
        expected = [f"{m},{e}" for m in H.SPAN_METRICS for e in H.SPAN_ESTIMATORS]
    elif "wmt" in task:
        expected = [f"{m},{e}" for m in E.GRADED_METRICS for e in E.GRADED_CONFIDENCES]
        assert res["pearson,sigmoid_sumlog"] != res["pearson,sigmoid_prod"]  # Pearson tells them apart
        assert res["spearman,sigmoid_sumlog"] == pytest.approx(res["spearman,sigmoid_prod"])
    else:
        expected = [
            f"{m},{e}" for m in ("acc", *E.BINARY_METRICS, *E.CALIBRATION_METRICS) for e in E.PROBABILITIES
        ]
    missing = [k for k in expected if k not in res]
    assert not missing, missing[:5]
    if task.endswith("_esa"):
        sample = out["samples"][task][0]
        reply = sample["doc"]["reply"]
        judged = sample["filtered_resps"][0]
        judged = json.loads(judged) if isinstance(judged, str) else judged
        assert judged["response"] == reply  # the spans index exactly the scored text
        spans = S.char_spans(judged["pieces"], reply)  # a byte-split character ('á') aligned too
        assert spans[0][0] == 0 and spans[-1][1] == len(reply)
        assert all(reply[a:b] == p for p, (a, b) in zip(judged["pieces"], spans) if "\ufffd" not in p)


# -- word-level QE on the offline tasks --------------------------------------------------------------
def test_word_level_labels_mark_the_swapped_fact_and_the_wrong_entity():
    from sighead_eval.harness.data import task_hooks as hooks_of

    wiki = hooks_of("sighead_wiki_facts")
    doc = next(d for d in wiki.build_docs() if not d["faithful"])
    text = doc["sentence"]
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1][:-1]  # one token a word, for the test
    fake = [{"response": text, "scores": [0.5] * len(pieces), "pieces": pieces, "estimator": "softmax"}]
    item = wiki.process_results_word(doc, fake)["mcc"]
    bad_words = [p.strip() for p, b in zip(pieces, item["bad"]) if b]
    assert bad_words and all(doc["fact"].split()[0] in w or w in doc["fact"] for w in bad_words)
    original = next(d for d in wiki.build_docs() if d["faithful"] and d["pair"] == doc["pair"])
    assert not any(wiki.process_results_word(original, fake)["mcc"]["bad"])
    geo = hooks_of("sighead_geo_paraphrase")
    para = geo.build_docs()
    truth = {c["country"]: geo._values(c) for c in geo.geography()}
    for d in para:
        if d["correct"]:
            assert d["error_span"] == []
            continue
        a, b = d["error_span"]
        wrong = d["answer"][a:b]
        if d["error"] == "contradiction":
            assert wrong.startswith("not ") and d["answer"].endswith(wrong + ".")
        else:
            assert wrong and wrong != truth[d["country"]][d["type"]]


@pytest.mark.parametrize("task", ["sighead_wiki_facts_word", "sighead_geo_paraphrase_word"])
def test_the_word_level_tasks_run_in_lm_eval(tiny_dir, task_manager, task):
    import lm_eval

    import sighead_eval.harness  # noqa: F401

    out = lm_eval.simple_evaluate(
        model="sighead",
        # every estimator, the opt-in `combined` too
        model_args=f"pretrained={tiny_dir / 'base'},adapter={tiny_dir / 'head'},estimators={ALL}",
        tasks=[task],
        limit=24,
        batch_size=4,
        apply_chat_template=True,
        task_manager=task_manager,
    )
    res = out["results"][task]
    for e in H.SPAN_ESTIMATORS:
        for m in H.SPAN_METRICS:
            assert f"{m},{e}" in res, (m, e)
    assert 0 <= res["bad_auroc,sigmoid"] <= 1 and 0 <= res["word_bad_auroc,softmax"] <= 1
