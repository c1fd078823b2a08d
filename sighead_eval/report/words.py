"""Word-level quality estimation in the reports: which tokens of an output are wrong.

Tasks whose documents label an error span (the swapped fact of `sighead_wiki_facts`, the wrong
entity of `sighead_geo_paraphrase`, the annotated spans of the span tasks) are scored again at
token level from the per-token scores already logged: no second model pass. The figures are those
of the word-level lm-eval tasks (`sighead_wiki_facts_word`, ...): thresholds chosen on the dev
half, figures on the test half.
"""

from __future__ import annotations

from .. import spans as S
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


def word_level_rows(ts: TaskSamples) -> dict[str, dict[str, float]]:
    """`{token estimator: {metric: value}}` for a task whose documents label error spans; `{}`
    for one that labels none or logged no token scores."""
    spans = [error_spans(d) for d in ts.docs]
    if not ts.docs or any(s is None for s in spans) or not all(t.get("text") is not None for t in ts.tokens):
        return {}
    rows = {}
    for est in S.SPAN_ESTIMATORS:
        if any(t.get(est) is None for t in ts.tokens):
            continue  # not computed (no head)
        items = []
        for doc, span, tok, response in zip(ts.docs, spans, ts.tokens, ts.responses):
            scores = [-v for v in tok[est]] if est == "entropy" else tok[est]
            items.append(S.span_record(response, tok["text"], scores, doc.get("split", "test"), span, est))
        rows[est] = {m: float(S.span_metric(m, items)) for m in WORD_COLUMNS}
    return rows


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
