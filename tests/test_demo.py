"""`sighead-eval demo`: bad input stops before model work; the table; a real run on the default model."""

from __future__ import annotations

import numpy as np
import pytest

from sighead_eval import demo
from sighead_eval.cli import main
from sighead_eval.scoring import ScoredText


def _result(sigmoid: float, softmax: float) -> ScoredText:
    logs = {"sigmoid": np.log([sigmoid]), "softmax": np.log([softmax]), "boostedprob": np.log([softmax])}
    return ScoredText(
        record={}, response="x", token_ids=[1], tokens=["x"], log_scores=logs,
        entropy=np.array([1.0 - softmax]), dominant_size=np.array([1]), dominant_mass=np.array([softmax]),
    )  # fmt: skip


def test_comparison_table_marks_the_best_estimator():
    results = [_result(0.9, 0.4), _result(0.2, 0.6), _result(0.8, 0.3), _result(0.1, 0.5)]
    lines = demo.comparison_table(results, [1, 0, 1, 0], "toy")
    sigmoid = next(line for line in lines if line.startswith("| sigmoid_mean"))
    softmax = next(line for line in lines if line.startswith("| softmax_mean"))
    assert sigmoid.startswith("| sigmoid_mean | **1.000** | **1.000**")
    assert "| 0.000 |" in softmax  # softmax ranks every wrong answer first here


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not load on bad input")


def test_unwritable_results_folder_stops_before_model_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sighead_eval.models.load_model", _no_model)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--output", str(blocker / "results")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_missing_adapter_stops_before_model_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sighead_eval.models.load_model", _no_model)
    assert main(["demo", "--output", str(tmp_path), "--adapter", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.integration
def test_demo_runs_on_the_default_model(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    table = (tmp_path / "demo.md").read_text()
    assert "Correct vs fact-swapped answers, force-decoded (24)" in table
    assert "| sigmoid_mean |" in table and "| softmax_prod |" in table
    assert len((tmp_path / "forced_answers.jsonl").read_text().splitlines()) == 24
