"""Risk-controlled selective generation: a confidence threshold chosen on calibration data so that,
with probability at least 1 - delta over the calibration draw, the selective risk (the error rate
of the outputs kept) on new data from the same distribution is at most alpha.

The method is Learn then Test (Angelopoulos, Bates, Candès, Jordan and Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052, 2021):

- a grid of thresholds fixed before any data is seen (`GRID`: every 0.01 in [0, 1], and 11
  log-spaced values from 1e-12 to 1e-2 for products of probabilities);
- at each threshold, the null hypothesis "the selective risk here exceeds alpha" is tested with a
  valid p-value: given the n calibration outputs kept, their errors are a binomial draw with the
  selective risk as its rate, so p = P(Binomial(n, alpha) <= errors) (exact, for 0/1 losses), or
  Hoeffding's bound exp(-2 n (alpha - mean loss)^2) for losses in [0, 1];
- Bonferroni over the grid: every threshold with p <= delta / |grid| is valid with family-wise
  error at most delta, so the least conservative of them (the lowest threshold, the highest
  coverage) keeps the guarantee. None valid: abstain on everything.

Confidences must be probabilities (in [0, 1]), so that a grid fixed in advance covers them. The
guarantee costs coverage, and more so with few calibration outputs: with a few hundred, a target
risk close to the best achievable one can leave no valid threshold (abstain on everything).

`task_report` runs it on one task's halves (thresholds on dev, coverage on test), as `compare
--split both` and `sighead-eval selective` report it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: The thresholds tried, most conservative first, fixed before any data is seen.
GRID = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.logspace(-12, -2, 11)]))[::-1]


@dataclass(frozen=True)
class Threshold:
    """A chosen threshold: keep an output when its confidence is at least `threshold` (inf: keep
    none). `calibration_coverage` and `calibration_risk` are the calibration data's own figures."""

    threshold: float
    alpha: float
    delta: float
    method: str
    n_calibration: int
    calibration_coverage: float
    calibration_risk: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check(confidence, loss, alpha: float, delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).ravel()
    q = np.asarray(loss, dtype=np.float64).ravel()
    if c.size != q.size or c.size == 0:
        raise ValueError(
            f"confidences and losses should be non-empty and of one length, got {c.size} and {q.size}"
        )
    if not np.isfinite(c).all() or c.min() < 0 or c.max() > 1:
        raise ValueError(
            "risk control needs confidences that are probabilities in [0, 1] (the threshold grid is fixed "
            f"in advance); got values in [{np.nanmin(c):.3g}, {np.nanmax(c):.3g}]"
        )
    if not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
        raise ValueError("losses should be in [0, 1] (1 - correctness for 0/1 outcomes)")
    check_levels(alpha, delta)
    return c, q


def check_levels(alpha: float, delta: float | None = None) -> None:
    """The target risk and the guarantee's failure chance, each in (0, 1)."""
    if not 0 < alpha < 1:
        raise ValueError(f"the target risk alpha should be in (0, 1), got {alpha!r}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta should be in (0, 1), got {delta!r}")


