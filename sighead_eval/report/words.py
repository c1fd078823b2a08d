"""Word-level quality estimation in the reports: which tokens of an output are wrong.

Tasks whose documents label an error span (the swapped fact of `sighead_wiki_facts`, the wrong
entity of `sighead_geo_paraphrase`, the annotated spans of the span tasks) are scored again at
token level from the per-token scores already logged: no second model pass. The figures are those
of the word-level lm-eval tasks (`sighead_wiki_facts_word`, ...): thresholds chosen on the dev
half, figures on the test half.
"""

from __future__ import annotations

import numpy as np

from .. import spans as S
from ..estimators import by_role
from .samples import TaskSamples

#: The word-level figures the demo shows (of `spans.SPAN_METRICS`).
WORD_COLUMNS = ("bad_auroc", "bad_ap", "mcc", "f1_mult", "span_f1")
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


def error_spans(doc: dict) -> list[list[int]] | None:
    """The labelled error spans of a document's output (`[start, end)` characters; `[]` for an
    output without error), or None for a task that labels none."""
    if "faithful" in doc and "fact_span" in doc:
        return [] if doc["faithful"] else [list(doc["fact_span"])]
    if "error_span" in doc:
        return [list(doc["error_span"])] if doc["error_span"] else []
    if "spans" in doc:
        return [list(s) for s in doc["spans"]]
    return None


def bad_tokens(doc: dict, pieces: list[str], response: str) -> set[int]:
    """Indices of the tokens that cover the document's labelled error."""
    spans = error_spans(doc)
    if not spans:
        return set()
    chars = S.char_labels(spans, len(response))
    return {i for i, (a, b) in enumerate(S.char_spans(pieces, response)) if chars[a:b].any()}


def _labels_spans(ts: TaskSamples) -> bool:
    """Whether a task's documents label error spans and its outputs carry token scores."""
    spans = [error_spans(d) for d in ts.docs]
    return bool(ts.docs) and all(s is not None for s in spans) and bool(ts.tokens)


def _records(ts: TaskSamples, est: str) -> list[dict]:
    """One `spans.span_record` per output of the task, for token estimator `est`."""
    return [
        S.span_record(
            response,
            tok["text"],
            S.token_confidences(tok, est),
            doc.get("split", "test"),
            error_spans(doc),
            est,
        )
        for doc, tok, response in zip(ts.docs, ts.tokens, ts.responses)
    ]


def _estimators(ts: TaskSamples) -> list[str]:
    """The token estimators every output of the task logged (the head's are missing without one)."""
    return [e for e in S.SPAN_ESTIMATORS if all(t.get(e) is not None for t in ts.tokens)]


def _table(records: list[dict]) -> dict[str, float]:
    return {m: float(S.span_metric(m, records)) for m in WORD_COLUMNS}


def word_level_rows(ts: TaskSamples) -> dict[str, dict[str, float]]:
    """`{token estimator: {metric: value}}` for a task whose documents label error spans; `{}`
    for one that labels none or logged no token scores."""
    if not _labels_spans(ts) or not all(t.get("text") is not None for t in ts.tokens):
        return {}
    return {est: _table(_records(ts, est)) for est in _estimators(ts)}


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


# -- the pre-registered word-level comparison (`compare --split both`) --------------------------------
#: The rivals of the head at word level (the token estimators that need no head), the roles
#: compared with the best of them on dev, and the one tested metric (threshold-free).
WORD_RIVALS = (*by_role("rival"), "entropy")
WORD_ROLES = {"head": "sigmoid", "ceiling": "ceiling", "hybrid": "hybrid"}
WORD_TESTED = "bad_auroc"


def _bad_auroc(records: list[dict]) -> float:
    from .. import metrics as core

    scores = np.concatenate([r["scores"] for r in records])
    bad = np.concatenate([r["bad"] for r in records])
    return float(core.auroc(-scores, bad))


def word_comparison(
    per_task: list[TaskSamples], iters: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Per task that labels error spans: the rival token estimator with the best dev BAD ROC-AUC;
    on the test half, every token estimator's BAD ROC-AUC, BAD AP, MCC and F1-MULT (thresholds
    from dev); and for the head, the ceiling and the hybrid, the paired bootstrap difference in BAD
    ROC-AUC from the rival (outputs resampled, a sentence and its altered copy together), each
    role a family Holm-corrected over the tasks. Tasks without token scores are left out."""
    from .. import metrics as core

    tasks, families = [], {role: [] for role in WORD_ROLES}
    for ts in per_task:
        if not _labels_spans(ts):
            continue
        records = {e: _records(ts, e) for e in _estimators(ts)}
        dev = [i for i, d in enumerate(ts.docs) if d.get("split") == "dev"]
        test = [i for i, d in enumerate(ts.docs) if d.get("split") == "test"]
        if not dev or not test:
            continue
        rivals = [e for e in WORD_RIVALS if e in records]
        rival = max(rivals, key=lambda e: _bad_auroc([records[e][i] for i in dev]))
        table = {e: _table(r) for e, r in records.items()}
        units: dict = {}
        for i in test:
            units.setdefault(ts.docs[i].get("pair", i), []).append(i)
        groups = list(units.values())
        rng = np.random.default_rng(seed)
        draws = [
            np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
            for _ in range(iters)
        ]
        boot_rival = np.array([_bad_auroc([records[rival][i] for i in idx]) for idx in draws])
        for role, est in WORD_ROLES.items():
            if est not in records:
                continue
            boot = np.array([_bad_auroc([records[est][i] for i in idx]) for idx in draws]) - boot_rival
            diff = table[est]["bad_auroc"] - table[rival]["bad_auroc"]
            families[role].append(
                {"task": ts.task, "estimator": est, "baseline": rival, "diff": float(diff),
                 "p": core.bootstrap_p_value(boot), "_boot": boot}
            )  # fmt: skip
        tasks.append({"task": ts.task, "baseline": rival, "n_test": len(test), "table": table})
    for role, rows in families.items():
        core.correct_family(rows, role, alpha)
    return {"alpha": alpha, "metric": WORD_TESTED, "tasks": tasks, "families": families}


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
