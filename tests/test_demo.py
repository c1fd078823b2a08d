"""`sighead-eval demo`: bad input stops before any model work; a real run writes every output."""

from __future__ import annotations

import json

import pytest
from conftest import build_model, build_tokenizer
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.cli import main


@pytest.fixture
def no_model_work(monkeypatch):
    """Any model loading or evaluation fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("no model work may start on bad input")

    import lm_eval

    monkeypatch.setattr(lm_eval, "simple_evaluate", refuse)
    monkeypatch.setattr("sighead_eval.models.load_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


def test_unwritable_results_folder_stops_before_model_work(tmp_path, no_model_work, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--output", str(blocker / "results")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_missing_adapter_stops_before_model_work(tmp_path, no_model_work, capsys):
    assert main(["demo", "--output", str(tmp_path), "--adapter", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_task_names_the_known_ones(tmp_path, no_model_work, capsys):
    assert main(["demo", "--output", str(tmp_path), "--tasks", "sighead_geo_qa,sighead_geoqa"]) == 2
    err = capsys.readouterr().err
    assert "unknown task(s) ['sighead_geoqa']" in err and "sighead_wiki_facts" in err


def test_bad_limit_is_refused(tmp_path, no_model_work, capsys):
    assert main(["demo", "--output", str(tmp_path), "--limit", "0"]) == 2
    assert "--limit should be a positive number" in capsys.readouterr().err


def test_adapter_that_does_not_fit_the_model_stops_before_model_work(tmp_path, no_model_work, capsys):
    build_model("llama").save_pretrained(tmp_path / "base")  # config only is read
    build_tokenizer().save_pretrained(tmp_path / "base")
    get_peft_model(build_model("qwen2"), SigmoidHeadConfig()).save_pretrained(tmp_path / "head")
    rc = main(
        [
            "demo",
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(tmp_path / "base"),
            "--adapter",
            str(tmp_path / "head"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "[320, 32]" in err and "[300, 32]" in err


@pytest.mark.integration
def test_demo_runs_the_offline_tasks_on_the_default_model(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--limit", "12"]) == 0
    printed = capsys.readouterr().out
    assert "sigmoid_mean" in printed and "(* best in its column)" in printed
    assert "pooled over every sample of a task" in printed
    panel = printed[printed.index("geo_qa (12 samples)") : printed.index("(* best in its column)")]
    assert max(map(len, panel.splitlines())) < 80  # the terminal table fits 80 columns
    table = (tmp_path / "table.md").read_text()
    for task in ("geo_qa", "arith", "wiki_facts", "geo_paraphrase"):
        assert f"### {task} (12 samples)" in table
    assert "| sigmoid_prod |" in table and "| boostedprob_mean |" in table and "| length |" in table
    results = json.loads((tmp_path / "lm_eval_results.json").read_text())
    from sighead_eval.estimators import CONFIDENCES

    assert "| ceiling_min |" in table
    # 12 samples x every estimator's filter pipeline
    assert len(results["samples"]["sighead_wiki_facts"]) == 12 * len(CONFIDENCES)
    assert (
        "adapter=" in results["config"]["model_args"]
        and "smollm2-135m-instruct-wiki" in results["config"]["model_args"]
    )
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "auroc_prr.png" in pngs and "sighead_geo_qa_rejection.png" in pngs
    assert "sighead_wiki_facts_reliability.png" in pngs
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs) and "Sigmoid Head" in page
    # the word level: a panel for each task that labels its errors, the labelled span underlined
    for task in ("wiki_facts", "geo_paraphrase"):
        assert f"{task}, word level" in printed and f"### sighead_{task}, word level" in table
    assert "geo_qa, word level" not in printed and page.count('class="t bad"') > 1
