"""The vocabulary every face shares: estimator, aggregation and metric names, one list each.

A *token estimator* gives each scored token a probability-like score:

- `sigmoid`: the Sigmoid Head, `sigmoid(h_t . W_sig[y])`;
- `softmax`: the LM's own probability `p(y)`;
- `boostedprob`: the dominant-set mass if `y` is dominant, else `p(y)` (BoostedProb);
- `ceiling`: what a perfectly converged Sigmoid Head of the paper's recipe would score, from the
  model's own distribution (docs/method.md derives it): 1 if `y` is dominant, else `p / (p + expected
  negative draws of y)`. Beside a trained head it tells how much of its score is the mechanism
  and how much is learning; it is not a rival of the head.
- `hybrid`: the head's score times the ceiling's, a lever beyond the paper. Inside the dominant set
  the ceiling is 1, so it is the trained head, which keeps the within-set information the
  converged mechanism throws away; outside, the mechanism's converged judgement discounts the
  head's score. Computed only where a head is.

A *sequence aggregation* turns a response's token scores into one number (`SEQUENCE_AGGREGATIONS`,
all computed by the scoring engine). A *confidence* is what the reports rank outputs by, named
`{estimator}_{aggregation}` (`CONFIDENCES`): the token estimators under the aggregations the
reports use (`REPORTED_AGGREGATIONS`), the entropy's mean and maximum, and the response length.
Confidences follow one convention: higher = more confident, so entropies and lengths are negated.

A *metric* says how well a confidence predicts quality. The same names run through the metric
core (`sighead_eval.metrics`), the lm-eval results (`auroc,sigmoid_mean`) and the evaluate module's
outputs:

| name | what | quality |
|---|---|---|
| `pearson`, `spearman`, `kendall` | correlation with the human score | graded |
| `auroc` | ROC-AUC of telling good outputs from bad | binary |
| `ap` | average precision of finding the good outputs | binary |
| `prr`, `prr_50` | prediction-rejection ratio (all / up to 50 % rejected) | both |
| `aurc` | area under the risk-coverage curve (lower is better) | binary |
| `brier`, `ece`, `bce` | calibration, for confidences that are probabilities | binary |
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Token-level estimators whose scores are probabilities (kept as natural logs while scoring).
TOKEN_ESTIMATORS = ("sigmoid", "softmax", "boostedprob", "ceiling", "hybrid")
#: Every aggregation the scoring engine computes per sequence (`ScoredText.sequence_scores`).
SEQUENCE_AGGREGATIONS = ("mean", "prod", "sumlog", "meanlog", "min")
#: The aggregations the reports (lm-eval tasks, demo, compare) rank outputs by.
REPORTED_AGGREGATIONS = ("mean", "prod", "min")
#: Confidences that are probabilities, so calibration metrics apply.
PROBABILITIES = tuple(f"{e}_{a}" for e in TOKEN_ESTIMATORS for a in REPORTED_AGGREGATIONS)
#: Every confidence a report ranks outputs by (higher = more confident).
CONFIDENCES = (*PROBABILITIES, "entropy_mean", "entropy_max", "length")
#: The log-space aggregations a graded task reports beside the others (the authors' sentence
#: scores: the sum and the mean of log scores). Pearson differs between the sum of logs and the
#: product; the rank correlations do not.
LOG_AGGREGATIONS = ("sumlog", "meanlog")
GRADED_CONFIDENCES = (*CONFIDENCES, *(f"{e}_{a}" for e in TOKEN_ESTIMATORS for a in LOG_AGGREGATIONS))
#: The Sigmoid Head's confidences, and the baselines a head is compared with.
HEAD_CONFIDENCES = tuple(c for c in PROBABILITIES if c.startswith("sigmoid_"))
CEILING_CONFIDENCES = tuple(c for c in PROBABILITIES if c.startswith("ceiling_"))
HYBRID_CONFIDENCES = tuple(c for c in PROBABILITIES if c.startswith("hybrid_"))
#: The baselines a head is compared with: everything but the head, its ceiling, the hybrid of the
#: two and the length.
RIVAL_CONFIDENCES = tuple(
    c
    for c in CONFIDENCES
    if c not in HEAD_CONFIDENCES + CEILING_CONFIDENCES + HYBRID_CONFIDENCES and c != "length"
)

GRADED_METRICS = ("pearson", "spearman", "kendall", "prr", "prr_50")
BINARY_METRICS = ("auroc", "ap", "prr", "prr_50", "aurc")
CALIBRATION_METRICS = ("brier", "ece", "bce")
#: Selective generation: the test half's coverage at the threshold chosen on the dev half with a
#: guaranteed selective risk of at most 5 / 10 / 20 % (probability 0.9; `sighead_eval.selective`).
COVERAGE_METRICS = ("coverage_at_risk_05", "coverage_at_risk_10", "coverage_at_risk_20")
METRICS = tuple(dict.fromkeys(GRADED_METRICS + BINARY_METRICS + CALIBRATION_METRICS))
LOWER_IS_BETTER = frozenset({"aurc", "brier", "ece", "bce"})


def aggregate(log_scores) -> dict[str, float]:
    """Every `SEQUENCE_AGGREGATIONS` of one response's per-token log probabilities: mean
    probability, product, sum and mean of logs, minimum."""
    return {agg: values[0] for agg, values in aggregate_rows(np.asarray(log_scores)[None]).items()}


def aggregate_rows(log_scores: np.ndarray) -> dict[str, list[float]]:
    """`aggregate` of each row of `log_scores` (E, R) at once: a handful of numpy calls for every
    estimator of a response together, not a handful per estimator."""
    logs = np.asarray(log_scores, dtype=np.float64)  # (E, R)
    sums = logs.sum(-1)
    return {
        "mean": np.exp(logs).mean(-1).tolist(),
        "prod": np.exp(sums).tolist(),
        "sumlog": sums.tolist(),
        "meanlog": logs.mean(-1).tolist(),
        "min": np.exp(logs.min(-1)).tolist(),
    }


#: Running aggregations over the tokens generated so far, for decode-time rules (`AbstainBelow`).
RUNNING_AGGREGATIONS = ("min", "mean", "prod")


def check_running_confidence(name: str) -> tuple[str, str]:
    """`(token estimator, running aggregation)` of a decode-time confidence such as `sigmoid_min`."""
    estimator, _, running = str(name).partition("_")
    if estimator not in TOKEN_ESTIMATORS or running not in RUNNING_AGGREGATIONS:
        raise ValueError(
            f"unknown decode-time confidence {name!r}; give {{{','.join(TOKEN_ESTIMATORS)}}}_"
            f"{{{','.join(RUNNING_AGGREGATIONS)}}}, e.g. sigmoid_min"
        )
    return estimator, running


def check_confidence(name: str) -> str:
    if name not in GRADED_CONFIDENCES:
        raise ValueError(f"unknown confidence estimator {name!r}; known: {', '.join(GRADED_CONFIDENCES)}")
    return name


def confidence(sequence: Mapping[str, float], n_tokens: int, name: str) -> float | None:
    """The confidence `name` of one output from its sequence scores and token count (higher = more
    confident: entropies and the length are negated); None when the estimator was not computed
    (the Sigmoid Head without an adapter)."""
    if name == "length":
        return -float(n_tokens)
    if name.startswith("entropy_"):
        return -float(sequence[name])
    value = sequence.get(name)
    return None if value is None else float(value)
