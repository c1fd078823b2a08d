"""lm-evaluation-harness integration.

Importing this package registers the `sighead` model with lm-eval. The tasks live in `tasks/`
(`tasks_dir()`); `sighead-eval lm-eval ...` finds them by itself.
"""

from __future__ import annotations

from . import model  # noqa: F401  (registers the `sighead` model)
from .data import task_hooks, task_names, tasks_dir

__all__ = ["task_hooks", "task_names", "tasks_dir"]
