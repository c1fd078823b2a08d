"""The evaluate modules load offline from the package and agree with the metric core."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import evaluate
import numpy as np
import pytest

import sighead_eval
from sighead_eval import metrics as core
from sighead_eval.estimators import GRADED_METRICS

ADAPTER_DIR = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-135m-instruct-wiki"


def _run_doctests(metric) -> doctest.TestResults:
    test = doctest.DocTestParser().get_doctest(type(metric).__doc__, {}, type(metric).__name__, None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    return runner.summarize(verbose=False)


def test_metric_path_lies_in_the_installed_package():
    path = Path(sighead_eval.metric_path("confidence_quality"))
    assert path.parent.parent == Path(sighead_eval.__file__).parent
    assert (path / "confidence_quality.py").is_file() and (path / "README.md").is_file()


def test_unknown_metric_name_suggests_the_closest():
    with pytest.raises(
        ValueError, match="Unknown metric 'confidence_qualty'.*Did you mean 'confidence_quality'"
    ):
        sighead_eval.metric_path("confidence_qualty")


def test_confidence_quality_agrees_with_the_core_and_supports_add_batch():
    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    assert type(metric).__name__ == "ConfidenceQuality"
    conf, correct = [0.9, 0.1, 0.8, 0.4, 0.3, 0.7], [1, 0, 1, 1, 0, 0]
    for c, y in zip(conf, correct):
        metric.add_batch(predictions=[c], references=[y])
    assert metric.compute() == core.quality_metrics(conf, correct)
    graded = metric.compute(predictions=conf, references=[3.1, 0.2, 2.5, 1.0, 1.5, 2.0])
    assert set(graded) == set(GRADED_METRICS)
    subset = metric.compute(predictions=conf, references=correct, metrics=["auroc"])
    assert subset == {"auroc": core.auroc(conf, correct)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"predictions": [0.1, 0.2], "references": [0, 1], "metrics": ["f1"]},
            r"unknown metric\(s\) \['f1'\]",
        ),
    ],
)
def test_confidence_quality_errors(kwargs, message):
    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    with pytest.raises(ValueError, match=message):
        metric.compute(**kwargs)


def test_confidence_quality_is_nan_where_a_metric_is_undefined():
    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    with pytest.warns(UserWarning, match="`auroc` is undefined: it needs both correct"):
        out = metric.compute(predictions=[0.1, 0.2], references=[1, 1])
    assert math.isnan(out["auroc"]) and math.isnan(out["prr"]) and not math.isnan(out["brier"])


def test_confidence_quality_mismatched_lengths():
    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    with pytest.raises(ValueError):  # evaluate itself refuses ragged columns
        metric.compute(predictions=[0.1, 0.2], references=[1])


def test_confidence_quality_doctests():
    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    result = _run_doctests(metric)
    assert result.attempted >= 4 and result.failed == 0


def test_sigmoid_confidence_on_a_local_model(tmp_path, tokenizer):
    from conftest import build_model
    from peft import get_peft_model

    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    get_peft_model(build_model("llama"), sighead_eval.SigmoidHeadConfig()).save_pretrained(tmp_path / "head")
    metric = evaluate.load(sighead_eval.metric_path("sigmoid_confidence"))
    texts = ["Water boils.", "The capital of France is Paris."]
    kwargs = {"model": str(tmp_path / "base"), "adapter": str(tmp_path / "head")}
    out = metric.compute(predictions=texts, sources=["Hi", "Hi"], return_tokens=True, **kwargs)
    assert len(out["scores"]["sigmoid_mean"]) == 2 and len(out["tokens"]) == 2
    assert len(out["scores"]["hybrid_min"]) == 2 and len(out["scores"]["ceiling_min"]) == 2
    assert out["means"]["softmax_mean"] == pytest.approx(sum(out["scores"]["softmax_mean"]) / 2)
    metric.compute(predictions=texts, **kwargs)
    assert len(metric.__dict__["_sighead_models"]) == 1  # the model loaded once
    with pytest.raises(ValueError, match="one prompt per prediction: got 1 sources for 2 predictions"):
        metric.compute(predictions=texts, sources=["Hi"], **kwargs)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        metric.compute(predictions=texts, model=str(tmp_path / "base"), adapter=str(tmp_path / "nope"))
    with pytest.warns(UserWarning, match="no `adapter` given, so there are no Sigmoid Head scores"):
        plain = metric.compute(predictions=texts, model=str(tmp_path / "base"))
    assert not any(k.startswith(("sigmoid_", "hybrid_")) for k in plain["scores"])
    assert "softmax_mean" in plain["scores"] and "ceiling_mean" in plain["scores"]


@pytest.mark.integration
def test_sigmoid_confidence_doctests_on_the_default_model():
    metric = evaluate.load(sighead_eval.metric_path("sigmoid_confidence"))
    result = _run_doctests(metric)
    assert result.attempted >= 3 and result.failed == 0


def test_confidence_quality_takes_token_level_input():
    """One list of token confidences per output, one list of token labels (1 OK, 0 BAD): the same
    figures as the core's word-level QE on the pooled tokens; a given threshold is used as it is."""
    from sighead_eval import spans

    metric = evaluate.load(sighead_eval.metric_path("confidence_quality"))
    conf = [[0.9, 0.2, 0.8, 0.4], [0.7, 0.1, 0.6], [0.95]]
    ok = [[1, 0, 1, 1], [1, 0, 0], [1]]
    out = metric.compute(predictions=conf, references=ok, threshold=0.5)
    flat_c, flat_ok = np.concatenate(conf), np.concatenate(ok)
    assert out["auroc"] == pytest.approx(core.auroc(flat_c, flat_ok))
    assert out["mcc"] == pytest.approx(spans.word_qe_scores(flat_c < 0.5, flat_ok == 0)["mcc"])
    assert out["threshold"] == 0.5 and out["threshold_tuned_on_these_tokens"] == 0.0
    tuned = metric.compute(predictions=conf, references=ok)
    assert tuned["threshold_tuned_on_these_tokens"] == 1.0 and tuned["mcc"] >= out["mcc"]
    with pytest.raises(ValueError, match="output 1: 3 token confidences but 2 token references"):
        metric.compute(predictions=conf, references=[[1, 0, 1, 1], [1, 0], [1]])
    with pytest.raises(ValueError, match=r"token references should be 1 \(OK\) or 0 \(BAD\)"):
        metric.compute(predictions=conf, references=[[1, 0, 1, 2], [1, 0, 0], [1]])
