"""LM-Polygraph estimators over the Sigmoid Head's token scores: `SigmoidHeadSequence` ranks outputs
by an aggregation of them, `SigmoidHeadToken` gives token-level uncertainties; both negated (higher
means less confident), as LM-Polygraph's own. `load_estimator` is its estimator hook (an estimator
named `sighead_eval.polygraph`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from lm_polygraph.estimators.estimator import Estimator

from ..estimators import SEQUENCE_AGGREGATIONS, aggregate_rows
from .calculator import stat_name


class SigmoidHeadSequence(Estimator):
    """Sequence uncertainty: minus an aggregation (`mean`, `prod`, `sumlog`, `meanlog`, `min`) of a
    token estimator's scores (`sigmoid`, `hybrid`, `ceiling`, `boostedprob`, `softmax`)."""

    def __init__(self, estimator: str = "sigmoid", aggregation: str = "mean"):
        if aggregation not in SEQUENCE_AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {aggregation!r}; known: {', '.join(SEQUENCE_AGGREGATIONS)}"
            )
        self.stat = stat_name(estimator)
        self.estimator, self.aggregation = estimator, aggregation
        super().__init__([self.stat], "sequence")

    def __str__(self) -> str:
        return f"SigmoidHead[{self.estimator}_{self.aggregation}]"

    def __call__(self, stats: Mapping[str, Any]) -> np.ndarray:
        rows = _rows(stats, self.stat)
        return -np.array([aggregate_rows(row[None])[self.aggregation][0] for row in rows])


class SigmoidHeadToken(Estimator):
    """Token uncertainty: minus each generated token's score, outputs concatenated."""

    def __init__(self, estimator: str = "sigmoid"):
        self.stat = stat_name(estimator)
        self.estimator = estimator
        super().__init__([self.stat], "token")

    def __str__(self) -> str:
        return f"SigmoidHeadToken[{self.estimator}]"

    def __call__(self, stats: Mapping[str, Any]) -> np.ndarray:
        rows = _rows(stats, self.stat)
        return -np.exp(np.concatenate(rows)) if rows else np.zeros(0)


def _rows(stats: Mapping[str, Any], stat: str) -> list[np.ndarray]:
    if stat not in stats:
        raise KeyError(
            f"{stat} was not computed: register SigmoidHeadGreedyProbsCalculator (builder "
            "sighead_eval.polygraph) after LM-Polygraph's defaults, with a Sigmoid Head adapter for the "
            "sigmoid and hybrid scores"
        )
    return [np.asarray(row, dtype=np.float64) for row in stats[stat]]


def load_estimator(config: Mapping[str, Any]) -> Estimator:
    """LM-Polygraph's estimator hook. `config`: `estimator` (default `sigmoid`), `level`
    (`sequence`, the default, or `token`) and, at sequence level, `aggregation` (default `mean`)."""
    config = dict(config or {})
    level = config.pop("level", "sequence")
    if level == "sequence":
        return SigmoidHeadSequence(**config)
    if level == "token":
        return SigmoidHeadToken(**config)
    raise ValueError(f"unknown level {level!r}; known: sequence, token")
