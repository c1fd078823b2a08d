"""Token-level confidence as lm-eval filters, and error-span metrics as lm-eval aggregations.

For tasks whose outputs carry gold error spans (WMT ESA, BioMQM; see `sighead_eval.spans`): one
filter pipeline per token estimator (`TokenScores`) gives each output's per-token confidences;
`span_results(results, doc)` in a task's `process_results` pairs them with the gold spans; each
aggregation below chooses its threshold on the dev half of the task's samples and reports the
test half, as the authors do (their threshold is tuned on dev, then applied to test).

lm-eval names results `{metric},{estimator}`: `span_f1,sigmoid`, `mcc,boostedprob`, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import spans as S
from ..spans import SPAN_ESTIMATORS, SPAN_METRICS
from .confidence import Judged


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
        return Judged(
            response=scores["response"],
            scores=S.token_confidences(tokens, self.estimator),
            pieces=tokens["text"],
            estimator=self.estimator,
        )


def span_results(results: Sequence[dict], split: str, annotations: Sequence[Sequence[int]]) -> dict[str, Any]:
    """`process_results` output of a sample with gold error spans (`[start, end)` characters of
    the output; an omission has start < 0). `split`: the sample's half, `dev` or `test`."""
    item = results[0]
    if item["scores"] is None:
        return {}
    record = S.span_record(
        item["response"], item["pieces"], item["scores"], split, annotations, item.get("estimator", "")
    )
    return {m: record for m in SPAN_METRICS}


def _aggregation(name: str):
    def aggregate(items) -> float:
        return S.span_metric(name, items)

    aggregate.__name__ = aggregate.__qualname__ = name
    return aggregate


span_f1 = _aggregation("span_f1")
span_precision = _aggregation("span_precision")
span_recall = _aggregation("span_recall")
f1_bad = _aggregation("f1_bad")
f1_ok = _aggregation("f1_ok")
f1_mult = _aggregation("f1_mult")
mcc = _aggregation("mcc")
bad_auroc = _aggregation("bad_auroc")
bad_ap = _aggregation("bad_ap")
word_f1_bad = _aggregation("word_f1_bad")
word_f1_ok = _aggregation("word_f1_ok")
word_f1_mult = _aggregation("word_f1_mult")
word_mcc = _aggregation("word_mcc")
word_bad_auroc = _aggregation("word_bad_auroc")
word_bad_ap = _aggregation("word_bad_ap")
