"""One table for a run: a row per estimator, a column per (task, metric), the best marked."""

from __future__ import annotations

import csv
import io
import math

from ..estimators import CONFIDENCES, LOWER_IS_BETTER

BINARY_COLUMNS = ("auroc", "prr", "ap", "ece", "brier")
GRADED_COLUMNS = ("pearson", "spearman", "kendall", "prr")
LABELS = {
    "auroc": "ROC-AUC",
    "prr": "PRR",
    "ap": "AP",
    "ece": "raw ECE",
    "brier": "raw Brier",
    "pearson": "Pearson",
    "spearman": "Spearman",
    "kendall": "Kendall",
}


def _columns(results: dict, task: str) -> tuple[str, ...]:
    keys = results[task]
    return GRADED_COLUMNS if any(k.startswith("pearson,") for k in keys) else BINARY_COLUMNS


def estimator_table(results: dict, tasks: list[str] | None = None) -> dict:
    """`{"columns": [(task, metric)], "rows": {estimator: [value or None]}, "best": {column: estimator}}`
    from lm-eval's `results["results"]` (metrics named `{metric},{estimator}`)."""
    tasks = tasks or sorted(results)
    columns = [(t, m) for t in tasks for m in _columns(results, t)]
    rows = {}
    for est in CONFIDENCES:
        values = [results[t].get(f"{m},{est}") for t, m in columns]
        values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
        if any(v is not None for v in values):
            rows[est] = values
    best = {}
    for j, (t, m) in enumerate(columns):
        scored = [(v[j], e) for e, v in rows.items() if v[j] is not None]
        if scored:
            pick = min if m in LOWER_IS_BETTER else max
            best[(t, m)] = pick(scored)[1]
    return {"tasks": tasks, "columns": columns, "rows": rows, "best": best}


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def table_markdown(table: dict) -> str:
    head = ["estimator"] + [f"{t.removeprefix('sighead_')}: {LABELS.get(m, m)}" for t, m in table["columns"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for est, values in table["rows"].items():
        cells = [est]
        for col, v in zip(table["columns"], values):
            cell = _fmt(v)
            cells.append(f"**{cell}**" if table["best"].get(col) == est else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["estimator"] + [f"{t}:{m}" for t, m in table["columns"]])
    for est, values in table["rows"].items():
        writer.writerow([est] + ["" if v is None else f"{v:.6f}" for v in values])
    return out.getvalue()


def table_text(table: dict) -> str:
    """The table for a terminal: aligned columns, the best value per column starred."""
    head = ["estimator"] + [
        f"{t.removeprefix('sighead_')[:9]}:{LABELS.get(m, m)}" for t, m in table["columns"]
    ]
    body = []
    for est, values in table["rows"].items():
        cells = [est]
        for col, v in zip(table["columns"], values):
            cells.append(_fmt(v) + ("*" if table["best"].get(col) == est else " "))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), *map(fmt, body)]) + "\n(* best in its column)\n"
