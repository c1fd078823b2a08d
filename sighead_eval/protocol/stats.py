"""The sequence-level statistics: metrics per question type and their macro average, the one
resampler (`resample`, which the word level uses too), the paired bootstrap, and the breakdowns
by error type and calibration.

Types differ in accuracy, and pooled figures mix them up, so ROC-AUC and PRR are computed per
question type and averaged over types. A bootstrap resamples within each type and class, or by
pair where outputs come in pairs (a sentence and its altered version), and every estimator sees
the same resamples, so differences between them are paired.
"""

from __future__ import annotations

import math

import numpy as np

from .. import metrics as core
from ..estimators import HEAD_CONFIDENCES, PROBABILITIES, by_role
from .samples import TaskSamples

METRICS = ("auroc", "prr")
#: The baselines each head aggregation is compared with: the rivals' (the softmax's, BoostedProb's).
BASELINES = tuple(f"{e}_{a}" for e in by_role("rival") for a in ("prod", "mean", "min"))
HEAD_ROWS = HEAD_CONFIDENCES


def _metric(name: str, c: np.ndarray, q: np.ndarray) -> float:
    return core.rank_auroc(c, q) if name == "auroc" else core.prr(c, q)


def _groups(types, quality: np.ndarray) -> dict[str, np.ndarray]:
    types = np.array([str(t) for t in types])
    out = {}
    for t in sorted(set(types)):
        idx = np.flatnonzero(types == t)
        if 0 < quality[idx].sum() < idx.size:
            out[t] = idx
    return out


def _types(ts: TaskSamples) -> list:
    return [d.get("type", "all") for d in ts.docs]


def type_groups(ts: TaskSamples) -> dict[str, np.ndarray]:
    """Indices of each question type that has both good and bad outputs (others are left out)."""
    return _groups(_types(ts), ts.quality)


def macro_by_type(confidence, quality, types, metric: str = "auroc") -> dict[str, float]:
    """`metric` (`auroc` or `prr`) of `confidence` against `quality` within each question type
    that has both good and bad outputs, and their mean over types (`macro`)."""
    c, q = np.asarray(confidence, dtype=float), np.asarray(quality, dtype=float)
    per = {t: _metric(metric, c[idx], q[idx]) for t, idx in _groups(types, q).items()}
    per["macro"] = float(np.mean(list(per.values()))) if per else math.nan
    return per


def per_type(ts: TaskSamples, est: str, metric: str) -> dict[str, float]:
    """`macro_by_type` of estimator `est` on a task's outputs."""
    return macro_by_type(ts.confidence[est], ts.quality, _types(ts), metric)


def resampling_units(ts: TaskSamples) -> list[list[list[np.ndarray]]]:
    """Per question type, the units a bootstrap resamples with replacement: the pairs of outputs
    that belong together (documents with the same `pair`, such as a sentence and its altered
    version), else each output alone, drawn within its class. Returns, per type, one list of
    units per class (pairs: one list)."""
    groups = type_groups(ts)
    q = ts.quality
    pairs = [d.get("pair") for d in ts.docs]
    strata = []
    for idx in groups.values():
        if all(pairs[i] is not None for i in idx):
            members: dict = {}
            for i in idx:
                members.setdefault(pairs[i], []).append(i)
            strata.append([[np.array(m) for m in members.values()]])
        else:
            strata.append([[np.array([i]) for i in idx[q[idx] == c]] for c in (1, 0)])
    return strata


def resample(strata: list[list[list[np.ndarray]]], rng: np.random.Generator) -> list[np.ndarray]:
    """One bootstrap resample: per stratum, the indices of the units drawn (as many as there are,
    within each of its lists). The one resampler of the protocol, sequence and word level."""
    out = []
    for classes in strata:
        drawn = [units[j] for units in classes for j in rng.integers(0, len(units), len(units))]
        out.append(np.concatenate(drawn))
    return out


def bootstrap_macro(ts: TaskSamples, estimators, metric: str, iters: int = 1000, seed: int = 0) -> dict:
    """`{estimator: (iters,) macro metric}` over bootstrap resamples stratified by type (and by
    class, or by pair where outputs come in pairs: see `resampling_units`). Every estimator sees
    the same resamples, so differences between them are paired."""
    rng = np.random.default_rng(seed)
    q = ts.quality
    strata = resampling_units(ts)
    out = {e: np.zeros(iters) for e in estimators}
    for i in range(iters):
        for idx in resample(strata, rng):
            for e in estimators:
                out[e][i] += _metric(metric, ts.confidence[e][idx], q[idx]) / len(strata)
    return out


