"""One self-contained HTML page: the table, the plots, and sample outputs with every token coloured
by its Sigmoid Head confidence beside its softmax probability (no external files or scripts)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from .samples import TaskSamples
from .table import LABELS, POOLED_NOTE, panels
from .words import WORD_COLUMNS, WORD_LABELS, WORD_NOTE, bad_tokens

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.panels { display: flex; flex-wrap: wrap; gap: 14px 22px; align-items: flex-start; }
.panel h3 { font-size: 14px; margin: 6px 0; }
table.metrics { border-collapse: collapse; font-size: 13px; }
table.metrics td, table.metrics th { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
table.metrics td:first-child { text-align: left; font-family: monospace; }
table.metrics .best { font-weight: bold; background: #fff3b0; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.sample { border: 1px solid #ddd; border-left: 6px solid #2ca02c; margin: 10px 0; padding: 8px 10px; }
.sample.wrong { border-left-color: #d62728; }
.q { color: #555; font-size: 13px; margin-bottom: 4px; }
.verdict { font-weight: bold; font-size: 13px; }
.sample.wrong .verdict { color: #d62728; } .sample .verdict { color: #2ca02c; }
.row { margin: 3px 0; white-space: pre-wrap; font-family: monospace; font-size: 14px; line-height: 1.9; }
.lab { display: inline-block; width: 120px; font-family: system-ui, sans-serif; font-size: 12px;
       color: #555; }
.t { padding: 1px 0; border-radius: 2px; }
.t.bad { text-decoration: underline wavy #d62728; text-underline-offset: 4px; }
.seq { font-size: 12px; color: #555; }
.legend span { display: inline-block; width: 46px; text-align: center; font-size: 11px; }
"""


def colour(p: float) -> str:
    """Red (0) through yellow to green (1), light enough to read text on."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({int(120 * p)}, 75%, 78%)"


def token_groups(text: list[str], ids: list[int] | None, decode=None) -> list[tuple[str, list[int]]]:
    """The displayed units of a response: `(text, token indices)`. A character that a byte-level
    tokenizer split over several tokens decodes, token by token, to replacement characters (`�`);
    with the tokenizer's `decode`, its tokens are joined into one unit showing the character."""
    groups, i, n = [], 0, len(text)
    while i < n:
        j = i + 1
        if "\ufffd" in text[i] and decode is not None and ids is not None and len(ids) == n:
            for k in range(i + 1, min(n, i + 4) + 1):  # a UTF-8 character spans at most 4 bytes
                if "\ufffd" not in decode(ids[i:k]):
                    j = k
                    break
        groups.append((text[i] if j == i + 1 else decode(ids[i:j]), list(range(i, j))))
        i = j
    return groups


def _tokens_row(
    label: str, groups, probs: list[float] | None, other: dict, bad: frozenset = frozenset()
) -> str:
    if probs is None:
        return f'<div class="row"><span class="lab">{label}</span><i>not available</i></div>'
    spans = []
    for text, members in groups:
        if any(i >= len(probs) for i in members):
            continue
        tip = " · ".join(
            f"{k} " + "/".join(f"{v[i]:.3f}" for i in members)
            for k, v in other.items()
            if v is not None and all(i < len(v) for i in members)
        )
        p = min(probs[i] for i in members)  # a joined character shows its least sure piece
        cls = "t bad" if bad.intersection(members) else "t"
        spans.append(
            f'<span class="{cls}" style="background:{colour(p)}" title="{html.escape(tip)}">'
            f"{html.escape(text)}</span>"
        )
    return f'<div class="row"><span class="lab">{label}</span>{"".join(spans)}</div>'


