"""Reports from lm-eval runs: per-sample data, the estimator table, plots, the token page, the
word-level panels, and compare's Markdown with the README's generated blocks (`comparison`)."""

from .samples import TaskSamples, curves_from_samples, pairs_from_samples, task_samples
from .table import estimator_table, table_csv, table_markdown

__all__ = [
    "TaskSamples",
    "curves_from_samples",
    "estimator_table",
    "pairs_from_samples",
    "table_csv",
    "table_markdown",
    "task_samples",
]
