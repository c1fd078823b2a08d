"""The word level of the protocol: which tokens of an output are wrong.

Tasks whose documents label an error span (the swapped fact of `sighead_wiki_facts`, the wrong
entity of `sighead_geo_paraphrase`, the annotated spans of the span tasks) are scored again at
token level from the per-token scores already logged: no second model pass. The figures are those
of the word-level lm-eval tasks (`sighead_wiki_facts_word`, ...): thresholds chosen on the dev
half, figures on the test half. `word_comparison` runs the pre-registered comparison at this level,
with the sequence level's resampler (`stats.resample`).
"""

from __future__ import annotations

import numpy as np

from .. import metrics as core
from .. import spans as S
from ..estimators import by_role
from .samples import TaskSamples
from .stats import resample

#: The word-level figures the reports show (of `spans.SPAN_METRICS`).
WORD_COLUMNS = ("bad_auroc", "bad_ap", "mcc", "f1_mult", "span_f1")


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


# -- the pre-registered word-level comparison (`compare --split both`) --------------------------------
#: The rivals of the head at word level (the token estimators that need no head), the roles
#: compared with the best of them on dev, and the one tested metric (threshold-free).
WORD_RIVALS = (*by_role("rival"), "entropy")
WORD_ROLES = {
    "head": "sigmoid",
    "ceiling": "ceiling",
    "hybrid": "hybrid",
    # the authors' newer estimators, where computed
    "weighted_boostedprob": "weighted_boostedprob",
    "combined": "combined",
}
WORD_TESTED = "bad_auroc"


def _bad_auroc(records: list[dict]) -> float:
    scores = np.concatenate([r["scores"] for r in records])
    bad = np.concatenate([r["bad"] for r in records])
    return float(core.auroc(-scores, bad))


def _output_units(ts: TaskSamples, indices: list[int]) -> list[list[np.ndarray]]:
    """The resampling units of the outputs at `indices`, as one stratum for `stats.resample`: a
    sentence and its altered copy (the same `pair`) together, any other output alone."""
    units: dict = {}
    for i in indices:
        units.setdefault(ts.docs[i].get("pair", i), []).append(i)
    return [[np.array(u) for u in units.values()]]


def word_comparison(
    per_task: list[TaskSamples], iters: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Per task that labels error spans: the rival token estimator with the best dev BAD ROC-AUC;
    on the test half, every token estimator's BAD ROC-AUC, BAD AP, MCC and F1-MULT (thresholds
    from dev); and for the head, the ceiling and the hybrid, the paired bootstrap difference in BAD
    ROC-AUC from the rival (outputs resampled, a sentence and its altered copy together), each
    role a family Holm-corrected over the tasks. Tasks without token scores are left out."""
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
        strata = [_output_units(ts, test)]
        rng = np.random.default_rng(seed)
        draws = [resample(strata, rng)[0] for _ in range(iters)]
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