def _kept(c: np.ndarray, q: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold of `grid`: how many outputs are kept (confidence >= threshold) and the
    sum of their losses."""
    order = np.argsort(-c, kind="stable")
    sorted_c, losses = c[order], np.concatenate([[0.0], np.cumsum(q[order])])
    n = np.searchsorted(-sorted_c, -grid, side="right")  # count of c >= threshold
    return n, losses[n]


def p_values(n: np.ndarray, loss_sum: np.ndarray, alpha: float, binary: bool) -> np.ndarray:
    """Valid p-values for "the selective risk exceeds alpha", given n kept outputs and their summed
    loss: the exact binomial tail for 0/1 losses, Hoeffding's bound otherwise (1 where none is kept)."""
    from scipy.stats import binom

    n = np.asarray(n)
    if binary:
        p = binom.cdf(np.round(loss_sum), n, alpha)
    else:
        mean = np.divide(loss_sum, n, out=np.ones_like(loss_sum, dtype=float), where=n > 0)
        p = np.where(mean < alpha, np.exp(-2 * n * np.clip(alpha - mean, 0, None) ** 2), 1.0)
    return np.where(n > 0, p, 1.0)


def risk_controlled_threshold(confidence, loss, alpha: float = 0.1, delta: float = 0.1) -> Threshold:
    """The least conservative threshold of `GRID` whose selective risk is at most `alpha` with
    probability at least 1 - `delta` (Learn then Test, Bonferroni over the grid)."""
    c, q = _check(confidence, loss, alpha, delta)
    binary = bool(np.isin(q, (0.0, 1.0)).all())
    n, loss_sum = _kept(c, q, GRID)
    valid = p_values(n, loss_sum, alpha, binary) <= delta / GRID.size
    method = "Learn then Test, " + ("binomial tail" if binary else "Hoeffding bound") + ", Bonferroni"
    threshold = float(GRID[valid].min()) if valid.any() else math.inf
    return _describe(threshold, c, q, alpha, delta, method)


def naive_threshold(confidence, loss, alpha: float = 0.1) -> Threshold:
    """The lowest threshold whose calibration risk is at most `alpha`: matches the calibration data
    and guarantees nothing (a baseline, and what risk control is tested against)."""
    c, q = _check(confidence, loss, alpha)
    n, loss_sum = _kept(c, q, GRID)
    ok = (n > 0) & (loss_sum <= alpha * n)
    threshold = float(GRID[ok].min()) if ok.any() else math.inf
    return _describe(threshold, c, q, alpha, None, "calibration risk only (no guarantee)")


def _describe(threshold, c, q, alpha, delta, method) -> Threshold:
    coverage, risk = selective_risk(c, q, threshold)
    return Threshold(
        threshold, alpha, delta if delta is not None else math.nan, method, c.size, coverage, risk
    )


def selective_risk(confidence, loss, threshold: float) -> tuple[float, float]:
    """(coverage, selective risk) of keeping the outputs whose confidence is at least `threshold`;
    the risk is NaN when nothing is kept."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    q = np.asarray(loss, dtype=np.float64).ravel()
    kept = c >= threshold
    coverage = float(kept.mean()) if c.size else 0.0
    return coverage, float(q[kept].mean()) if kept.any() else math.nan


def evaluate(
    calibration: tuple[Sequence[float], Sequence[float]],
    test: tuple[Sequence[float], Sequence[float]],
    alpha: float,
    delta: float,
) -> dict:
    """The threshold chosen on `calibration` (confidences, losses), and its coverage and realised
    risk on `test`."""
    chosen = risk_controlled_threshold(*calibration, alpha=alpha, delta=delta)
    coverage, risk = selective_risk(*test, chosen.threshold)
    return {**chosen.to_dict(), "n_test": len(test[0]), "test_coverage": coverage, "test_risk": risk}


#: The target risks of the coverage-against-risk curve, and those the tables quote.
CURVE_RISKS = tuple(round(0.01 * k, 2) for k in range(1, 51))
QUOTED_RISKS = (0.05, 0.1, 0.2)


def task_report(dev, test, alpha: float = 0.1, delta: float = 0.1) -> dict:
    """One task's figures from its dev and test halves (`TaskSamples`): per probability estimator,
    the threshold chosen on dev, its test coverage and realised risk, the naive rule's test risk,
    and the test coverage at each target risk of `CURVE_RISKS` (the same delta)."""
    from ..estimators import PROBABILITIES

    if not (np.isin(dev.quality, (0, 1)).all() and np.isin(test.quality, (0, 1)).all()):
        return {"skipped": "graded quality: selective risk needs correct/wrong outcomes"}
    if dev.quality.size == 0 or test.quality.size == 0:
        raise ValueError(
            f"{dev.task}: its samples carry no dev/test `split`; calibrate on one half, test on the other"
        )
    rows = {}
    for est in (e for e in PROBABILITIES if e in dev.confidence):
        cal, new = (dev.confidence[est], 1 - dev.quality), (test.confidence[est], 1 - test.quality)
        values = np.concatenate([cal[0], new[0]])
        if values.size and (values.min() < 0 or values.max() > 1):
            continue  # not a probability here (a test's stand-in): the fixed grid does not cover it
        row = evaluate(cal, new, alpha, delta)
        row["naive_test_risk"] = selective_risk(*new, naive_threshold(*cal, alpha).threshold)[1]
        row["curve"] = [evaluate(cal, new, a, delta)["test_coverage"] for a in CURVE_RISKS]
        rows[est] = row
    return {"n_dev": int(dev.quality.size), "n_test": int(test.quality.size), "rows": rows}


def coverage_at(row: dict, risk: float) -> float:
    return row["curve"][CURVE_RISKS.index(risk)]


def json_safe(value):
    """`value` with every non-finite float as None (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
