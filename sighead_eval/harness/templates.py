"""The lm-eval task templates (`tasks/_binary_template`, `_graded_template`, `_span_template`),
written from the estimator registry and the metric names: one filter pipeline per confidence
(or, for the span template, per token estimator), one aggregation per metric.

    python -m sighead_eval.harness.templates          # rewrites the templates in tasks/
    python -m sighead_eval.harness.templates --check  # exit 1 if a template is out of date

`tests/test_harness.py` checks the committed files equal what this module writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import estimators as E
from ..files import write_atomic
from ..spans import SPAN_ESTIMATORS, SPAN_METRICS
from .data import tasks_dir

GENERATED = (
    "# Written by `python -m sighead_eval.harness.templates` from the estimator registry; do not edit."
)
HEADERS = {
    "_binary_template": (
        "# Shared by the tasks whose quality is binary (correct / incorrect, faithful / altered).\n"
        "# One filter pipeline per confidence estimator; lm-eval reports `{metric},{estimator}`."
    ),
    "_graded_template": (
        "# Shared by the tasks whose quality is a graded human score (WMT DA, MQM).\n"
        "# One filter pipeline per confidence estimator; lm-eval reports `{metric},{estimator}`. Beside the\n"
        "# binary tasks' estimators, the sum and mean of log scores (the authors' sentence scores)."
    ),
    "_span_template": (
        "# Shared by the tasks whose outputs carry gold error spans (WMT24 ESA, BioMQM).\n"
        "# One filter pipeline per token estimator; lm-eval reports `{metric},{estimator}`. Each metric's\n"
        "# threshold is chosen on the dev half of the samples and the metric reported on the test half."
    ),
}
CONFIDENCE = "sighead_eval.harness.confidence"
SPANS = "sighead_eval.harness.spans"


def _filters(names, function: str, first_keeps_tokens: bool) -> list[str]:
    lines = ["filter_list:"]
    for i, name in enumerate(names):
        lines += [
            f"  - name: {name}",
            "    filter:",
            f"      - function: !function {function}",
            f"        estimator: {name}",
        ]
        if first_keeps_tokens and i == 0:
            lines.append("        tokens: true  # per-token scores kept once per sample, for inspection")
    return lines


def _metrics(names, module: str) -> list[str]:
    lines = ["metric_list:"]
    for name in names:
        aggregation = "mean" if name == "acc" else f"!function {module}.{name}"
        better = "false" if name in E.LOWER_IS_BETTER else "true"
        lines += [f"  - metric: {name}", f"    aggregation: {aggregation}", f"    higher_is_better: {better}"]
    return lines


def render(name: str) -> str:
    """The text of template `name` (`_binary_template`, `_graded_template` or `_span_template`)."""
    if name == "_binary_template":
        body = _filters(E.CONFIDENCES, f"{CONFIDENCE}.Confidence", True) + _metrics(
            ("acc", *E.BINARY_METRICS, *E.CALIBRATION_METRICS, *E.COVERAGE_METRICS), CONFIDENCE
        )
    elif name == "_graded_template":
        body = _filters(E.GRADED_CONFIDENCES, f"{CONFIDENCE}.Confidence", True) + _metrics(
            E.GRADED_METRICS, CONFIDENCE
        )
    elif name == "_span_template":
        body = _filters(SPAN_ESTIMATORS, f"{SPANS}.TokenScores", False) + _metrics(SPAN_METRICS, SPANS)
    else:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(HEADERS)}")
    return "\n".join([HEADERS[name], GENERATED, *body]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a template is stale")
    parser.add_argument("--tasks", type=Path, default=None, help="the tasks folder (default: the package's)")
    args = parser.parse_args(argv)
    folder = args.tasks or tasks_dir()
    stale = []
    for name in HEADERS:
        path, text = folder / name, render(name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
            if not args.check:
                write_atomic(path, text)
    if args.check and stale:
        print(f"out of date in {folder}: {', '.join(stale)}; run python -m sighead_eval.harness.templates")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
