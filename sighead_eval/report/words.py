"""Word-level quality estimation in the reports: the terminal panel, the Markdown tables, the
comparison's section and headline lines, and the tokens a page underlines. The figures come from
the protocol's word level (`protocol.words`: which tokens of an output are wrong, scored from the
per-token scores already logged).
"""

from __future__ import annotations

from .. import spans as S
from ..protocol.words import WORD_COLUMNS, WORD_ROLES, error_spans

# The word level's figures and comparison, importable here as before.
from ..protocol.words import WORD_RIVALS as WORD_RIVALS
from ..protocol.words import WORD_TESTED as WORD_TESTED
from ..protocol.words import word_comparison as word_comparison
from ..protocol.words import word_level_rows as word_level_rows

WORD_LABELS = {
    "bad_auroc": "BAD ROC-AUC",
    "bad_ap": "BAD AP",
    "mcc": "MCC",
    "f1_mult": "F1-MULT",
    "span_f1": "span F1",
}
WORD_NOTE = (
    "Word level: a token is BAD where it covers the labelled error (the swapped fact, the wrong "
    "entity); BAD ROC-AUC and AP rank tokens by low confidence on the test half; MCC and F1-MULT "
    "(tokens) and span F1 (characters) at a threshold chosen on the dev half."
)


def bad_tokens(doc: dict, pieces: list[str], response: str) -> set[int]:
    """Indices of the tokens that cover the document's labelled error."""
    spans = error_spans(doc)
    if not spans:
        return set()
    chars = S.char_labels(spans, len(response))
    return {i for i, (a, b) in enumerate(S.char_spans(pieces, response)) if chars[a:b].any()}


def word_table_text(task: str, rows: dict[str, dict[str, float]]) -> str:
    """A terminal panel under 80 columns: estimators down, the word-level figures across, the best
    marked with *."""
    best = {m: max(rows, key=lambda e: rows[e][m]) for m in WORD_COLUMNS}
    head = "estimator".ljust(12) + "".join(f"{WORD_LABELS[m]:>13}" for m in WORD_COLUMNS)
    lines = [f"{task.removeprefix('sighead_')}, word level", head, "-" * len(head)]
    for est, values in rows.items():
        cells = "".join(f"{values[m]:>12.3f}{'*' if best[m] == est else ' '}" for m in WORD_COLUMNS)
        lines.append(est.ljust(12) + cells)
    return "\n".join(lines)


def word_table_markdown(task: str, rows: dict[str, dict[str, float]]) -> str:
    best = {m: max(rows, key=lambda e: rows[e][m]) for m in WORD_COLUMNS}
    out = [
        f"### {task}, word level",
        "",
        "| estimator | " + " | ".join(WORD_LABELS[m] for m in WORD_COLUMNS) + " |",
    ]
    out.append("|---" * (len(WORD_COLUMNS) + 1) + "|")
    for est, values in rows.items():
        cells = [f"**{values[m]:.3f}**" if best[m] == est else f"{values[m]:.3f}" for m in WORD_COLUMNS]
        out.append(f"| {est} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def word_comparison_lines(section: dict) -> list[str]:
    """The word-level section of a report: a table per task (test half), then each family's tests."""
    if not section or not section.get("tasks"):
        return []
    lines = [
        "## Word level (test half; thresholds and the rival chosen on dev)",
        "",
        "Which tokens are wrong: the swapped fact, the wrong entity. The rival (B) is the token "
        "estimator without a head with the best dev BAD ROC-AUC; the head (`sigmoid`), its ceiling "
        "and the hybrid are each compared with it in BAD ROC-AUC (paired bootstrap over outputs, "
        "Holm-Bonferroni over the tasks, each family on its own). MCC, F1-MULT and span F1 at "
        "thresholds chosen on dev.",
        "",
    ]
    for t in section["tasks"]:
        lines += [
            f"| {t['task']} ({t['n_test']} test outputs) | "
            + " | ".join(WORD_LABELS[m] for m in WORD_COLUMNS)
            + " |"
        ]
        lines.append("|---" * (len(WORD_COLUMNS) + 1) + "|")
        for est, row in t["table"].items():
            mark = " B" if est == t["baseline"] else ""
            lines.append(f"| {est}{mark} | " + " | ".join(f"{row[m]:.3f}" for m in WORD_COLUMNS) + " |")
        lines.append("")
    for rows in section["families"].values():
        for r in rows:
            interval = f"[{r['low']:+.3f}, {r['high']:+.3f}]"
            lines.append(
                f"- {r['task']}, BAD ROC-AUC: `{r['estimator']}` minus `{r['baseline']}` = {r['diff']:+.3f} "
                f"(interval {interval}; Holm-adjusted p = {r['p_holm']:.3f}): {r['verdict']}."
            )
    return lines + [""]


def word_headline_lines(section: dict) -> list[str]:
    """The word level in a headline: every token estimator's test-half BAD ROC-AUC and MCC per task
    (B: the rival chosen on dev), and each family's tests in one line each."""
    if not section or not section.get("tasks"):
        return []
    tasks = section["tasks"]
    short = [t["task"].removeprefix("sighead_") for t in tasks]
    head = "| token estimator | " + " | ".join(f"{s}: BAD ROC-AUC | {s}: MCC" for s in short) + " |"
    counts = ", ".join(f"{s} {t['n_test']} outputs" for s, t in zip(short, tasks))
    lines = [
        "Word level (which tokens are wrong: the swapped fact, the wrong entity), test halves "
        f"({counts}); MCC at a threshold chosen on dev:",
        "",
        head,
        "|---" * (1 + 2 * len(tasks)) + "|",
    ]
    for est in tasks[0]["table"]:
        cells = []
        for t in tasks:
            row = t["table"].get(est)
            mark = " B" if est == t["baseline"] else ""
            cells += ["–", "–"] if row is None else [f"{row['bad_auroc']:.3f}{mark}", f"{row['mcc']:.3f}"]
        lines.append(f"| {est} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "BAD ROC-AUC against B (paired bootstrap, Holm-Bonferroni over the tasks, each family on its own):",
        "",
    ]
    for role, rows in section["families"].items():
        if rows:
            parts = "; ".join(
                f"{r['task'].removeprefix('sighead_')} {r['diff']:+.3f} ({r['verdict']}, p {r['p_holm']:.3f})"
                for r in rows
            )
            lines.append(f"- `{WORD_ROLES[role]}`: {parts}.")
    return lines + [""]
