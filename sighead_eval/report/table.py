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


#: What the report's figures are, said wherever the table is shown.
POOLED_NOTE = (
    "ROC-AUC, PRR and AP are pooled over every sample of a task (lm-eval's aggregation, dev and test "
    "halves together), not the macro averages over question types of the pre-registered headline "
    "(`compare --split both`); ECE and Brier are raw: a product or minimum of token probabilities is "
    "not a calibrated probability."
)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def panels(table: dict, counts: dict[str, int] | None = None):
    """One panel per task: `(title, metric names, [(estimator, [(text, is best)])])`."""
    for task in table["tasks"]:
        idx = [j for j, (t, _) in enumerate(table["columns"]) if t == task]
        metrics = [table["columns"][j][1] for j in idx]
        rows = []
        for est, values in table["rows"].items():
            cells = [(_fmt(values[j]), table["best"].get(table["columns"][j]) == est) for j in idx]
            if any(values[j] is not None for j in idx):
                rows.append((est, cells))
        name = task.removeprefix("sighead_")
        title = f"{name} ({counts[task]} samples)" if counts and task in counts else name
        yield title, metrics, rows


def table_markdown(table: dict, counts: dict[str, int] | None = None) -> str:
    """A Markdown panel per task (estimators down, metrics across), the best value in bold."""
    out = [POOLED_NOTE, ""]
    for title, metrics, rows in panels(table, counts):
        out += [f"### {title}", ""]
        out.append("| estimator | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |")
        out.append("|" + "---|" * (len(metrics) + 1))
        for est, cells in rows:
            out.append(f"| {est} | " + " | ".join(f"**{c}**" if best else c for c, best in cells) + " |")
        out.append("")
    return "\n".join(out)


def table_csv(table: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["estimator"] + [f"{t}:{m}" for t, m in table["columns"]])
    for est, values in table["rows"].items():
        writer.writerow([est] + ["" if v is None else f"{v:.6f}" for v in values])
    return out.getvalue()


def table_text(table: dict, counts: dict[str, int] | None = None) -> str:
    """The table for a terminal: a panel per task, aligned columns (under 80 characters wide), the
    best value per column starred."""
    out = []
    for title, metrics, rows in panels(table, counts):
        head = ["estimator", *(LABELS.get(m, m) for m in metrics)]
        body = [[est, *(c + ("*" if best else " ") for c, best in cells)] for est, cells in rows]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in [head, *body]
        ]
        out += [title, *lines, ""]
    return "\n".join(out) + "(* best in its column)\n"
