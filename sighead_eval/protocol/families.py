"""Choosing on dev, reporting on test: the pre-registered comparison and the families beside it.

Per task, one head aggregation and one rival are chosen by macro ROC-AUC on the dev half; on the
test half, their difference in macro ROC-AUC and PRR gets a paired bootstrap, Holm-Bonferroni
corrected across tasks x metrics. Each family of `FAMILIES` (the mechanism in closed form, the
head times its ceiling, the authors' weighted BoostedProb and combined score) runs the same
protocol against the same rival and is corrected on its own, so it leaves the head's comparisons
as they are. Risk-controlled selective generation is reported
the same way: thresholds chosen on dev, coverage on test (`selective_section`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import metrics as core
from ..estimators import (
    CEILING_CONFIDENCES,
    HEAD_CONFIDENCES,
    HYBRID_CONFIDENCES,
    REPORTED_AGGREGATIONS,
    RIVAL_CONFIDENCES,
)
from .samples import TaskSamples, subset
from .selective import json_safe, task_report
from .stats import METRICS, bootstrap_macro, per_type, type_groups

#: What a head is compared with in the pre-registered comparison: any softmax, BoostedProb or
#: entropy aggregation, the best on dev (the length alone is a row of the tables, not a rival).
RIVALS = RIVAL_CONFIDENCES
ALPHA = 0.05


@dataclass(frozen=True)
class Family:
    """A comparison family beside the pre-registered one: the estimator under test (`role`, one of
    its aggregations chosen on dev), its mark in the tables, and how the reports introduce it."""

    role: str
    mark: str
    confidences: tuple[str, ...]
    intro: str
    legend: str  # what the mark means, in the tables' legend


def _aggregations(estimator: str) -> tuple[str, ...]:
    return tuple(f"{estimator}_{a}" for a in REPORTED_AGGREGATIONS)


#: The families beside the pre-registered one, in report order. Each runs the same protocol as
#: the head's (chosen on dev against the same rival) and is Holm-corrected on its own, so it
#: leaves the head's comparisons as they are.
FAMILIES = {
    "mechanism": Family(
        "ceiling",
        "C",
        CEILING_CONFIDENCES,
        "The mechanism in closed form, no trained head (C: the `ceiling` aggregation chosen on dev, "
        "against the same rival)",
        "C: the ceiling aggregation chosen on dev",
    ),
    "hybrid": Family(
        "hybrid",
        "HC",
        HYBRID_CONFIDENCES,
        "The head times its ceiling, a lever beyond the paper (HC: the `hybrid` aggregation chosen on "
        "dev, against the same rival)",
        "HC: the hybrid (head times ceiling) aggregation chosen on dev",
    ),
    # The authors' two newer estimators (their code since 2026-01-09), outside the pool of rivals:
    # each chosen on dev against the same rival, a family of its own. Reported where computed.
    "weighted": Family(
        "weighted_boostedprob",
        "WB",
        _aggregations("weighted_boostedprob"),
        "The authors' weighted BoostedProb, no head (WB: the `weighted_boostedprob` aggregation chosen "
        "on dev, against the same rival)",
        "WB: the weighted BoostedProb aggregation chosen on dev",
    ),
    "combined": Family(
        "combined",
        "CB",
        _aggregations("combined"),
        "The authors' combined score, the softmax adjusted by the head's ranking (CB: the `combined` "
        "aggregation chosen on dev, against the same rival)",
        "CB: the combined (head and softmax) aggregation chosen on dev",
    ),
}


def choose_on_dev(dev: TaskSamples) -> dict:
    """The head aggregation, each family's aggregation (`FAMILIES`) and the rival with the highest
    macro ROC-AUC on dev."""
    auroc = {e: per_type(dev, e, "auroc")["macro"] for e in dev.estimators}

    def best(names):
        scored = [(auroc[e], e) for e in names if e in auroc and not math.isnan(auroc[e])]
        return max(scored)[1] if scored else None

    return {
        "head": best(HEAD_CONFIDENCES),
        "baseline": best(RIVALS),
        **{f.role: best(f.confidences) for f in FAMILIES.values()},
        "dev_auroc": auroc,
    }


def preregistered(per_task: list[TaskSamples], iters: int = 1000, seed: int = 0) -> dict:
    """The protocol: choose, per task, one head aggregation and one rival on the dev half; on the
    test half, the difference of macro ROC-AUC and PRR with a paired bootstrap, Holm-Bonferroni
    corrected across tasks x metrics. Intervals are at the Bonferroni level 1 - alpha / m."""
    return _dev_chosen_family(per_task, "head", iters, seed)


def family(per_task: list[TaskSamples], name: str, iters: int = 1000, seed: int = 0) -> dict:
    """The protocol for family `name` of `FAMILIES`: per task, its aggregation chosen on dev against
    the same dev-chosen rival, Holm-corrected within the family. Rows name the aggregation under
    `head`, the estimator under test, as the head's rows do."""
    if name not in FAMILIES:
        raise ValueError(f"unknown comparison family {name!r}; known: {', '.join(FAMILIES)}")
    return _dev_chosen_family(per_task, FAMILIES[name].role, iters, seed)


def _dev_chosen_family(per_task: list[TaskSamples], role: str, iters: int, seed: int) -> dict:
    """Per task, the `role` ("head", "ceiling" or "hybrid") estimator and the rival chosen on dev; their
    paired test-half differences, Holm-corrected over this family's comparisons."""
    rows = []
    for ts in per_task:
        dev, test = subset(ts, "dev"), subset(ts, "test")
        chosen = choose_on_dev(dev)
        head, rival = chosen[role], chosen["baseline"]
        if head is None or rival is None or not type_groups(test):
            continue
        for m in METRICS:
            boot = bootstrap_macro(test, (head, rival), m, iters, seed)
            diffs = boot[head] - boot[rival]
            point = per_type(test, head, m)["macro"] - per_type(test, rival, m)["macro"]
            rows.append(
                {"task": ts.task, "metric": m, "head": head, "baseline": rival, "diff": float(point),
                 "p": core.bootstrap_p_value(diffs), "_boot": diffs}
            )  # fmt: skip
    core.correct_family(rows, role, ALPHA)
    return {"alpha": ALPHA, "comparisons": len(rows), "rows": rows}


def selective_section(per_task: list[TaskSamples], delta: float = 0.1) -> dict:
    """Risk-controlled selective generation per binary task: thresholds chosen on dev (Learn then
    Test, `delta`), coverage on test at each target risk."""
    tasks = {ts.task: task_report(subset(ts, "dev"), subset(ts, "test"), 0.1, delta) for ts in per_task}
    return json_safe({"delta": delta, "method": "Learn then Test (arXiv:2110.01052)", "tasks": tasks})
