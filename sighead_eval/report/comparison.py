"""The comparison's Markdown (`sighead-eval compare`'s `table.md`) and the blocks generated into the
README, the results page and the adapter cards: the test-half headline table, the calibration,
error-type and gap tables, one sentence per dev-chosen comparison, the models side by side, and the
ablation summary over several reports. Every figure is read from a report the protocol
(`sighead_eval.protocol`) computed; nothing here computes a statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..estimators import CONFIDENCES, HEAD_CONFIDENCES
from ..protocol import FAMILIES, HEAD_ROWS, METRICS
from ..protocol.selective import QUOTED_RISKS, coverage_at
from .words import word_comparison_lines, word_headline_lines


def _cell(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _short(task: str) -> str:
    return task.removeprefix("sighead_")


def headline_table(report: dict) -> str:
    """The test half: every estimator's macro ROC-AUC and PRR, and ECE and Brier after Platt
    scaling fitted on dev; the dev-chosen head aggregation marked H, the dev-chosen rival B, and
    the dev-chosen ceiling and hybrid aggregations C and HC."""
    tasks = report["tasks"]
    chosen = {
        (r["task"], r["head"]): fam.mark
        for name, fam in FAMILIES.items()
        for r in report.get(name, {}).get("rows", [])
    }
    chosen.update({(r["task"], r["head"]): "H" for r in report["preregistered"]["rows"]})
    chosen.update({(r["task"], r["baseline"]): "B" for r in report["preregistered"]["rows"]})
    head = ["estimator"] + [
        f"{_short(t['task'])}: {label}" for t in tasks for label in ("ROC-AUC", "PRR", "ECE", "Brier")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in CONFIDENCES:
        if not any(e in t["metrics"]["auroc"] for t in tasks):
            continue
        cells = [e]
        for t in tasks:
            mark = chosen.get((t["task"], e))
            for m in METRICS:
                v = t["metrics"][m].get(e, {}).get("macro")
                cells.append(_cell(v) + (f" {mark}" if mark else ""))
            cal = report["calibration"][t["task"]].get(e, {})
            cells += [_cell(cal.get("ece")), _cell(cal.get("brier"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def error_table(report: dict) -> list[str]:
    """Markdown lines: per task with error types, each estimator's macro ROC-AUC and PRR per type."""
    lines = []
    for task, table in report.get("errors", {}).items():
        errors = list(table)
        lines += [
            f"## {_short(task)} by error type "
            "(test half: the false outputs of each type against their true twins)",
            "",
        ]
        head = ["estimator"] + [f"{e}: {label}" for e in errors for label in ("ROC-AUC", "PRR")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for est in CONFIDENCES:
            if est not in table[errors[0]]["auroc"]:
                continue
            cells = [_cell(table[e][m].get(est)) for e in errors for m in METRICS]
            lines.append("| " + " | ".join([est, *cells]) + " |")
        lines.append("")
    return lines


def calibration_table(report: dict) -> list[str]:
    tasks = [t["task"] for t in report["tasks"]]
    head = ["estimator"] + [
        f"{_short(t)}: {c}" for t in tasks for c in ("raw ECE", "raw Brier", "Platt ECE", "Platt Brier")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in CONFIDENCES:
        rows = [report["calibration"][t].get(e) for t in tasks]
        if all(r is None for r in rows):
            continue
        cells = [e]
        for r in rows:
            r = r or {}
            cells += [_cell(r.get(k)) for k in ("raw_ece", "raw_brier", "ece", "brier")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def gap_rows(report: dict) -> tuple[list[str], list[tuple[str, str | None, dict, dict]]]:
    """The estimators' marks (H, B, then C and HC where the report has them) and, per task and
    per error type where a task has them, `(task, error type or None, {mark: estimator}, {mark:
    test-half macro ROC-AUC})` of the task's dev choices."""
    chosen = {r["task"]: r for r in report["preregistered"]["rows"] if r["metric"] == "auroc"}
    others = {
        fam.mark: {r["task"]: r["head"] for r in report.get(name, {}).get("rows", [])}
        for name, fam in FAMILIES.items()
    }
    marks = ["H", "B", *(m for m in others if others[m])]
    rows = []
    for t in report["tasks"]:
        row = chosen.get(t["task"])
        if row is None:
            continue
        names = {"H": row["head"], "B": row["baseline"], **{m: others[m].get(t["task"]) for m in marks[2:]}}
        parts = [(None, {e: v["macro"] for e, v in t["metrics"]["auroc"].items()})]
        parts += [
            (error, table["auroc"]) for error, table in report.get("errors", {}).get(t["task"], {}).items()
        ]
        for error, auroc in parts:
            value = {k: auroc.get(e, math.nan) if e else math.nan for k, e in names.items()}
            rows.append((t["task"], error, names, value))
    return marks, rows


def _row_name(task: str, error: str | None) -> str:
    return _short(task) + (f" ({error})" if error else "")


def _gap(value: dict, a: str, b: str) -> str:
    g = value.get(a, math.nan) - value.get(b, math.nan)
    return "–" if math.isnan(g) else f"{g:+.3f}"


def gap_table(report: dict) -> list[str]:
    """Markdown lines: per task, and per error type where a task has them, the test-half macro
    ROC-AUC of the dev-chosen head aggregation (H), rival (B), ceiling aggregation (C) and hybrid
    aggregation (HC), and the gaps: H - B is what the trained head adds over the best baseline,
    C - B what the converged mechanism would, HC - B what the head times its ceiling does, and
    H - C how far training is from the mechanism's convergence."""
    marks, rows = gap_rows(report)
    pairs = [("H", "B"), *((m, "B") for m in marks[2:])] + ([("H", "C")] if "C" in marks else [])
    head = ["task (error type)", *marks, *(f"{a} − {b}" for a, b in pairs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, error, names, value in rows:
        cells = [f"{_cell(value[k])} `{names[k]}`" if names[k] else "–" for k in marks]
        cells += [_gap(value, a, b) for a, b in pairs]
        lines.append("| " + " | ".join([_row_name(task, error), *cells]) + " |")
    return lines


MODELS_START = (
    "<!-- models: generated from the heads' evaluation.json by `compare.models_block`; do not edit -->"
)
MODELS_END = "<!-- models end -->"


def _significant(report: dict) -> set[tuple[str, str]]:
    """(mark, task) of every ROC-AUC comparison a report finds significant after its family's Holm
    correction (H: the pre-registered family)."""
    return {
        (mark, r["task"])
        for name, mark in (("preregistered", "H"), *((n, f.mark) for n, f in FAMILIES.items()))
        for r in report.get(name, {}).get("rows", [])
        if r["metric"] == "auroc" and r["verdict"] != "no significant difference"
    }


def _side_by_side(reports: dict[str, dict], gaps: tuple[tuple[str, str], ...], start: str, end: str) -> str:
    """Several `--split both` reports (label -> report) side by side: per task and error type, each
    report's gaps `a − b` of its own dev choices, a `*` where `a − B` is significant after its
    family's Holm correction (tasks only: error types are not tested). A task's base-model variant
    (`sighead_geo_qa_base`) shares the task's row."""
    significant = {label: _significant(report) for label, report in reports.items()}
    tables = {}  # label -> (marks, {row name: (task, error, value)})
    for label, report in reports.items():
        marks, rows = gap_rows(report)
        tables[label] = (
            marks,
            {
                _row_name(task.removesuffix("_base"), error): (task, error, value)
                for task, error, _, value in rows
            },
        )
    order = list(dict.fromkeys(name for _, named in tables.values() for name in named))
    head = ["task (error type)"] + [f"{label}: {a} − {b}" for label in reports for a, b in gaps]
    lines = [start, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        cells = [name]
        for label, (marks, named) in tables.items():
            for a, b in gaps:
                if name not in named or a not in marks or b not in marks:
                    cells.append("–")
                    continue
                task, error, value = named[name]
                star = "*" if b == "B" and error is None and (a, task) in significant[label] else ""
                cells.append(_gap(value, a, b) + star)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", end]) + "\n"


def models_block(reports: dict[str, dict]) -> str:
    """Several models' `--split both` reports (label -> report) side by side: per task and error
    type, each model's gaps to its own dev-chosen rival (H − B, C − B, HC − B), a `*` where that
    family's ROC-AUC comparison is significant after its Holm correction (tasks only: error types
    are not tested). A task's base-model variant (`sighead_geo_qa_base`) shares the task's row."""
    return _side_by_side(reports, (("H", "B"), ("C", "B"), ("HC", "B")), MODELS_START, MODELS_END)


LEVERS_START = (
    "<!-- levers: generated from the heads' evaluation.json by `compare.levers_block`; do not edit -->"
)
LEVERS_END = "<!-- levers end -->"


TRAINED_MODELS_START = (
    "<!-- trained models: generated from the heads' evaluation.json by `levers_block`; do not edit -->"
)
TRAINED_MODELS_END = "<!-- trained models end -->"


def levers_block(reports: dict[str, dict], start: str = LEVERS_START, end: str = LEVERS_END) -> str:
    """Heads trained with different levers, or on different models (label -> `--split both`
    report): per task and error type, each head's gap to its own dev-chosen rival (H − B, `*`
    significant after Holm) and to its ceiling (H − C); then, per head, its significant comparisons
    of every family (sequence level) and its word-level comparisons with the word-level rival.
    `start`/`end`: the block's markers (a page may hold several blocks)."""
    lines = [_side_by_side(reports, (("H", "B"), ("H", "C")), start, "").rstrip()]
    lines += [
        "",
        "Significant after Holm-Bonferroni correction (paired bootstrap, each family on its own):",
        "",
    ]
    for label, report in reports.items():
        families = [("preregistered", "H")] + [(n, f.mark) for n, f in FAMILIES.items() if n in report]
        lines.append(f"- {label}:")
        lines += [f"  - {mark} against B: {significant_summary(report, name)}" for name, mark in families]
        words = [r for rows in report.get("words", {}).get("families", {}).values() for r in rows]
        if words:
            lines.append(
                "  - word level, BAD ROC-AUC against the word-level rival: "
                + "; ".join(
                    f"`{r['estimator']}` {_short(r['task'])} {r['diff']:+.3f} "
                    f"({r['verdict']}, p {r['p_holm']:.3f})"
                    for r in words
                )
                + "."
            )
    return "\n".join([*lines, "", end]) + "\n"


def preregistered_sentences(report: dict, family: str = "preregistered") -> list[str]:
    """One sentence per (task, metric) of a dev-chosen family's comparisons, from its numbers."""
    pre = report[family]
    out = []
    for r in pre["rows"]:
        name = "ROC-AUC" if r["metric"] == "auroc" else "PRR"
        level = 100 * (1 - pre["alpha"] / max(pre["comparisons"], 1))
        out.append(
            f"{_short(r['task'])}, {name}: `{r['head']}` minus `{r['baseline']}` = {r['diff']:+.3f} "
            f"({level:.1f} % interval [{r['low']:+.3f}, {r['high']:+.3f}]; Holm-adjusted p = "
            f"{r['p_holm']:.3f}): {r['verdict']}."
        )
    return out


HEADLINE_START = "<!-- headline: generated by `sighead-eval compare --split both`; do not edit -->"
HEADLINE_END = "<!-- headline end -->"


def headline_block(report: dict, compact: bool = False) -> str:
    """The headline, generated from a `--split both` report, so every figure quoted is the
    report's own. In full (the results page, the adapter card): the test-half table and one
    sentence per comparison of every family. `compact` (the README's first page): the gaps per
    task and error type, and each family's significant comparisons in one line."""
    n = ", ".join(f"{_short(t['task'])} {t['n']}" for t in report["tasks"])
    intro = (
        f"Test halves only ({n} samples), {report['model']} with `{Path(report['adapter']).name}`, "
        f"{report['date']}. H: the head aggregation chosen on dev; B: the rival chosen on dev (best dev "
        "ROC-AUC among the softmax, BoostedProb and entropy aggregations)"
        + "".join(f"; {fam.legend}" for name, fam in FAMILIES.items() if name in report)
        + ". ROC-AUC and PRR are macro averages over question types"
    )
    if compact:
        families = [("preregistered", "The pre-registered comparisons (H against B)")] + [
            (name, f"{fam.mark} against B") for name, fam in FAMILIES.items() if name in report
        ]
        return (
            "\n".join(
                [
                    HEADLINE_START,
                    "",
                    intro + ". Macro ROC-AUC per task and per error type:",
                    "",
                    *gap_table(report),
                    "",
                    "Significant after Holm-Bonferroni correction (paired bootstrap, each family on its "
                    "own):",
                    "",
                    *(f"- {label}: {significant_summary(report, name)}" for name, label in families),
                    "",
                    *word_headline_lines(report.get("words", {})),
                    HEADLINE_END,
                ]
            )
            + "\n"
        )
    lines = [
        HEADLINE_START,
        "",
        intro + "; ECE and Brier are after Platt scaling fitted on dev.",
        "",
        headline_table(report).rstrip(),
        "",
        "Pre-registered comparisons (paired bootstrap, Holm-Bonferroni over "
        f"{report['preregistered']['comparisons']} comparisons):",
        "",
        *(f"- {line}" for line in preregistered_sentences(report)),
        "",
        *_family_lines(report),
        *word_headline_lines(report.get("words", {})),
        HEADLINE_END,
    ]
    return "\n".join(lines) + "\n"


def significant_summary(report: dict, family: str = "preregistered") -> str:
    """One line: how many of a family's comparisons are significant after correction, and which,
    one clause per task and verdict."""
    fam = report[family]
    hits = [r for r in fam["rows"] if r["verdict"] != "no significant difference"]
    groups: dict[tuple, list[str]] = {}
    for r in hits:
        key = (_short(r["task"]), r["head"], r["baseline"], r["verdict"])
        name = "ROC-AUC" if r["metric"] == "auroc" else "PRR"
        groups.setdefault(key, []).append(f"{name} {r['diff']:+.3f}")
    clauses = "; ".join(
        f"{task} {', '.join(diffs)} (`{head}` against `{base}`: {verdict})"
        for (task, head, base, verdict), diffs in groups.items()
    )
    return f"{len(hits)} of {fam['comparisons']}" + (f": {clauses}." if hits else ".")


def _family_lines(report: dict) -> list[str]:
    """The families beside the pre-registered one (C, HC in the table), each Holm-corrected on its
    own, and the gaps per task and error type."""
    lines = []
    for name, fam in FAMILIES.items():
        if name in report:
            lines += [
                f"{fam.intro}; a family of its own, Holm-Bonferroni over "
                f"{report[name]['comparisons']} comparisons:",
                "",
                *(f"- {line}" for line in preregistered_sentences(report, name)),
                "",
            ]
    if not lines:
        return []
    marks = ", ".join(["H", "B", *(fam.mark for name, fam in FAMILIES.items() if name in report)])
    return [
        *lines,
        "Gaps on the test half, macro ROC-AUC, per task and per error type (the task's dev choices of "
        f"{marks} throughout):",
        "",
        *gap_table(report),
        "",
    ]


def replace_headline(text: str, block: str) -> str:
    """`text` with its headline block (between the markers) replaced by `block`."""
    start, end = text.index(HEADLINE_START), text.index(HEADLINE_END) + len(HEADLINE_END) + 1
    return text[:start] + block + text[end:]


def selective_table(report: dict) -> list[str]:
    if "selective" not in report:
        return []
    sel = report["selective"]
    return [
        "## Selective generation (threshold on dev, coverage on test)",
        "",
        f"The share of test outputs kept by the threshold chosen on the dev half so that the selective "
        f"risk is at most the target with probability at least {1 - sel['delta']:.2f} ({sel['method']}; "
        "`sighead-eval selective` gives the thresholds and realised risks).",
        "",
        *coverage_lines(sel),
        "",
    ]


def coverage_lines(report: dict) -> list[str]:
    """Markdown: per task, each estimator's test coverage at the quoted target risks, the threshold
    chosen on dev (what `compare --split both` prints)."""
    lines = [
        "| task | estimator | " + " | ".join(f"coverage at risk {r}" for r in QUOTED_RISKS) + " |",
        "|---|---|" + "---|" * len(QUOTED_RISKS),
    ]
    for task, entry in report["tasks"].items():
        for est, row in entry.get("rows", {}).items():
            cells = " | ".join(f"{coverage_at(row, r):.3f}" for r in QUOTED_RISKS)
            lines.append(f"| {task.removeprefix('sighead_')} | {est} | {cells} |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"# Comparison: {report['adapter']} on the {report['split']} split", ""]
    lines.append(f"Model {report['model']}; {report['date']}; bootstrap {report['bootstrap']} resamples.")
    if "preregistered" in report:
        pre = report["preregistered"]
        lines += [
            "",
            "## Pre-registered comparison (test half)",
            "",
            "Per task, one Sigmoid Head aggregation (H) and one rival (B: any softmax, BoostedProb or "
            "entropy aggregation) were chosen by macro ROC-AUC on the dev half. Below, the test half only: "
            f"macro ROC-AUC and PRR; ECE and Brier after Platt scaling fitted on dev. Differences: paired "
            f"bootstrap, Holm-Bonferroni corrected over {pre['comparisons']} comparisons (tasks x metrics).",
            "",
            headline_table(report).rstrip(),
            "",
            *(f"- {line}" for line in preregistered_sentences(report)),
            "",
            *_family_lines(report),
            "## Calibration (test half)",
            "",
            "ECE and Brier of each estimator: raw (probabilities only: the scores as they come out), and "
            "after Platt scaling fitted on the dev half (every estimator), which compares like with like.",
            "",
            *calibration_table(report),
            "",
            *selective_table(report),
            *word_comparison_lines(report.get("words", {})),
            *error_table(report),
            "## Exploration (test half, every head aggregation against every baseline, not corrected)",
        ]
    for task in report["tasks"]:
        types = list(task["types"])
        lines += ["", f"## {task['task']} ({task['n']} samples, accuracy {task['accuracy']:.2f})", ""]
        lines.append(
            "types: "
            + ", ".join(f"{t} (n={v['n']}, acc {v['accuracy']:.2f})" for t, v in task["types"].items())
        )
        for m in METRICS:
            rows = task["metrics"][m]
            best = max((v["macro"] for v in rows.values() if not math.isnan(v["macro"])), default=math.nan)
            head = ["estimator", *types, "macro"]
            lines += [
                "",
                f"### {m.upper() if m == 'prr' else 'ROC-AUC'}",
                "",
                "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head),
            ]
            for e, v in rows.items():
                macro = _cell(v["macro"])
                macro = f"**{macro}**" if v["macro"] == best else macro
                lines.append("| " + " | ".join([e, *(_cell(v.get(t)) for t in types), macro]) + " |")
        for m in METRICS:
            diffs = task["differences"][m]
            if not diffs:
                continue
            lines += [
                "",
                f"### Sigmoid Head minus baseline, macro {m.upper() if m == 'prr' else 'ROC-AUC'}"
                " (95 % paired bootstrap)",
                "",
            ]
            lines += ["| comparison | difference | 95 % interval | verdict |", "|---|---|---|---|"]
            for name, d in diffs.items():
                verdict = (
                    "head better"
                    if d["low"] > 0
                    else "head worse"
                    if d["high"] < 0
                    else "no significant difference"
                )
                lines.append(
                    f"| {name} | {d['diff']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {verdict} |"
                )
    return "\n".join(lines) + "\n"


def summary_markdown(reports: dict[str, dict], estimators=HEAD_ROWS) -> str:
    """One ablation table over several `compare` reports (name -> report): each head's macro
    ROC-AUC and PRR per task, then the baselines (from the first report) for reference."""
    first = next(iter(reports.values()))
    tasks = [t["task"] for t in first["tasks"]]
    head = ["recipe", "estimator"] + [
        f"{t.removeprefix('sighead_')} {m}" for t in tasks for m in ("ROC-AUC", "PRR")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, report, est):
        cells = []
        for task in report["tasks"]:
            for m in METRICS:
                per = task["metrics"][m].get(est)
                cells.append(_cell(per["macro"]) if per else "–")
        return "| " + " | ".join([name, est, *cells]) + " |"

    for name, report in reports.items():
        lines += [row(name, report, e) for e in estimators]
    baselines = [e for e in CONFIDENCES if e not in HEAD_CONFIDENCES]  # the ceiling, for reference
    lines += [row("baseline", first, e) for e in baselines]
    return "\n".join(lines) + "\n"
