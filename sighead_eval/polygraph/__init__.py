"""The LM-Polygraph face: the Sigmoid Head's token scores from LM-Polygraph's own generation pass,
and estimators that rank its outputs by them.

LM-Polygraph (IINemo/lm-polygraph) builds stat calculators and estimators from any module named in
its configuration: `builder: sighead_eval.polygraph` calls `load_stat_calculator(cfg, env)`, and an
estimator named `sighead_eval.polygraph` calls `load_estimator(cfg)`. Nothing upstream changes.

- `SigmoidHeadGreedyProbsCalculator` is LM-Polygraph's `GreedyProbsCalculator`, unchanged, run
  under this package's `StepScores`: while LM-Polygraph's one `generate` call runs, every step's
  logits and head input are scored as they come out. It adds the `sighead_{estimator}_log_likelihoods`
  statistics (one array of natural-log token scores per output, for `sigmoid`, `softmax`,
  `boostedprob`, `ceiling` and `hybrid`), so no second model call is made. Registered after
  LM-Polygraph's defaults, it also provides their greedy statistics, so it replaces the default
  calculator rather than running beside it.
- `SigmoidHeadSequence` ranks outputs by an aggregation of those scores; `SigmoidHeadToken` gives
  LM-Polygraph's token-level uncertainties. Both follow LM-Polygraph's convention: higher means
  less confident (the negated confidence).

Like LM-Polygraph's own estimators, they score every generated token, the end token included.
Install with `pip install "sighead-eval[polygraph]"`.

The face's files: `calculator` (the statistics, LM-Polygraph's builder hook), `uncertainty` (the
estimators, its estimator hook), `geo_qa` (LM-Polygraph's evaluation loop on the offline geography
questions: `python -m sighead_eval.polygraph`).
"""

try:  # what the calculator and the estimators build on
    import lm_polygraph.estimators.estimator  # noqa: F401
    import lm_polygraph.stat_calculators.greedy_probs  # noqa: F401
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "sighead_eval.polygraph needs LM-Polygraph: pip install 'sighead-eval[polygraph]'"
    ) from err

from .calculator import (
    SIGHEAD_STATS,
    SigmoidHeadGreedyProbsCalculator,
    attach,
    load_stat_calculator,
    register,
    stat_name,
)
from .geo_qa import BASELINES, HEAD_ESTIMATORS, geo_qa_manager, main, paired_prr_difference, prr_table
from .uncertainty import SigmoidHeadSequence, SigmoidHeadToken, load_estimator

__all__ = [
    "BASELINES",
    "HEAD_ESTIMATORS",
    "SIGHEAD_STATS",
    "SigmoidHeadGreedyProbsCalculator",
    "SigmoidHeadSequence",
    "SigmoidHeadToken",
    "attach",
    "geo_qa_manager",
    "load_estimator",
    "load_stat_calculator",
    "main",
    "paired_prr_difference",
    "prr_table",
    "register",
    "stat_name",
]
