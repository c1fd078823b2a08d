"""The metric core: how well a confidence predicts quality. Plain numpy / scipy / scikit-learn.

Convention: `confidence` is higher = more sure (negate an uncertainty first); `quality` is
higher = better: a graded human score, or 1 (correct) / 0 (wrong, hallucinated).

- graded quality: Pearson, Spearman and Kendall correlation;
- binary quality: ROC-AUC, average precision, and for confidences that are probabilities,
  Brier score, expected calibration error (20 equal-width bins) and BCE (log-loss);
- selective generation: the rejection curve (mean quality kept after rejecting the least
  confident), PRR (prediction-rejection ratio: the area between the estimator's curve and random
  rejection, over the oracle's), also up to 50 % rejection, and the area under the risk-coverage
  curve (AURC, risk = 1 - quality).

Undefined is NaN: a metric asked of data on which it has no value (one quality class for ROC-AUC,
AP or PRR, a constant input for a correlation) returns NaN with an `UndefinedMetricWarning` that
says why; input that is wrong (mismatched lengths, non-finite values, graded references for a
binary metric) raises `ValueError`.

Ties in confidence are handled as random tie-breaking in expectation: within a tie, every item
counts with the tie's mean quality, so a constant confidence scores exactly like random rejection.
The lm-eval aggregations, the evaluate metric and the CLI reports all call this module; metric
names are those of `sighead_eval.estimators` (`auroc`, `ap`, `prr`, ...), everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from .estimators import BINARY_METRICS, CALIBRATION_METRICS, GRADED_METRICS

ECE_BINS = 20
KINDS = ("auto", "graded", "binary")


def _array(values, name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"`{name}` should be a list of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in values if not isinstance(v, (int, float, np.number))), None)
        raise ValueError(f"`{name}` should hold numbers only, got {bad!r}") from None
    if array.ndim != 1:
        raise ValueError(f"`{name}` should be a flat list of numbers, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"`{name}` is empty; give at least two values")
    if not np.isfinite(array).all():
        i = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"`{name}` holds a non-finite value ({array[i]}) at index {i}; drop or fix it")
    return array


def check_inputs(confidence, quality) -> tuple[np.ndarray, np.ndarray]:
    c, q = _array(confidence, "predictions"), _array(quality, "references")
    if c.shape != q.shape:
        raise ValueError(f"`predictions` and `references` differ in length: {c.size} vs {q.size}")
    if c.size < 2:
        raise ValueError(f"need at least 2 samples, got {c.size}")
    return c, q


def is_binary(quality: np.ndarray) -> bool:
    return bool(np.isin(quality, (0.0, 1.0)).all())


def _need_binary(q: np.ndarray, metric: str) -> None:
    if not is_binary(q):
        raise ValueError(
            f"`{metric}` needs 0/1 references (correct or not), got values such as {np.unique(q)[:5]}"
        )


class UndefinedMetricWarning(UserWarning):
    """A metric was asked of data on which it is undefined; it returned NaN."""


def _undefined(metric: str, why: str) -> float:
    warnings.warn(f"`{metric}` is undefined: {why}; returned NaN", UndefinedMetricWarning, stacklevel=3)
    return math.nan


def _one_class(q: np.ndarray) -> bool:
    return np.unique(q).size < 2


def _one_class_reason(q: np.ndarray) -> str:
    return f"it needs both correct (1) and wrong (0) references, and all {q.size} are {q[0]:g}"


def _need_probabilities(c: np.ndarray, metric: str) -> None:
    if c.min() < 0 or c.max() > 1:
        raise ValueError(
            f"`{metric}` needs confidences that are probabilities in [0, 1], got a range of "
            f"[{c.min():.4g}, {c.max():.4g}]; use a probability aggregation such as `*_mean` or `*_prod`"
        )


# -- correlations ------------------------------------------------------------------------------
def pearson(confidence, quality) -> float:
    from scipy.stats import pearsonr

    c, q = check_inputs(confidence, quality)
    return _corr("pearson", pearsonr, c, q)


def spearman(confidence, quality) -> float:
    from scipy.stats import spearmanr

    c, q = check_inputs(confidence, quality)
    return _corr("spearman", spearmanr, c, q)


def kendall(confidence, quality) -> float:
    from scipy.stats import kendalltau

    c, q = check_inputs(confidence, quality)
    return _corr("kendall", kendalltau, c, q)


def _corr(name: str, fn, c, q) -> float:
    if np.ptp(c) == 0 or np.ptp(q) == 0:
        which = "the confidences" if np.ptp(c) == 0 else "the references"
        return _undefined(name, f"{which} are constant")
    return float(fn(c, q)[0])


# -- binary ------------------------------------------------------------------------------------
def auroc(confidence, correct) -> float:
    """ROC-AUC of telling the correct outputs from the wrong ones by confidence."""
    from sklearn.metrics import roc_auc_score

    c, q = check_inputs(confidence, correct)
    _need_binary(q, "auroc")
    if _one_class(q):
        return _undefined("auroc", _one_class_reason(q))
    return float(roc_auc_score(q, c))


def rank_auroc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """`auroc` from mid-ranks (the Mann-Whitney U statistic), without input checks: for bootstrap
    loops over inputs already checked. Needs both classes."""
    from scipy.stats import rankdata

    pos = correct == 1
    n_p, n_n = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(confidence)
    return float((ranks[pos].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def ap(confidence, correct) -> float:
    """Average precision of finding the correct outputs by confidence."""
    from sklearn.metrics import average_precision_score

    c, q = check_inputs(confidence, correct)
    _need_binary(q, "ap")
    if _one_class(q):
        return _undefined("ap", _one_class_reason(q))
    return float(average_precision_score(q, c))


def brier(probability, correct) -> float:
    c, q = check_inputs(probability, correct)
    _need_binary(q, "brier")
    _need_probabilities(c, "brier")
    return float(np.mean((c - q) ** 2))


def bce(probability, correct, eps: float = 1e-7) -> float:
    c, q = check_inputs(probability, correct)
    _need_binary(q, "bce")
    _need_probabilities(c, "bce")
    p = np.clip(c, eps, 1 - eps)
    return float(-np.mean(q * np.log(p) + (1 - q) * np.log(1 - p)))


def ece(probability, correct, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of |accuracy - confidence| x share."""
    c, q = check_inputs(probability, correct)
    _need_binary(q, "ece")
    _need_probabilities(c, "ece")
    which = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(q[mask].mean() - c[mask].mean())
    return float(total)


