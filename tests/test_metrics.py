"""The metric core: against scikit-learn / scipy, PRR by hand, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from sighead_eval import metrics as M
from sighead_eval.estimators import BINARY_METRICS, CALIBRATION_METRICS, GRADED_METRICS

RNG = np.random.default_rng(0)
CONF = RNG.random(200)
CORRECT = (RNG.random(200) < CONF).astype(float)  # confidence carries some signal
GRADED = CONF * 3 + RNG.normal(size=200)


def test_binary_metrics_match_scikit_learn():
    assert M.auroc(CONF, CORRECT) == pytest.approx(roc_auc_score(CORRECT, CONF))
    assert M.ap(CONF, CORRECT) == pytest.approx(average_precision_score(CORRECT, CONF))


def test_correlations_match_scipy():
    assert M.pearson(CONF, GRADED) == pytest.approx(stats.pearsonr(CONF, GRADED)[0])
    assert M.spearman(CONF, GRADED) == pytest.approx(stats.spearmanr(CONF, GRADED)[0])
    assert M.kendall(CONF, GRADED) == pytest.approx(stats.kendalltau(CONF, GRADED)[0])


def test_prr_worked_example_by_hand():
    # kept-quality curves over rejecting 0..3 of 4: estimator .75, 2/3, 1, 1; oracle .75, 1, 1, 1
    conf, correct = [0.9, 0.8, 0.3, 0.1], [1, 1, 0, 1]
    est, oracle, rand = (0.75 + 2 / 3 + 1 + 1) / 4, (0.75 + 3) / 4, 0.75
    assert M.prr(conf, correct) == pytest.approx((est - rand) / (oracle - rand))
    # up to 50 % rejection: levels 0 and 1 only
    assert M.prr(conf, correct, max_rejection=0.5) == pytest.approx(
        ((0.75 + 2 / 3) / 2 - 0.75) / (0.875 - 0.75)
    )
    assert M.aurc(conf, correct) == pytest.approx(1 - est)


def test_prr_bounds_oracle_random_and_reversed():
    q = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    assert M.prr(q, q) == pytest.approx(1.0)
    assert M.prr(np.ones(8), q) == pytest.approx(0.0)  # constant confidence = random in expectation
    assert M.prr(-q, q) < 0


def test_rejection_curve_ends_at_the_most_confident_sample():
    curve = M.rejection_curve([0.1, 0.9, 0.5], [0, 1, 1])
    assert curve["rejection_rate"] == pytest.approx([0, 1 / 3, 2 / 3])
    assert curve["estimator"] == pytest.approx([2 / 3, 1, 1])
    assert curve["random"] == pytest.approx([2 / 3] * 3)


def test_calibration_metrics_by_hand():
    p, y = [0.9, 0.2, 0.7, 0.4], [1, 0, 0, 1]
    assert M.brier(p, y) == pytest.approx(np.mean([0.01, 0.04, 0.49, 0.36]))
    assert M.bce(p, y) == pytest.approx(
        -np.mean([math.log(0.9), math.log(0.8), math.log(0.3), math.log(0.4)])
    )
    # 20 bins: every sample in its own bin, so ECE = mean |y - p|
    assert M.ece(p, y) == pytest.approx(np.mean([0.1, 0.2, 0.7, 0.6]))


def test_applicable_metrics_follow_the_references():
    assert M.applicable(CONF, CORRECT)[1] == list(BINARY_METRICS + CALIBRATION_METRICS)
    assert M.applicable(np.log(CONF + 1e-3), CORRECT)[1] == list(BINARY_METRICS)  # log scores: no calibration
    assert M.applicable(CONF, GRADED)[1] == list(GRADED_METRICS)
    assert set(M.quality_metrics(CONF, CORRECT)) == set(BINARY_METRICS + CALIBRATION_METRICS)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: M.auroc([0.1, 0.2], [1, 2, 3]), "differ in length: 2 vs 3"),
        (lambda: M.auroc([], []), "`predictions` is empty"),
        (
            lambda: M.auroc([0.1, 0.2], [1, float("nan")]),
            r"`references` holds a non-finite value \(nan\) at index 1",
        ),
        (lambda: M.auroc([0.1, 0.2], ["yes", 1]), "`references` should hold numbers only, got 'yes'"),
        (lambda: M.auroc([0.1, 0.2], [0.5, 1]), "needs 0/1 references"),
        (lambda: M.ece([-3.0, -1.0], [0, 1]), r"needs confidences that are probabilities in \[0, 1\]"),
        (lambda: M.quality_metrics([0.1, 0.2], [0, 1], metrics=["auc"]), r"unknown metric\(s\) \['auc'\]"),
        (lambda: M.quality_metrics([0.1, 0.2], [0, 1], kind="ordinal"), "`kind` should be one of"),
        (lambda: M.prr([0.1, 0.2], [0, 1], max_rejection=0), r"`max_rejection` should be in \(0, 1\]"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_types_are_refused():
    with pytest.raises(TypeError, match="`predictions` should be a list of numbers, got str"):
        M.auroc("0.1 0.2", [0, 1])


@pytest.mark.parametrize(
    ("name", "confidence", "quality", "why"),
    [
        ("auroc", [0.1, 0.2, 0.3], [1, 1, 1], "it needs both correct .* all 3 are 1"),
        ("ap", [0.1, 0.2, 0.3], [0, 0, 0], "it needs both correct .* all 3 are 0"),
        ("prr", [0.1, 0.2, 0.3], [1, 1, 1], "every output has the same quality"),
        ("prr_50", [0.1, 0.2, 0.3], [2.5, 2.5, 2.5], "every output has the same quality"),
        # two outputs of different quality: rejecting up to 50 % keeps only the no-rejection level
        ("prr_50", [0.9, 0.1], [1, 0], "2 outputs are too few to reject up to 50%"),
        ("pearson", [0.1, 0.2, 0.3], [2.0, 2.0, 2.0], "the references are constant"),
        ("spearman", [0.4, 0.4, 0.4], [1.0, 2.0, 3.0], "the confidences are constant"),
        ("kendall", [0.4, 0.4, 0.4], [1.0, 2.0, 3.0], "the confidences are constant"),
    ],
)
def test_undefined_is_nan_with_a_warning_that_says_why(name, confidence, quality, why):
    with pytest.warns(M.UndefinedMetricWarning, match=f"`{name.removesuffix('_50')}` is undefined: {why}"):
        assert math.isnan(M.FUNCTIONS[name](confidence, quality))


def test_every_metric_is_nan_on_one_quality_class_never_a_number():
    with pytest.warns(M.UndefinedMetricWarning):
        out = M.quality_metrics([0.2, 0.4, 0.9], [1, 1, 1], kind="binary")
    for name in ("auroc", "ap", "prr", "prr_50"):
        assert math.isnan(out[name]), name
    assert out["brier"] == pytest.approx(np.mean(np.square([0.8, 0.6, 0.1])))  # defined: a number


def test_auarc_and_accuracy_at_coverage():
    c = [0.9, 0.8, 0.7, 0.6, 0.5]
    q = [1, 1, 0, 1, 0]
    # kept accuracy after rejecting 0..4 of the least confident: 3/5, 3/4, 2/3, 2/2, 1/1
    assert M.auarc(c, q) == pytest.approx(np.mean([3 / 5, 3 / 4, 2 / 3, 1.0, 1.0]))
    assert M.auarc(c, q) == pytest.approx(1 - M.aurc(c, q))
    assert M.accuracy_at_coverage(c, q, 0.4) == 1.0  # the two most confident
    assert M.accuracy_at_coverage(c, q, 0.6) == pytest.approx(2 / 3)
    assert M.accuracy_at_coverage(c, q, 1.0) == pytest.approx(3 / 5)
    assert M.accuracy_at_coverage([0.5] * 4, [1, 0, 1, 0], 0.5) == 0.5  # ties count in expectation
    assert M.quality_metrics(c, q, metrics=["auarc", "acc_at_80"])["acc_at_80"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="`coverage` should be in \\(0, 1\\]"):
        M.accuracy_at_coverage(c, q, 0)
