"""Reading lm-eval outputs back: per-sample confidences, rejection curves, estimator tables."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .. import metrics as core


def pairs_from_samples(samples) -> dict[str, tuple[list[float], list[float]]]:
    """`{estimator: (confidences, qualities)}` from lm-eval sample records (a list of dicts, or
    the path of a `samples_*.jsonl` file). The pairs are those `process_results` returned."""
    if isinstance(samples, (str, Path)):
        samples = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for s in samples:
        value = s.get("prr")  # every confidence task logs its (confidence, quality) pair under prr
        if value is None:
            continue
        c, q = out[s["filter"]]
        c.append(float(value[0]))
        q.append(float(value[1]))
    return dict(out)


def curves_from_samples(samples, points: int = 101) -> dict[str, dict]:
    """Rejection curve (mean quality kept per rejection rate; oracle and random beside it) of each
    estimator in the samples."""
    return {
        name: core.rejection_curve(c, q, points=points)
        for name, (c, q) in pairs_from_samples(samples).items()
    }
