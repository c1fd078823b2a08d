"""Confidence estimators as lm-eval filters, and quality metrics as lm-eval aggregations.

The `sighead` model returns each output with its scores attached (`Scored.sighead`). One filter
pipeline per estimator turns an output into `{response, confidence}`; the task's
`process_results` pairs the confidence with the output's quality (correct or not, or a human
score); the aggregations below compute each metric over all pairs. lm-eval names results
`{metric},{filter}`, so one run gives `auroc,sigmoid_mean`, `auroc,softmax_mean`, ... side by side.

Confidences follow one convention: higher = more confident. Entropies and lengths are negated.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import metrics as core
from ..estimators import (
    BINARY_METRICS,
    CALIBRATION_METRICS,
    COVERAGE_METRICS,
    GRADED_METRICS,
    PROBABILITIES,
    check_confidence,
    confidence,
)

#: lm-eval's accuracy of the outputs, reported beside the confidence metrics of binary tasks.
ACCURACY = "acc"


class ScoredStr(str):
    """A generated output (what lm-eval's `generate_until` returns) carrying its confidence scores."""

    sighead: dict

    def __new__(cls, text: str, sighead: dict):
        obj = super().__new__(cls, text)
        obj.sighead = sighead
        return obj

    def __reduce__(self):  # lm-eval's request cache pickles outputs
        return (ScoredStr, (str(self), self.sighead))


class ScoredLoglikelihood(tuple):
    """`(log-likelihood, is_greedy)` as lm-eval's `loglikelihood` returns it, carrying the scores."""

    sighead: dict

    def __new__(cls, logprob: float, greedy: bool, sighead: dict):
        obj = super().__new__(cls, (logprob, greedy))
        obj.sighead = sighead
        return obj

    def __reduce__(self):
        return (ScoredLoglikelihood, (self[0], self[1], self.sighead))


class Judged(dict):
    """A filtered output: `{response, confidence, estimator, ...}`. lm-eval writes filtered outputs
    into its samples log with `str()`, so this one prints as JSON (read back with `json.loads`)."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    __repr__ = __str__


class Confidence:
    """lm-eval filter: each output -> `{response, confidence, estimator}` for one estimator.

    `tokens=True` also keeps the per-token scores (one pipeline per task carries them, so the
    samples log holds them once).
    """

    def __init__(self, estimator: str = "sigmoid_mean", tokens: bool = False, **kwargs) -> None:
        self.estimator = check_confidence(estimator)
        self.tokens = bool(tokens)

    def apply(self, resps, docs):
        return [self._one(r, d) for r, d in zip(resps, docs)]

    def _one(self, outputs, doc=None):
        if not outputs:
            raise ValueError("a sample has no model output to take a confidence from")
        out = outputs[0]
        scores = getattr(out, "sighead", None)
        if scores is None:
            raise TypeError(
                "this task needs the outputs' confidence scores, which only the `sighead` model "
                "records: run it with `--model sighead` (e.g. `sighead-eval lm-eval --model sighead "
                "--tasks ...`), not with a plain model"
            )
        value = confidence(scores["sequence"], scores["n_tokens"], self.estimator)
        result = Judged(
            response=scores["response"],
            confidence=value,
            estimator=self.estimator,
            probability=self.estimator in PROBABILITIES,
            n_tokens=scores["n_tokens"],
            empty_response=scores["empty_response"],
        )
        if isinstance(doc, dict) and doc.get("split") in ("dev", "test"):
            result["split"] = doc["split"]  # the coverage metrics calibrate on dev, measure on test
        if self.tokens:
            result["tokens"] = scores["tokens"]
        return result


def response(results: Sequence[dict]) -> str:
    """The output text in `process_results(doc, results)`."""
    return results[0]["response"]


def binary_results(results: Sequence[dict], correct: bool) -> dict[str, Any]:
    """`process_results` output for a correct/incorrect (or faithful/hallucinated) sample."""
    item = results[0]
    c = item["confidence"]
    out: dict[str, Any] = {ACCURACY: float(bool(correct))}
    if c is None:  # estimator not available (no Sigmoid Head): no rows rather than NaN rows
        return {}
    pair = (float(c), float(bool(correct)))
    out.update({m: pair for m in BINARY_METRICS})
    if item["probability"]:
        out.update({m: pair for m in CALIBRATION_METRICS})
        if item.get("split"):
            out.update({m: (*pair, item["split"]) for m in COVERAGE_METRICS})
    return out


def graded_results(results: Sequence[dict], quality: float) -> dict[str, Any]:
    """`process_results` output for a sample with a graded (human) quality score."""
    c = results[0]["confidence"]
    if c is None:
        return {}
    return {m: (float(c), float(quality)) for m in GRADED_METRICS}


# -- aggregations: a list of (confidence, quality) pairs -> one number ------------------------------
def _pairs(items) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(list(items), dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _guarded(name: str, fn):
    def aggregate(items) -> float:
        c, q = _pairs(items)
        try:
            return float(fn(c, q))
        except ValueError as err:  # e.g. every sample correct under a small --limit
            warnings.warn(
                f"{name} is undefined on these {len(q)} samples ({err}); reported as NaN", stacklevel=2
            )
            return math.nan

    aggregate.__name__ = name
    aggregate.__qualname__ = name
    return aggregate


auroc = _guarded("auroc", core.FUNCTIONS["auroc"])
ap = _guarded("ap", core.FUNCTIONS["ap"])
prr = _guarded("prr", core.FUNCTIONS["prr"])
prr_50 = _guarded("prr_50", core.FUNCTIONS["prr_50"])
aurc = _guarded("aurc", core.FUNCTIONS["aurc"])
brier = _guarded("brier", core.FUNCTIONS["brier"])
ece = _guarded("ece", core.FUNCTIONS["ece"])
bce = _guarded("bce", core.FUNCTIONS["bce"])
pearson = _guarded("pearson", core.FUNCTIONS["pearson"])
spearman = _guarded("spearman", core.FUNCTIONS["spearman"])
kendall = _guarded("kendall", core.FUNCTIONS["kendall"])


def _coverage_at_risk(alpha: float, name: str):
    """Test-half coverage at the Learn-then-Test threshold chosen on the dev half for selective
    risk (the share of wrong outputs kept) at most `alpha` with probability 0.9. Items are
    `(confidence, correct, split)`. Coverage 0 when no threshold is valid (too few dev outputs)."""

    def aggregate(items) -> float:
        from ..protocol.selective import evaluate as selective_evaluate

        rows = [(float(c), float(q), s) for c, q, s in items]
        dev = [(c, 1.0 - q) for c, q, s in rows if s == "dev"]
        test = [(c, 1.0 - q) for c, q, s in rows if s == "test"]
        if not dev or not test:
            warnings.warn(
                f"{name} needs a dev and a test half ({len(dev)} dev, {len(test)} test samples); "
                "reported as NaN",
                stacklevel=2,
            )
            return math.nan
        report = selective_evaluate(tuple(zip(*dev)), tuple(zip(*test)), alpha=alpha, delta=0.1)
        return float(report["test_coverage"])

    aggregate.__name__ = aggregate.__qualname__ = name
    return aggregate


coverage_at_risk_05 = _coverage_at_risk(0.05, "coverage_at_risk_05")
coverage_at_risk_10 = _coverage_at_risk(0.10, "coverage_at_risk_10")
coverage_at_risk_20 = _coverage_at_risk(0.20, "coverage_at_risk_20")