def reliability(probability, correct, bins: int = 10) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count, for reliability diagrams."""
    c, q = check_inputs(probability, correct)
    _need_probabilities(c, "reliability")
    which = np.minimum((c * bins).astype(int), bins - 1)
    out = {"bin_confidence": [], "bin_accuracy": [], "bin_count": []}
    for b in range(bins):
        mask = which == b
        out["bin_confidence"].append(float(c[mask].mean()) if mask.any() else math.nan)
        out["bin_accuracy"].append(float(q[mask].mean()) if mask.any() else math.nan)
        out["bin_count"].append(int(mask.sum()))
    return out


# -- selective generation ----------------------------------------------------------------------
def _kept_quality(order_key: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Mean quality kept after rejecting k = 0..n-1 of the lowest `order_key`, ties in expectation."""
    order = np.argsort(-order_key, kind="stable")
    keys, values = order_key[order], q[order].copy()
    group = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1  # tie group of each sorted item
    values = (np.bincount(group, values) / np.bincount(group))[group]  # each tie at its group's mean
    n = q.size
    kept = np.cumsum(values)[::-1] / np.arange(n, 0, -1)  # index k: n - k items kept
    return kept


def rejection_curve(confidence, quality, points: int | None = None) -> dict[str, list[float]]:
    """Mean quality kept at each rejection rate, for the estimator, the oracle and random rejection."""
    c, q = check_inputs(confidence, quality)
    n = q.size
    rates = np.arange(n) / n
    curve = {"rejection_rate": rates, "estimator": _kept_quality(c, q), "oracle": _kept_quality(q, q)}
    curve["random"] = np.full(n, q.mean())
    if points is not None and n > points:
        idx = np.unique(np.linspace(0, n - 1, points).round().astype(int))
        curve = {k: v[idx] for k, v in curve.items()}
    return {k: [float(x) for x in v] for k, v in curve.items()}


def prr(confidence, quality, max_rejection: float = 1.0) -> float:
    """Prediction-rejection ratio: (AUC_estimator - AUC_random) / (AUC_oracle - AUC_random) of the
    rejection curve up to `max_rejection`; 1 = oracle, 0 = random, negative = worse than random."""
    c, q = check_inputs(confidence, quality)
    if not 0 < max_rejection <= 1:
        raise ValueError(f"`max_rejection` should be in (0, 1], got {max_rejection!r}")
    levels = max(1, int(math.floor(max_rejection * q.size)))
    est = _kept_quality(c, q)[:levels].mean()
    oracle = _kept_quality(q, q)[:levels].mean()
    rand = q.mean()
    if oracle - rand <= 0:
        if np.all(q == q[0]):
            return _undefined("prr", "every output has the same quality, so there is nothing to reject")
        return _undefined(
            "prr",
            f"{q.size} outputs are too few to reject up to {max_rejection:.0%}: the curve's levels "
            f"({levels}) reach no rejection at which the oracle beats random; give more outputs",
        )
    return float((est - rand) / (oracle - rand))


def aurc(confidence, quality) -> float:
    """Area under the risk-coverage curve, risk = 1 - quality (lower is better)."""
    c, q = check_inputs(confidence, quality)
    if q.min() < 0 or q.max() > 1:
        raise ValueError("`aurc` needs references in [0, 1] (risk = 1 - quality)")
    return float(1.0 - _kept_quality(c, q).mean())


