"""The evaluation protocol: is a confidence better than its rivals, on evidence that tuning cannot
fool? Its input is one task's outputs (`TaskSamples`: each output's quality, each estimator's
confidence, the documents' type, split and pair); its output is plain figures the commands write
and `report` renders.

- `samples`: `TaskSamples` and one half of them (`subset`);
- `stats`: metrics per question type and their macro average, the one resampler, the paired
  bootstrap, the breakdown by error type (each against its true twins), calibration;
- `families`: the choice on dev, the pre-registered comparison on test and the families beside it,
  Holm-corrected each on its own, and selective generation's thresholds (dev) and coverage (test);
- `selective`: risk-controlled thresholds (Learn then Test) and one task's report of them;
- `words`: the same at word level (which tokens are wrong), with the same resampler.
"""

from .families import (
    ALPHA,
    FAMILIES,
    RIVALS,
    Family,
    choose_on_dev,
    family,
    preregistered,
    selective_section,
)
from .samples import TaskSamples, subset
from .stats import (
    BASELINES,
    HEAD_ROWS,
    METRICS,
    bootstrap_macro,
    calibration,
    compare_task,
    error_breakdown,
    macro_by_type,
    paired_bootstrap,
    per_type,
    resample,
    resampling_units,
    twins,
    type_groups,
)
from .words import WORD_RIVALS, WORD_ROLES, WORD_TESTED, error_spans, word_comparison, word_level_rows

__all__ = [
    "ALPHA",
    "BASELINES",
    "FAMILIES",
    "HEAD_ROWS",
    "METRICS",
    "RIVALS",
    "WORD_RIVALS",
    "WORD_ROLES",
    "WORD_TESTED",
    "Family",
    "TaskSamples",
    "bootstrap_macro",
    "calibration",
    "choose_on_dev",
    "compare_task",
    "error_breakdown",
    "error_spans",
    "family",
    "macro_by_type",
    "paired_bootstrap",
    "per_type",
    "preregistered",
    "resample",
    "resampling_units",
    "selective_section",
    "subset",
    "twins",
    "type_groups",
    "word_comparison",
    "word_level_rows",
]
