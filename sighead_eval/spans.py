"""Error spans and word-level quality estimation: which tokens of an output are wrong.

Gold labels come as character spans of the output (`[start, end)`, end exclusive): the ESA and
MQM annotations of translation benchmarks, the swapped fact of a wiki task. A token is BAD when
any character it covers is inside a span (the WMT convention, and the authors' code). Scores are
confidences (higher = more confident); a token is predicted BAD when its score is below a
threshold chosen on the dev half and applied to the test half.

- `char_spans(pieces, text)`: each token's characters in the output, from the token texts alone
  (a character split over byte-level tokens goes to every piece of it).
- `span_scores`: character-level precision, recall and F1 of the predicted spans, pooled over the
  outputs (WMT24 ESA's error-span F1, as the authors compute it).
- `word_qe_scores`: F1 of the BAD class, of the OK class, their product (F1-MULT) and the
  Matthews correlation, pooled over tokens (the WMT word-level QE metrics).
- `tune_threshold`: the threshold that maximises a metric on dev, over the authors' grid (20
  evenly spaced values from the lowest to the highest score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .estimators import TOKEN_ESTIMATORS

REPLACEMENT = "\ufffd"
THRESHOLDS = 20  # the authors' grid: np.linspace(min, max, 20)


def char_spans(pieces: Sequence[str], text: str) -> list[tuple[int, int]]:
    """`[start, end)` of each token in `text`, aligning the token texts (`decode([t])` each) left to
    right. Whitespace before a piece goes to that piece (a SentencePiece token decoded alone leaves
    its space out); a run of pieces that decode to replacement characters (one character split over
    bytes) shares the characters up to where the next piece matches; a piece found nowhere (one the
    tokenizer normalised) gets an empty span and the alignment goes on."""
    spans: list[tuple[int, int]] = []
    pos, i, n = 0, 0, len(pieces)
    while i < n:
        if REPLACEMENT in pieces[i]:
            j = i
            while j < n and REPLACEMENT in pieces[j]:
                j += 1
            end = len(text) if j == n else _locate(text, pieces[j], pos)[0]
            end = end if end > pos else min(len(text), pos + 1)
            spans.extend([(pos, end)] * (j - i))
            pos, i = end, j
            continue
        start, end = _locate(text, pieces[i], pos)
        spans.append((pos if text[pos:start].isspace() else start, end))
        pos, i = end, i + 1
    return spans


def _locate(text: str, piece: str, pos: int) -> tuple[int, int]:
    """`[start, end)` of `piece` at or after `pos`: exactly there, else its text without surrounding
    whitespace further on; `(pos, pos)` when it is not found."""
    if piece and text.startswith(piece, pos):
        return pos, pos + len(piece)
    core = piece.strip()
    at = text.find(core, pos) if core else -1
    return (at, at + len(core)) if at >= 0 else (pos, pos)


def char_labels(annotations: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """(length,) 1 inside any `[start, end)` span (an omission, start < 0, has no characters)."""
    labels = np.zeros(length, dtype=np.int8)
    for start, end in annotations:
        if start is None or start < 0:
            continue
        labels[max(0, int(start)) : min(length, int(end))] = 1
    return labels


def token_labels(spans: Sequence[tuple[int, int]], chars: np.ndarray) -> np.ndarray:
    """(T,) 1 for a BAD token: one that covers a BAD character."""
    return np.array([int(chars[a:b].any()) for a, b in spans], dtype=np.int8)


def predicted_chars(scores, spans, threshold: float, length: int) -> np.ndarray:
    """(length,) 1 where a token with a score below `threshold` covers the character."""
    out = np.zeros(length, dtype=np.int8)
    for s, (a, b) in zip(scores, spans):
        if s < threshold:
            out[a:b] = 1
    return out


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def span_scores(predicted: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> dict[str, float]:
    """Character-level precision, recall and F1 of BAD, pooled over outputs."""
    tp = fp = fn = 0
    for p, g in zip(predicted, gold):
        m = min(len(p), len(g))
        p, g = np.asarray(p[:m], bool), np.asarray(g[:m], bool)
        tp += int((p & g).sum())
        fp += int((p & ~g).sum())
        fn += int((~p & g).sum())
    precision, recall, f1 = _prf(tp, fp, fn)
    return {"precision": precision, "recall": recall, "f1": f1}


def word_qe_scores(predicted_bad, gold_bad) -> dict[str, float]:
    """F1-BAD, F1-OK, F1-MULT (their product) and MCC of token (or word) labels, 1 = BAD."""
    p, g = np.asarray(predicted_bad, bool), np.asarray(gold_bad, bool)
    tp, fp = int((p & g).sum()), int((p & ~g).sum())
    fn, tn = int((~p & g).sum()), int((~p & ~g).sum())
    f1_bad = _prf(tp, fp, fn)[2]
    f1_ok = _prf(tn, fn, fp)[2]
    denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {"f1_bad": f1_bad, "f1_ok": f1_ok, "f1_mult": f1_bad * f1_ok, "mcc": float(mcc)}


def threshold_grid(scores) -> np.ndarray:
    values = np.asarray([s for s in scores if np.isfinite(s)], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no finite token score to choose a threshold from")
    return np.linspace(values.min(), values.max(), THRESHOLDS)


def tune_threshold(scores, objective: Callable[[float], float]) -> float:
    """The grid value (`threshold_grid(scores)`) with the highest `objective`; the first on ties."""
    grid = threshold_grid(scores)
    values = [objective(t) for t in grid]
    return float(grid[int(np.argmax(values))])


# -- per-output records and the dev-tuned metrics over them ------------------------------------------
#: Per-token confidences a span task compares: the token estimators, and the entropy (negated).
SPAN_ESTIMATORS = (*TOKEN_ESTIMATORS, "entropy")


def token_confidences(tokens: dict, estimator: str) -> list[float] | None:
    """One output's per-token confidences under `estimator` from its logged token scores (higher =
    more confident: the entropy negated); None where the estimator was not computed."""
    values = tokens.get(estimator)
    if values is None or estimator != "entropy":
        return values
    return [-v for v in values]


#: Character-level span metrics (threshold by span F1 on dev); the WMT word-level QE metrics on
#: tokens (threshold by MCC on dev) and the threshold-free ROC-AUC and AP of finding BAD tokens;
#: the same on words (`word_*`: a word is BAD when any of its tokens is, and scores the product of
#: its tokens' probabilities, or the sum of their negated entropies).
SPAN_METRICS = (
    "span_f1", "span_precision", "span_recall", "f1_bad", "f1_ok", "f1_mult", "mcc", "bad_auroc", "bad_ap",
    "word_f1_bad", "word_f1_ok", "word_f1_mult", "word_mcc", "word_bad_auroc", "word_bad_ap",
)  # fmt: skip


def span_record(response: str, pieces, scores, split: str, annotations, estimator: str = "") -> dict:
    """One output's tokens for the span metrics: its token confidences and character spans, which
    tokens and words are BAD under the gold `annotations` (`[start, end)` characters; an omission
    has start < 0), and its half (`dev` or `test`). JSON-safe (lm-eval logs it per sample)."""
    from .scoring import word_spans

    spans = char_spans(pieces, response)
    gold = char_labels(annotations, len(response))
    scores = [float(s) for s in scores]
    bad = token_labels(spans, gold).tolist()
    words = word_spans(pieces)
    combine = np.sum if estimator == "entropy" else np.prod
    return {
        "split": split,
        "scores": scores,
        "spans": [list(s) for s in spans],
        "bad": bad,
        "gold": [[int(a), int(b)] for a, b in annotations if a is not None and a >= 0],
        "n_chars": len(response),
        "word_scores": [float(combine(scores[a:b])) for a, b in words],
        "word_bad": [int(any(bad[a:b])) for a, b in words],
    }


def _halves(items) -> tuple[list[dict], list[dict]]:
    import warnings

    items = list(items)
    dev = [i for i in items if i["split"] == "dev"]
    test = [i for i in items if i["split"] != "dev"]
    if not dev or not test:
        warnings.warn(
            f"{len(dev)} dev and {len(test)} test samples: the threshold is chosen on the same samples it "
            "is scored on (optimistic); run more samples for a dev half",
            stacklevel=4,
        )
        return items, items
    return dev, test


def _chars(items, threshold):
    predicted = [predicted_chars(i["scores"], i["spans"], threshold, i["n_chars"]) for i in items]
    return predicted, [char_labels(i["gold"], i["n_chars"]) for i in items]


def _pooled(items, level: str):
    scores, bad = ("scores", "bad") if level == "token" else ("word_scores", "word_bad")
    values = np.asarray([s for i in items for s in i[scores]], dtype=np.float64)
    return values, np.asarray([b for i in items for b in i[bad]])


def span_metric(name: str, items) -> float:
    """Metric `name` (`SPAN_METRICS`) over `span_record`s: its threshold chosen on the dev half's
    records, its value on the test half's (both halves' records given together)."""
    import math
    import warnings

    from . import metrics as core

    if name not in SPAN_METRICS:
        raise ValueError(f"unknown span metric {name!r}; known: {', '.join(SPAN_METRICS)}")
    dev, test = _halves(items)
    level, key = ("word", name[5:]) if name.startswith("word_") else ("token", name)
    if key.startswith("span_"):
        pooled = [s for i in dev for s in i["scores"]]
        if not pooled:
            return math.nan
        threshold = tune_threshold(pooled, lambda t: span_scores(*_chars(dev, t))["f1"])
        return span_scores(*_chars(test, threshold))[key[5:]]
    if key.startswith("bad_"):
        scores, bad = _pooled(test, level)
        try:
            fn = core.auroc if key == "bad_auroc" else core.ap
            return float(fn(-scores, bad))
        except ValueError as err:  # every token OK (or BAD) in a small run
            warnings.warn(
                f"{name} is undefined on these {bad.size} {level}s ({err}); reported as NaN", stacklevel=3
            )
            return math.nan
    scores, bad = _pooled(dev, level)
    if scores.size == 0:
        return math.nan
    threshold = tune_threshold(scores, lambda t: word_qe_scores(scores < t, bad)["mcc"])
    test_scores, test_bad = _pooled(test, level)
    return word_qe_scores(test_scores < threshold, test_bad)[key]


def token_quality_metrics(confidences, references, threshold: float | None = None) -> dict[str, float]:
    """Word-level QE of per-token confidences against per-token quality (1 = OK, 0 = BAD), one list
    per output, pooled over outputs: ROC-AUC and AP of finding OK tokens, AP of finding BAD ones
    (by low confidence), and F1-BAD, F1-OK, F1-MULT and MCC at `threshold` (a token is BAD below
    it). Without a threshold, the grid value with the best MCC on these tokens is used and
    returned, which is optimistic: choose it on dev, pass it for test."""
    from . import metrics as core

    if len(confidences) != len(references):
        raise ValueError(f"{len(confidences)} outputs' confidences but {len(references)} outputs' references")
    for i, (c, r) in enumerate(zip(confidences, references)):
        if len(c) != len(r):
            raise ValueError(f"output {i}: {len(c)} token confidences but {len(r)} token references")
    conf = np.asarray([x for c in confidences for x in c], dtype=np.float64)
    ok = np.asarray([x for r in references for x in r], dtype=np.float64)
    if conf.size == 0:
        raise ValueError("no token to score: every output is empty")
    if not np.isin(ok, (0.0, 1.0)).all():
        raise ValueError("token references should be 1 (OK) or 0 (BAD)")
    bad = ok == 0
    chosen = threshold is None
    if chosen:
        threshold = tune_threshold(conf, lambda t: word_qe_scores(conf < t, bad)["mcc"])
    out = {
        "auroc": float(core.auroc(conf, ok)),
        "ap": float(core.ap(conf, ok)),
        "bad_ap": float(core.ap(-conf, bad.astype(float))),
        **word_qe_scores(conf < threshold, bad),
        "threshold": float(threshold),
    }
    out["threshold_tuned_on_these_tokens"] = float(chosen)
    return out