def auarc(confidence, quality) -> float:
    """Area under the accuracy-rejection curve: the mean quality of the outputs kept, averaged over
    every rejection rate (higher is better; 1 - `aurc` on the same curve)."""
    c, q = check_inputs(confidence, quality)
    return float(_kept_quality(c, q).mean())


def accuracy_at_coverage(confidence, quality, coverage: float = 0.8) -> float:
    """Mean quality of the `coverage` share of outputs kept, most confident first (ties in
    expectation); at least one output is kept."""
    c, q = check_inputs(confidence, quality)
    if not 0 < coverage <= 1:
        raise ValueError(f"`coverage` should be in (0, 1], got {coverage!r}")
    kept = max(1, math.ceil(coverage * q.size - 1e-9))
    return float(_kept_quality(c, q)[q.size - kept])


FUNCTIONS = {
    "pearson": pearson,
    "spearman": spearman,
    "kendall": kendall,
    "auroc": auroc,
    "ap": ap,
    "brier": brier,
    "ece": ece,
    "bce": bce,
    "prr": prr,
    "prr_50": lambda c, q: prr(c, q, max_rejection=0.5),
    "aurc": aurc,
    "auarc": auarc,
    "acc_at_80": lambda c, q: accuracy_at_coverage(c, q, 0.8),
}


def applicable(confidence, quality, kind: str = "auto") -> tuple[str, list[str]]:
    """(kind, metric names) that apply: binary if the references are all 0/1, else graded;
    calibration metrics only for probabilities."""
    if kind not in KINDS:
        raise ValueError(f"`kind` should be one of {KINDS}, got {kind!r}")
    c, q = check_inputs(confidence, quality)
    if kind == "auto":
        kind = "binary" if is_binary(q) else "graded"
    if kind == "graded":
        return kind, list(GRADED_METRICS)
    _need_binary(q, "binary metrics")
    names = list(BINARY_METRICS)
    if c.min() >= 0 and c.max() <= 1:
        names += list(CALIBRATION_METRICS)
    return kind, names


def quality_metrics(confidence, quality, kind: str = "auto", metrics: Sequence[str] | None = None) -> dict:
    """Every applicable metric (or those named) as plain floats."""
    if metrics is None:
        _, names = applicable(confidence, quality, kind)
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = [m for m in metrics if m not in FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(FUNCTIONS)}")
        names = list(metrics)
    return {name: FUNCTIONS[name](confidence, quality) for name in names}


# -- calibration fitted on one half, measured on the other --------------------------------------
def platt_calibrate(fit_confidence, fit_correct, confidence, log_scale: bool = False) -> np.ndarray:
    """Platt scaling: a logistic regression of correctness on the confidence, fitted on one set
    (`fit_*`, e.g. the dev half) and applied to `confidence` (e.g. the test half). `log_scale`
    fits on log(confidence), for products of probabilities that span many orders of magnitude.
    Returns calibrated probabilities: then ECE and Brier compare estimators like with like."""
    from sklearn.linear_model import LogisticRegression

    c_fit, q_fit = check_inputs(fit_confidence, fit_correct)
    _need_binary(q_fit, "platt_calibrate")
    if _one_class(q_fit):
        raise ValueError("`platt_calibrate` needs both correct and wrong outputs to fit on")
    c = _array(confidence, "confidence")

    def feature(x: np.ndarray) -> np.ndarray:
        x = np.log(np.clip(x, 1e-300, None)) if log_scale else x
        return x.reshape(-1, 1)

    model = LogisticRegression(C=1e6, max_iter=1000)  # (almost) no regularisation: Platt's fit
    model.fit(feature(c_fit), q_fit.astype(int))
    return model.predict_proba(feature(c))[:, 1]


# -- many comparisons ---------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order): the family-wise error stays at the level
    compared with, whatever the number of comparisons."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of 'no difference' from bootstrap resamples of a difference: twice the
    smaller share of resamples on either side of 0 (at least one resample's worth)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    share = min(np.mean(d <= 0), np.mean(d >= 0))
    return float(min(1.0, max(2 * share, 1.0 / d.size)))


def correct_family(rows: list[dict], role: str, alpha: float = 0.05) -> list[dict]:
    """Completes a family of bootstrap comparisons in place: each row's `p` (from its `_boot`
    resampled differences, removed here) is Holm-adjusted over the family (`p_holm`), its interval
    is at the Bonferroni level (`low`, `high`), and its `verdict` names `role` better, worse or
    not significantly different."""
    adjusted = holm([r["p"] for r in rows]) if rows else []
    level = alpha / max(len(rows), 1)
    for r, p_adj in zip(rows, adjusted):
        boot = r.pop("_boot")
        r["low"], r["high"] = (
            float(x) for x in np.nanpercentile(boot, [100 * level / 2, 100 * (1 - level / 2)])
        )
        r["p_holm"] = p_adj
        significant = p_adj < alpha
        r["verdict"] = (
            f"{role} better" if significant and r["diff"] > 0 else f"{role} worse" if significant
            else "no significant difference"
        )  # fmt: skip
    return rows
