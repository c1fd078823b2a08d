"""Risk-controlled selective generation (`sighead_eval.selective`): the guarantee holds in
simulation, and fails for the naive rule that only matches the calibration risk."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sighead_eval import selective as S

ALPHA, DELTA, SPLITS, N = 0.1, 0.1, 1000, 1000
A = 5  # confidences ~ Beta(A, 1): mostly high, as a language model's are


def true_risk(threshold: float) -> float:
    """The synthetic model: confidence c ~ Beta(A, 1) and P(correct | c) = c, so the selective risk
    of keeping c >= t is 1 - E[c | c >= t] = 1 - A / (A + 1) (1 - t^(A+1)) / (1 - t^A), exactly."""
    if threshold >= 1:
        return 0.0
    t = max(threshold, 0.0)
    return 1 - A / (A + 1) * (1 - t ** (A + 1)) / (1 - t**A)


def draw(rng, n):
    c = rng.beta(A, 1, n)
    return c, (rng.random(n) >= c).astype(float)  # loss = 1 - correct


def violation_share(rule) -> float:
    rng = np.random.default_rng(0)
    hits = sum(true_risk(rule(*draw(rng, N)).threshold) > ALPHA for _ in range(SPLITS))
    return hits / SPLITS


# the share of violations over SPLITS independent calibration draws, with three Monte Carlo sigmas
MC = 3 * math.sqrt(DELTA * (1 - DELTA) / SPLITS)


def test_learn_then_test_keeps_the_risk_at_most_alpha_with_probability_one_minus_delta():
    share = violation_share(lambda c, q: S.risk_controlled_threshold(c, q, ALPHA, DELTA))
    assert share <= DELTA + MC, f"{share:.3f} of {SPLITS} draws broke the guarantee"


def test_the_naive_threshold_breaks_the_guarantee():
    """Matching the calibration risk picks the threshold where the risk is alpha on average: about
    half the draws land below it, far above delta."""
    share = violation_share(lambda c, q: S.naive_threshold(c, q, ALPHA))
    assert share > DELTA + MC, f"the naive rule broke the guarantee in only {share:.3f} of draws"


def test_the_chosen_threshold_is_not_vacuous():
    """The guarantee costs coverage, not all of it: the risk is alpha at t = 0.755 (coverage 0.75)."""
    assert true_risk(0.75) > ALPHA > true_risk(0.76)
    rng = np.random.default_rng(1)
    chosen = S.risk_controlled_threshold(*draw(rng, N), ALPHA, DELTA)
    assert 0.76 <= chosen.threshold < 0.9 and 0.4 < chosen.calibration_coverage < 0.75


def test_evaluate_reports_the_test_coverage_and_realised_risk():
    rng = np.random.default_rng(2)
    out = S.evaluate(draw(rng, 2000), draw(rng, 2000), ALPHA, DELTA)
    assert out["method"].startswith("Learn then Test, binomial tail")
    assert out["test_coverage"] == pytest.approx(1 - out["threshold"] ** A, abs=0.05)
    assert out["test_risk"] <= ALPHA + 0.05


def test_graded_losses_use_hoeffding_and_no_valid_threshold_abstains():
    rng = np.random.default_rng(3)
    c = rng.random(300)
    chosen = S.risk_controlled_threshold(c, 0.5 * (1 - c), ALPHA, DELTA)
    assert "Hoeffding" in chosen.method and chosen.threshold > 0.5
    none = S.risk_controlled_threshold(c, np.ones(300), ALPHA, DELTA)  # every output wrong
    assert none.threshold == math.inf and none.calibration_coverage == 0.0


@pytest.mark.parametrize(
    ("confidence", "loss", "alpha", "message"),
    [
        ([0.2, 1.5], [0, 1], 0.1, "confidences that are probabilities in \\[0, 1\\]"),
        ([0.2, 0.5], [0, 2], 0.1, "losses should be in \\[0, 1\\]"),
        ([0.2, 0.5], [0, 1], 1.0, "the target risk alpha should be in \\(0, 1\\)"),
        ([0.2], [0, 1], 0.1, "of one length"),
    ],
)
def test_bad_input_is_refused(confidence, loss, alpha, message):
    with pytest.raises(ValueError, match=message):
        S.risk_controlled_threshold(confidence, loss, alpha, DELTA)


def saved_run(n=600, seed=0):
    """A saved run as demo and compare write it: lm-eval samples per estimator, dev/test halves."""
    from sighead_eval.harness.confidence import Judged

    rng = np.random.default_rng(seed)
    c, loss = draw(rng, n)
    samples = []
    for est, conf in (("sigmoid_mean", c), ("softmax_mean", rng.random(n)), ("entropy_mean", -rng.random(n))):
        for i in range(n):
            samples.append(
                {
                    "doc_id": i,
                    "doc": {"question": f"q{i}", "split": "dev" if i % 2 else "test"},
                    "filter": est,
                    "filtered_resps": [Judged(response="a", confidence=float(conf[i]), estimator=est)],
                    "prr": (float(conf[i]), float(1 - loss[i])),
                }
            )
    return {"samples": {"sighead_x": samples}}


def test_selective_command_on_a_saved_run(tmp_path, capsys):
    import json

    from sighead_eval.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lm_eval_results.json").write_text(json.dumps(saved_run()))
    args = ["selective", str(tmp_path / "run"), "--target-risk", "0.2", "--output", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| sigmoid_mean |" in printed and "entropy_mean" not in printed  # probabilities only
    report = json.loads((tmp_path / "out" / "selective.json").read_text())
    row = report["tasks"]["sighead_x"]["rows"]["sigmoid_mean"]
    assert row["test_risk"] <= 0.2 + 0.05 and row["test_coverage"] > 0.3  # a calibrated confidence
    assert len(row["curve"]) == len(S.CURVE_RISKS) and row["curve"] == sorted(row["curve"])
    noise = report["tasks"]["sighead_x"]["rows"]["softmax_mean"]  # pure noise: no valid threshold
    assert noise["threshold"] is None and noise["test_coverage"] == 0.0
    assert (tmp_path / "out" / "selective.png").stat().st_size > 10_000


def test_too_few_calibration_outputs_are_said_to_be_too_few():
    report = S.run_report(saved_run(n=12)["samples"], alpha=0.1, delta=0.1)
    assert all(row["threshold"] == math.inf for row in report["tasks"]["sighead_x"]["rows"].values())
    assert "the guarantee cannot be given" in S.report_markdown(report)
    assert "cannot be given" not in S.report_markdown(S.run_report(saved_run()["samples"], 0.2, 0.1))


def test_selective_command_refuses_a_run_without_samples(tmp_path, capsys):
    from sighead_eval.cli import main

    (tmp_path / "lm_eval_results.json").write_text('{"results": {}}')
    assert main(["selective", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "holds no samples" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; expected the lm_eval_results.json of a demo or compare run"),
        ("[1, 2]", "holds a JSON list; expected the lm_eval_results.json"),
        ('{"samples": ', "not valid JSON (Expecting value, line 1 column 13)"),
        ('{"samples": [1]}', "`samples` is a JSON list; expected"),
        (
            '{"samples": {"t": [{"filter": "x", "doc": {}, "filtered_resps": []}]}}',
            "sample 1 of 't' lacks ['doc_id']",
        ),
        ('{"samples": {"t": 3}}', "the samples of 't' are not a list of objects"),
        (
            '{"samples": {"t": [{"doc_id": 0, "filter": "x", "doc": "q", "filtered_resps": []}]}}',
            "sample 1 of 't' has a `doc` that is not an object",
        ),
    ],
    ids=["empty", "list", "truncated", "samples-list", "no-doc-id", "task-not-list", "doc-not-object"],
)
def test_selective_refuses_a_file_of_another_shape_in_one_line(tmp_path, capsys, text, message):
    from sighead_eval.cli import main

    (tmp_path / "run.json").write_text(text)
    assert main(["selective", str(tmp_path / "run.json"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err, err
