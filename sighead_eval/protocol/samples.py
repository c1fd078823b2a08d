"""What the protocol judges: one task's outputs aligned by document (`TaskSamples`), and one half
of them (`subset`). `report.samples` reads them back from lm-eval's logs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..estimators import CONFIDENCES


@dataclass
class TaskSamples:
    """One task's outputs, aligned by document: the docs, each output's quality, each estimator's
    confidence, and the per-token scores of each output."""

    task: str
    docs: list[dict]
    quality: np.ndarray
    confidence: dict[str, np.ndarray]
    responses: list[str]
    tokens: list[dict] = field(default_factory=list)  # per doc: {text, sigmoid, softmax, ...}

    @property
    def binary(self) -> bool:
        return bool(np.isin(self.quality, (0.0, 1.0)).all())

    @property
    def estimators(self) -> list[str]:
        return [e for e in CONFIDENCES if e in self.confidence]


def subset(ts: TaskSamples, split: str) -> TaskSamples:
    """The samples of one half (`dev` or `test`; `all` keeps every sample)."""
    keep = np.array([split == "all" or d.get("split") == split for d in ts.docs], dtype=bool)
    return TaskSamples(
        ts.task,
        [d for d, k in zip(ts.docs, keep) if k],
        ts.quality[keep],
        {e: v[keep] for e, v in ts.confidence.items()},
        [r for r, k in zip(ts.responses, keep) if k] if ts.responses else [],
        [t for t, k in zip(ts.tokens, keep) if k] if ts.tokens else [],
    )
