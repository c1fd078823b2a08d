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

AGGREGATIONS = ("mean", "prod", "min")
PROB_ESTIMATORS = ("sigmoid", "softmax", "boostedprob")
#: Every confidence a task reports, as `{estimator}_{aggregation}` filter names.
ESTIMATORS = (
    *(f"{e}_{a}" for e in PROB_ESTIMATORS for a in AGGREGATIONS),
    "entropy_mean",
    "entropy_max",
    "length",
)
#: Confidences that are probabilities, so calibration metrics (Brier, ECE, BCE) apply.
PROBABILITIES = tuple(f"{e}_{a}" for e in PROB_ESTIMATORS for a in AGGREGATIONS)
BINARY_METRICS = ("acc", "auroc", "ap", "prr", "prr_50", "aurc")
CALIBRATION_METRICS = ("brier", "ece", "bce")
GRADED_METRICS = ("pearson", "spearman", "kendall", "prr", "prr_50")


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


def scores_of(scored, response: str) -> dict:
    """The per-sample record attached to an output: sequence confidences and per-token scores."""
    tokens = {"text": scored.tokens}
    tokens.update({e: np.exp(scored.log_scores[e]).round(6).tolist() for e in scored.estimators})
    tokens["entropy"] = scored.entropy.round(6).tolist()
    return {
        "response": response,
        "sequence": scored.sequence_scores(),
        "n_tokens": len(scored.token_ids),
        "empty_response": scored.empty_response,
        "tokens": tokens,
    }


def confidence(scores: dict, name: str) -> float | None:
    """The confidence `name` (one of `ESTIMATORS`) of one output, or None when the estimator was
    not computed (the Sigmoid Head without an adapter)."""
    if name == "length":
        return -float(scores["n_tokens"])
    if name.startswith("entropy_"):
        return -float(scores["sequence"][name])
    value = scores["sequence"].get(name)
    return None if value is None else float(value)


def _check_name(name: str) -> str:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown confidence estimator {name!r}; known: {', '.join(ESTIMATORS)}")
    return name


class Confidence:
    """lm-eval filter: each output -> `{response, confidence, estimator}` for one estimator.

    `tokens=True` also keeps the per-token scores (one pipeline per task carries them, so the
    samples log holds them once).
    """

    def __init__(self, estimator: str = "sigmoid_mean", tokens: bool = False, **kwargs) -> None:
        self.estimator = _check_name(estimator)
        self.tokens = bool(tokens)

    def apply(self, resps, docs):
        return [self._one(r) for r in resps]

    def _one(self, outputs):
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
        value = confidence(scores, self.estimator)
        result = Judged(
            response=scores["response"],
            confidence=value,
            estimator=self.estimator,
            probability=self.estimator in PROBABILITIES,
            n_tokens=scores["n_tokens"],
            empty_response=scores["empty_response"],
        )
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
    out: dict[str, Any] = {"acc": float(bool(correct))}
    if c is None:  # estimator not available (no Sigmoid Head): no rows rather than NaN rows
        return {}
    pair = (float(c), float(bool(correct)))
    out.update({m: pair for m in BINARY_METRICS if m != "acc"})
    if item["probability"]:
        out.update({m: pair for m in CALIBRATION_METRICS})
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


auroc = _guarded("auroc", core.roc_auc)
ap = _guarded("ap", core.average_precision)
prr = _guarded("prr", core.prr)
prr_50 = _guarded("prr_50", lambda c, q: core.prr(c, q, max_rejection=0.5))
aurc = _guarded("aurc", core.aurc)
brier = _guarded("brier", core.brier)
ece = _guarded("ece", core.ece)
bce = _guarded("bce", core.bce)
pearson = _guarded("pearson", core.pearson)
spearman = _guarded("spearman", core.spearman)
kendall = _guarded("kendall", core.kendall)
