"""Token-level confidence as lm-eval filters, and error-span metrics as lm-eval aggregations.

For tasks whose outputs carry gold error spans (WMT ESA, BioMQM; see `sighead_eval.spans`): one
filter pipeline per token estimator (`TokenScores`) gives each output's per-token confidences;
`span_results(results, doc)` in a task's `process_results` pairs them with the gold spans; each
aggregation below chooses its threshold on the dev half of the task's samples and reports the
test half, as the authors do (their threshold is tuned on dev, then applied to test).

lm-eval names results `{metric},{estimator}`: `span_f1,sigmoid`, `mcc,boostedprob`, ...
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import metrics as core
from .. import spans as S
from ..estimators import TOKEN_ESTIMATORS
from ..scoring import word_spans
from .confidence import Judged

#: Per-token confidences a span task compares: the token estimators, and the entropy (negated).
SPAN_ESTIMATORS = (*TOKEN_ESTIMATORS, "entropy")
#: Character-level span metrics (threshold by span F1 on dev); the WMT word-level QE metrics on
#: tokens (threshold by MCC on dev) and the threshold-free ROC-AUC and AP of finding BAD tokens;
#: the same on words (`word_*`: a word is BAD when any of its tokens is, and scores the product of
#: its tokens' probabilities, or the sum of their negated entropies).
SPAN_METRICS = (
    "span_f1", "span_precision", "span_recall", "f1_bad", "f1_ok", "f1_mult", "mcc", "bad_auroc", "bad_ap",
    "word_f1_bad", "word_f1_ok", "word_f1_mult", "word_mcc", "word_bad_auroc", "word_bad_ap",
)  # fmt: skip


class TokenScores:
    """lm-eval filter: each output -> `{response, scores, pieces}`, the per-token confidences of one
    token estimator (higher = more confident; the entropy negated), None where it was not computed
    (the Sigmoid Head without an adapter)."""

    def __init__(self, estimator: str = "sigmoid", **kwargs) -> None:
        if estimator not in SPAN_ESTIMATORS:
            raise ValueError(f"unknown token estimator {estimator!r}; known: {', '.join(SPAN_ESTIMATORS)}")
        self.estimator = estimator

    def apply(self, resps, docs):
        return [self._one(r) for r in resps]

    def _one(self, outputs):
        scores = getattr(outputs[0], "sighead", None) if outputs else None
        if scores is None:
            raise TypeError(
                "this task needs the outputs' token scores, which only the `sighead` model records: run it "
                "with `--model sighead` (e.g. `sighead-eval lm-eval --tasks ...`)"
            )
        tokens = scores["tokens"]
        values = tokens.get(self.estimator)
        if values is not None and self.estimator == "entropy":
            values = [-v for v in values]
        return Judged(
            response=scores["response"], scores=values, pieces=tokens["text"], estimator=self.estimator
        )


def span_results(results: Sequence[dict], split: str, annotations: Sequence[Sequence[int]]) -> dict[str, Any]:
    """`process_results` output of a sample with gold error spans (`[start, end)` characters of
    the output; an omission has start < 0). `split`: the sample's half, `dev` or `test`."""
    item = results[0]
    if item["scores"] is None:
        return {}
    text = item["response"]
    spans = S.char_spans(item["pieces"], text)
    gold = S.char_labels(annotations, len(text))
    scores = [float(s) for s in item["scores"]]
    bad = S.token_labels(spans, gold).tolist()
    words = word_spans(item["pieces"])
    combine = np.sum if item.get("estimator") == "entropy" else np.prod
    record = {
        "split": split,
        "scores": scores,
        "spans": [list(s) for s in spans],
        "bad": bad,
        "gold": [[int(a), int(b)] for a, b in annotations if a is not None and a >= 0],
        "n_chars": len(text),
        "word_scores": [float(combine(scores[a:b])) for a, b in words],
        "word_bad": [int(any(bad[a:b])) for a, b in words],
    }
    return {m: record for m in SPAN_METRICS}


def _halves(items) -> tuple[list[dict], list[dict]]:
    items = list(items)
    dev = [i for i in items if i["split"] == "dev"]
    test = [i for i in items if i["split"] != "dev"]
    if not dev or not test:
        warnings.warn(
            f"{len(dev)} dev and {len(test)} test samples: the threshold is chosen on the same samples it "
            "is scored on (optimistic); run more samples for a dev half",
            stacklevel=3,
        )
        return items, items
    return dev, test


def _chars(items, threshold):
    predicted = [S.predicted_chars(i["scores"], i["spans"], threshold, i["n_chars"]) for i in items]
    return predicted, [S.char_labels(i["gold"], i["n_chars"]) for i in items]


def _span(items, key: str) -> float:
    dev, test = _halves(items)
    scores = [s for i in dev for s in i["scores"]]
    if not scores:
        return math.nan
    threshold = S.tune_threshold(scores, lambda t: S.span_scores(*_chars(dev, t))["f1"])
    return S.span_scores(*_chars(test, threshold))[key]


def _tokens(items, level: str = "token"):
    scores, bad = ("scores", "bad") if level == "token" else ("word_scores", "word_bad")
    values = np.asarray([s for i in items for s in i[scores]])
    return values, np.asarray([b for i in items for b in i[bad]])


def _word(items, key: str, level: str = "token") -> float:
    dev, test = _halves(items)
    scores, bad = _tokens(dev, level)
    if scores.size == 0:
        return math.nan
    threshold = S.tune_threshold(scores, lambda t: S.word_qe_scores(scores < t, bad)["mcc"])
    test_scores, test_bad = _tokens(test, level)
    return S.word_qe_scores(test_scores < threshold, test_bad)[key]


def _bad(fn, items, level: str = "token") -> float:
    """ROC-AUC / AP of finding BAD tokens (or words) by low confidence, on the test half."""
    _, test = _halves(items)
    scores, bad = _tokens(test, level)
    try:
        return float(fn(-scores, bad))
    except ValueError as err:  # every token OK (or BAD) in a small run
        warnings.warn(f"undefined on these {bad.size} {level}s ({err}); reported as NaN", stacklevel=2)
        return math.nan


def span_f1(items) -> float:
    return _span(items, "f1")


def span_precision(items) -> float:
    return _span(items, "precision")


def span_recall(items) -> float:
    return _span(items, "recall")


def f1_bad(items) -> float:
    return _word(items, "f1_bad")


def f1_ok(items) -> float:
    return _word(items, "f1_ok")


def f1_mult(items) -> float:
    return _word(items, "f1_mult")


def mcc(items) -> float:
    return _word(items, "mcc")


def bad_auroc(items) -> float:
    return _bad(core.auroc, items)


def bad_ap(items) -> float:
    return _bad(core.ap, items)


def word_f1_bad(items) -> float:
    return _word(items, "f1_bad", "word")


def word_f1_ok(items) -> float:
    return _word(items, "f1_ok", "word")


def word_f1_mult(items) -> float:
    return _word(items, "f1_mult", "word")


def word_mcc(items) -> float:
    return _word(items, "mcc", "word")


def word_bad_auroc(items) -> float:
    return _bad(core.auroc, items, "word")


def word_bad_ap(items) -> float:
    return _bad(core.ap, items, "word")