def paired_bootstrap(ts: TaskSamples, a: str, b: str, metric: str, iters: int = 1000, seed: int = 0):
    """Macro `metric` of `a` minus that of `b`, with a 95 % percentile interval from a paired
    bootstrap stratified by type and class."""
    if not type_groups(ts):
        return math.nan, math.nan, math.nan
    boot = bootstrap_macro(ts, (a, b), metric, iters, seed)
    return _difference(ts, boot, a, b, metric)


def _difference(ts, boot, a, b, metric):
    point = per_type(ts, a, metric)["macro"] - per_type(ts, b, metric)["macro"]
    lo, hi = np.percentile(boot[a] - boot[b], [2.5, 97.5])
    return float(point), float(lo), float(hi)


def compare_task(ts: TaskSamples, iters: int = 1000, seed: int = 0) -> dict:
    """Per-type and macro ROC-AUC and PRR of every estimator, and the head-vs-baseline intervals."""
    out = {"task": ts.task, "n": int(ts.quality.size), "accuracy": float(ts.quality.mean())}
    out["types"] = {
        t: {"n": int(idx.size), "accuracy": float(ts.quality[idx].mean())}
        for t, idx in type_groups(ts).items()
    }
    out["metrics"] = {m: {e: per_type(ts, e, m) for e in ts.estimators} for m in METRICS}
    heads = [a for a in HEAD_ROWS if a in ts.confidence]
    bases = [b for b in BASELINES if b in ts.confidence]
    out["differences"] = {m: {} for m in METRICS}
    if not type_groups(ts) or not heads:
        return out
    for m in METRICS:
        boot = bootstrap_macro(ts, heads + bases, m, iters, seed)
        for a in heads:
            for b in bases:
                diff = _difference(ts, boot, a, b, m)
                out["differences"][m][f"{a} - {b}"] = dict(zip(("diff", "low", "high"), diff))
    return out


def twins(ts: TaskSamples, error: str) -> np.ndarray:
    """Mask of the true outputs an error type is set against: those whose document names it as
    their `twin` (a contradiction's true answer of the same construction) where any does, else
    those that name no twin (a wrong entity's own fact, in its phrasings). So each error type meets
    true answers of its own shapes, and answer length cannot separate them."""
    true = np.array([d.get("error") == "none" for d in ts.docs], dtype=bool)
    named = np.array([d.get("twin") or "" for d in ts.docs], dtype=object)
    own = true & (named == error)
    return own if own.any() else true & (named == "")


def error_breakdown(ts: TaskSamples) -> dict:
    """For tasks whose false outputs carry an `error` type (not 'none'): per error type, every
    estimator's macro ROC-AUC and PRR over that type's false outputs and their true twins
    (`twins`)."""
    errors = sorted({str(d.get("error")) for d in ts.docs if d.get("error") not in (None, "none")})
    out = {}
    for error in errors:
        keep = twins(ts, error) | np.array([d.get("error") == error for d in ts.docs], dtype=bool)
        part = TaskSamples(
            ts.task, [d for d, k in zip(ts.docs, keep) if k], ts.quality[keep],
            {e: v[keep] for e, v in ts.confidence.items()}, [],
        )  # fmt: skip
        out[error] = {m: {e: per_type(part, e, m)["macro"] for e in part.estimators} for m in METRICS}
    return out


def calibration(dev: TaskSamples, test: TaskSamples) -> dict:
    """Per estimator, ECE and Brier on test: raw (probabilities only) and after Platt scaling
    fitted on dev (every estimator), so the calibrated columns compare like with like."""
    out = {}
    for e in test.estimators:
        row = {}
        c = test.confidence[e]
        probability = e in PROBABILITIES and c.min() >= 0 and c.max() <= 1
        if probability:
            row["raw_ece"] = core.ece(test.confidence[e], test.quality)
            row["raw_brier"] = core.brier(test.confidence[e], test.quality)
        if 0 < dev.quality.sum() < dev.quality.size:
            fitted = core.platt_calibrate(
                dev.confidence[e], dev.quality, c, log_scale=probability and dev.confidence[e].min() > 0
            )
            row["ece"] = core.ece(fitted, test.quality)
            row["brier"] = core.brier(fitted, test.quality)
        out[e] = row
    return out
