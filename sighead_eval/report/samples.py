"""Reading lm-eval outputs back: per-sample confidences and qualities (`task_samples`, the
protocol's `TaskSamples`), rejection curves.

Every confidence task logs, per sample and per estimator (lm-eval's filter), the pair
`(confidence, quality)` that `process_results` returned, under each metric's name; `prr` is
present for binary and graded tasks alike, so that is where the pairs are read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import metrics as core
from ..protocol.samples import TaskSamples
from ..protocol.samples import subset as subset  # importable here as before


def _load(samples) -> list[dict]:
    if isinstance(samples, (str, Path)):
        return [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    return list(samples)


def judged(sample: dict) -> dict:
    """The filtered output of a sample (`{response, confidence, ...}`): in memory, read back from
    our JSON (a dict) or from lm-eval's samples log (a JSON string)."""
    out = sample["filtered_resps"][0]
    return dict(out) if isinstance(out, dict) else json.loads(str(out))


def pairs_from_samples(samples) -> dict[str, tuple[list[float], list[float]]]:
    """`{estimator: (confidences, qualities)}` from lm-eval sample records (a list of dicts, or
    the path of a `samples_*.jsonl` file), in document order."""
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for s in sorted(_load(samples), key=lambda s: s["doc_id"]):
        value = s.get("prr")
        if value is None:
            continue
        c, q = out[s["filter"]]
        c.append(float(value[0]))
        q.append(float(value[1]))
    return dict(out)


def curves_from_samples(samples, points: int = 101) -> dict[str, dict]:
    """Rejection curve (mean quality kept per rejection rate; oracle and random beside it) of each
    estimator in the samples. A curve needs two outputs: with fewer (`--limit 1`) there are none,
    with a warning."""
    import warnings

    pairs = pairs_from_samples(samples)
    if any(len(c) < 2 for c, _ in pairs.values()):
        warnings.warn(
            "no rejection curves: a curve needs at least 2 outputs, and these samples have fewer",
            UserWarning,
            stacklevel=2,
        )
    return {name: core.rejection_curve(c, q, points=points) for name, (c, q) in pairs.items() if len(c) >= 2}


def task_samples(task: str, samples) -> TaskSamples:
    """Aligns the per-filter sample records of one task into a `TaskSamples`."""
    records = sorted(_load(samples), key=lambda s: s["doc_id"])
    by_filter: dict[str, list[dict]] = defaultdict(list)
    for s in records:
        by_filter[s["filter"]].append(s)
    if not by_filter:
        raise ValueError(f"{task}: no samples to report; run lm-eval with log_samples")
    first = next(iter(by_filter.values()))
    docs = [s["doc"] for s in first]
    confidence, quality = {}, None
    for name, rows in by_filter.items():
        if [s["doc_id"] for s in rows] != [s["doc_id"] for s in first]:
            raise ValueError(
                f"{task}: estimator {name} has samples for other documents than {next(iter(by_filter))}"
            )
        if rows[0].get("prr") is None:
            continue  # an estimator that was not computed (no Sigmoid Head)
        confidence[name] = np.array([float(s["prr"][0]) for s in rows])
        quality = np.array([float(s["prr"][1]) for s in rows])
    if quality is None:
        raise ValueError(f"{task}: the samples hold no confidences; were they made by the `sighead` model?")
    tokens_rows = by_filter.get("sigmoid_mean") or first
    outputs = [judged(s) for s in tokens_rows]
    return TaskSamples(
        task=task,
        docs=docs,
        quality=quality,
        confidence=confidence,
        responses=[o["response"] for o in outputs],
        tokens=[o.get("tokens", {}) for o in outputs],
    )