def pick_samples(ts: TaskSamples, n: int = 10) -> list[int]:
    """Indices of outputs where the Sigmoid Head and the softmax disagree most (by rank), half of
    them good outputs and half bad ones when the quality is binary."""
    if "sigmoid_mean" in ts.confidence and "softmax_mean" in ts.confidence:
        a = ts.confidence["sigmoid_mean"].argsort().argsort()
        b = ts.confidence["softmax_mean"].argsort().argsort()
        order = np.argsort(-np.abs(a - b), kind="stable")
    else:
        order = np.arange(ts.quality.size)
    if not ts.binary:
        return [int(i) for i in order[:n]]
    good = [int(i) for i in order if ts.quality[i] == 1][: n // 2]
    bad = [int(i) for i in order if ts.quality[i] == 0][: n - len(good)]
    return sorted(good + bad, key=lambda i: (ts.quality[i], i))


def _sample_html(ts: TaskSamples, i: int, decode=None) -> str:
    doc = ts.docs[i]
    prompt = doc.get("question") or doc.get("prompt") or ""
    tok = ts.tokens[i] if i < len(ts.tokens) else {}
    text = tok.get("text") or [ts.responses[i]]
    groups = token_groups(text, tok.get("id"), decode)
    scores = {k: tok.get(k) for k in ("sigmoid", "softmax", "boostedprob", "entropy")}
    bad = frozenset(bad_tokens(doc, text, ts.responses[i])) if tok.get("text") else frozenset()
    if ts.binary:
        ok = ts.quality[i] == 1
        verdict = "✓ correct" if ok else "✗ wrong"
        if "answers" in doc and not ok:
            verdict += f" (expected: {html.escape(str(doc['answers'][0]))})"
        if "faithful" in doc:
            verdict = (
                "✓ original sentence" if ok else f"✗ altered fact: {html.escape(str(doc.get('fact', '')))}"
            )
        cls = "sample" if ok else "sample wrong"
    else:
        verdict, cls = f"human score {ts.quality[i]:.2f}", "sample"
    seq = " · ".join(
        f"{e} {ts.confidence[e][i]:.3f}"
        for e in ("sigmoid_mean", "softmax_mean", "boostedprob_mean")
        if e in ts.confidence
    )
    return (
        f'<div class="{cls}"><div class="q">{html.escape(prompt)}</div>'
        f'<div class="verdict">{verdict}</div>'
        + _tokens_row("Sigmoid Head", groups, scores["sigmoid"], scores, bad)
        + _tokens_row("softmax", groups, scores["softmax"], scores, bad)
        + f'<div class="seq">{seq}</div></div>'
    )


BEST_CELL = '<td class="best">'


def _table_html(table: dict, counts: dict[str, int] | None = None) -> str:
    """A panel per task (estimators down, metrics across), side by side where the page is wide."""
    out = []
    for title, metrics, rows in panels(table, counts):
        head = "".join(f"<th>{LABELS.get(m, m)}</th>" for m in metrics)
        body = "".join(
            f"<tr><td>{html.escape(est)}</td>"
            + "".join((BEST_CELL if best else "<td>") + f"{c}</td>" for c, best in cells)
            + "</tr>"
            for est, cells in rows
        )
        out.append(
            f'<div class="panel"><h3>{html.escape(title)}</h3><table class="metrics">'
            f"<tr><th>estimator</th>{head}</tr>{body}</table></div>"
        )
    return f'<p class="seq">{html.escape(POOLED_NOTE)}</p><div class="panels">{"".join(out)}</div>'


def _words_html(words: dict[str, dict]) -> str:
    """The word-level panels, one per task that labels error spans."""
    out = []
    for task, rows in words.items():
        if not rows:
            continue
        best = {m: max(rows, key=lambda e: rows[e][m]) for m in WORD_COLUMNS}
        head = "".join(f"<th>{WORD_LABELS[m]}</th>" for m in WORD_COLUMNS)
        body = "".join(
            f"<tr><td>{html.escape(est)}</td>"
            + "".join((BEST_CELL if best[m] == est else "<td>") + f"{v[m]:.3f}</td>" for m in WORD_COLUMNS)
            + "</tr>"
            for est, v in rows.items()
        )
        out.append(
            f'<div class="panel"><h3>{html.escape(task)}, word level</h3><table class="metrics">'
            f"<tr><th>token estimator</th>{head}</tr>{body}</table></div>"
        )
    if not out:
        return ""
    return f'<p class="seq">{html.escape(WORD_NOTE)}</p><div class="panels">{"".join(out)}</div>'


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def render_page(
    title: str,
    intro: str,
    table: dict,
    tasks: list[TaskSamples],
    plots: dict[str, list[Path]],
    n=10,
    decode=None,
    words: dict[str, dict] | None = None,
) -> str:
    """The page. `decode` (token ids -> text, the tokenizer's) joins characters split over byte-level
    tokens; without it each token shows as decoded alone. `words`: the word-level figures of the
    tasks that label error spans (`report.words.word_level_rows`)."""
    legend = "".join(f'<span style="background:{colour(p)}">{p:.1f}</span>' for p in np.linspace(0, 1, 11))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>",
        _table_html(table, {ts.task: ts.quality.size for ts in tasks}),
        "".join(_img(p) for p in plots.get("", [])),
        _words_html(words or {}),
        f'<p class="legend">Token colour = probability: {legend}. Hover a token for every estimator. '
        '<span class="t bad" style="width:auto">Wavy red underline</span>: the labelled error span '
        "(the swapped fact, the wrong entity).</p>",
    ]
    for ts in tasks:
        parts.append(f"<h2>{html.escape(ts.task)}</h2>")
        parts.append("".join(_img(p) for p in plots.get(ts.task, [])))
        parts.append(
            f"<p>{min(n, ts.quality.size)} of {ts.quality.size} outputs: those where the two signals "
            "disagree most.</p>"
        )
        parts.extend(_sample_html(ts, i, decode) for i in pick_samples(ts, n))
    parts.append("</body></html>")
    return "\n".join(parts)
