"""The vocabulary every face shares: estimator, aggregation and metric names, one list each.

A *token estimator* gives each scored token a probability-like score. Each is one entry of
`REGISTRY` (`TokenEstimator`): its name, whether it needs the head, its role in the comparisons,
and its function over a chunk of scored rows. Every face (the scoring engine, lm-eval's filters
and task templates, the evaluate modules, LM-Polygraph, abstention, plots and reports) derives
its list from there; docs/extending.md says how to add one, from this package or from another
through the `sighead_eval.estimators` entry point group.

- `sigmoid`: the Sigmoid Head, `sigmoid(h_t . W_sig[y])`;
- `softmax`: the LM's own probability `p(y)`;
- `boostedprob`: the dominant-set mass if `y` is dominant, else `p(y)` (BoostedProb);
- `ceiling`: what a perfectly converged Sigmoid Head of the paper's recipe would score, from the
  model's own distribution (docs/method.md derives it): 1 if `y` is dominant, else `p / (p + expected
  negative draws of y)`. Beside a trained head it tells how much of its score is the mechanism
  and how much is learning; it is not a rival of the head.
- `hybrid`: the head's score times the ceiling's, a lever beyond the paper. Inside the dominant set
  the ceiling is 1, so it is the trained head, which keeps the within-set information the
  converged mechanism throws away; outside, the mechanism's converged judgement discounts the
  head's score. Computed only where a head is.
- `weighted_boostedprob`: the authors' later BoostedProb (`boostedprob`'s
  `weighted_sum_dominant_mass`): the dominant mass times `p(y) ** 0.01` if `y` is dominant, else
  `p(y)`; it keeps the order inside the dominant set.
- `combined`: the authors' "combined" score: the head's scores over the vocabulary, adjusted so that
  their order follows the softmax's (`rank_preserving_adjust`), at `y`:
  `min(A_y, (1 - 1e-3) * min{A_j : p_j > p_y})`, A the head's score. Opt-in: it needs the head's
  scores of every token the softmax ranks above `y` (docs/extending.md states its cost).

Each has a *role* in the comparisons: `head` (the Sigmoid Head), `rival` (the baselines the
pre-registered comparison chooses among), `reference` (the ceiling), `lever` (the hybrid) or
`extra` (reported beside the others, outside the pre-registered pool: the authors' newer scores).

A *sequence aggregation* turns a response's token scores into one number (`SEQUENCE_AGGREGATIONS`,
all computed by the scoring engine). A *confidence* is what the reports rank outputs by, named
`{estimator}_{aggregation}` (`CONFIDENCES`): the token estimators under the aggregations the
reports use (`REPORTED_AGGREGATIONS`), the entropy's mean and maximum, and the response length.
Confidences follow one convention: higher = more confident, so entropies and lengths are negated.

A *metric* says how well a confidence predicts quality. The same names run through the metric
core (`sighead_eval.metrics`), the lm-eval results (`auroc,sigmoid_mean`) and the evaluate module's
outputs:

| name | what | quality |
|---|---|---|
| `pearson`, `spearman`, `kendall` | correlation with the human score | graded |
| `auroc` | ROC-AUC of telling good outputs from bad | binary |
| `ap` | average precision of finding the good outputs | binary |
| `prr`, `prr_50` | prediction-rejection ratio (all / up to 50 % rejected) | both |
| `aurc` | area under the risk-coverage curve (lower is better) | binary |
| `brier`, `ece`, `bce` | calibration, for confidences that are probabilities | binary |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TokenEstimator:
    """One token estimator: everything a face needs to know about it.

    `compute(chunk)` returns the (n,) natural-log scores of a chunk's n scored tokens, from the
    statistics the chunk shares between estimators (`sighead_eval.scoring.tokens.Chunk`: `logp`,
    `own`, `sets`, `inside`, `head_logit`, `log_score(name)` for another estimator's scores...).
    """

    name: str
    compute: Callable[[Any], Any]
    needs_head: bool = False
    role: str = "extra"
    default: bool = True  # False: computed only when asked for (`ScoringOptions.estimators`)
    summary: str = ""
    colour: str | None = None  # in the plots; None: one of `PALETTE` not taken
    #: True where its work stays within the row statistics a chunk shares (no vocabulary-sized
    #: intermediate of its own): a compiled accelerator path may then score a whole batch as one
    #: chunk. False (a plug-in's default) keeps the chunks that bound its memory.
    light: bool = False

    def __post_init__(self):
        if not self.name.isidentifier():  # joined to an aggregation with '_', split at the last one
            raise ValueError(f"estimator name {self.name!r} should be letters, digits and '_'")
        if self.role not in ROLES:
            raise ValueError(f"estimator {self.name!r}: role should be one of {ROLES}, got {self.role!r}")


ROLES = ("head", "rival", "reference", "lever", "extra")

#: The paper's recipe, which the ceiling assumes: K negatives, the unigram's share of them, and the
#: temperature of the softmax proposal.
CEILING_NEGATIVES, CEILING_UNIGRAM_SHARE, CEILING_TEMPERATURE = 10, 0.5, 2.0
#: `weighted_boostedprob`'s power of the token's own probability (boostedprob's `gamma`).
WEIGHTED_BOOST_GAMMA = 0.01
#: `combined`'s relative gap between consecutive ranks (the authors' `eps`).
COMBINED_EPS = 1e-3


def _sigmoid(c):
    import torch.nn.functional as F

    return F.logsigmoid(c.head_logit)


def _softmax(c):
    return c.own


def _boostedprob(c):
    from .dominant import boosted_log_prob

    return boosted_log_prob(c.own, c.targets, c.sets)


def _ceiling(c):
    """log of the converged head's score under the paper's recipe: a dominant token is never a
    negative and goes to 1; another settles at p / (p + its expected negative draws per
    position), k_s p^(1/T) / S from the softmax proposal (S summed over the non-dominant tokens)
    plus k_u / V from the unigram (taken as uniform)."""
    import torch

    own, sets = c.own, c.sets
    k_u = CEILING_NEGATIVES * CEILING_UNIGRAM_SHARE
    k_s = CEILING_NEGATIVES - k_u
    dominant_tempered = ((c.top_logp / CEILING_TEMPERATURE).exp() * sets.mask).sum(-1)  # (n,)
    rest = (c.tempered_mass - dominant_tempered).clamp_min(1e-30)  # S
    p = own.exp()
    draws = k_s * (own / CEILING_TEMPERATURE).exp() / rest + k_u / c.vocab
    score = torch.log(p / (p + draws)).clamp_min(own - 100.0)  # finite where p underflows
    return torch.where(c.inside, torch.zeros_like(own), score)


def _hybrid(c):
    return c.log_score("sigmoid") + c.log_score("ceiling")  # the head times its ceiling


def _weighted_boostedprob(c):
    import torch

    boosted = c.sets.mass.clamp_min(1e-45).log() + WEIGHTED_BOOST_GAMMA * c.own
    return torch.where(c.inside, boosted, c.own)


def _combined(c):
    """min(A_y, (1 - eps) min{A_j : p_j > p_y}) in logs, A = sigmoid(head logit): the head's
    logits of the sorted top tokens ranked above y, and, for the rows where y ranks below the
    sorted top, of the whole vocabulary (`Chunk.min_head_logit_above`). "Above" is strictly
    more probable: a token tied with y is not above it, where the authors' unstable sort puts
    tied tokens in either order."""
    import math

    import torch
    import torch.nn.functional as F

    least = c.min_head_logit_above()  # +inf where no token ranks above y (y is the argmax)
    own = c.log_score("sigmoid")
    above = F.logsigmoid(least) + math.log1p(-COMBINED_EPS)
    return torch.where(torch.isinf(least), own, torch.minimum(own, above))


#: Every token estimator, in the order the reports list them.
BUILTIN = (
    TokenEstimator(
        "sigmoid", _sigmoid, True, "head", summary="the Sigmoid Head", colour="#d62728", light=True
    ),
    TokenEstimator(
        "softmax", _softmax, role="rival", summary="the LM's own probability", colour="#1f77b4", light=True
    ),
    TokenEstimator(
        "boostedprob",
        _boostedprob,
        role="rival",
        summary="BoostedProb (dominant mass)",
        colour="#2ca02c",
        light=True,
    ),  # fmt: skip
    TokenEstimator(
        "ceiling",
        _ceiling,
        role="reference",
        summary="the converged head's closed form",
        colour="#ff7f0e",
        light=True,
    ),  # fmt: skip
    TokenEstimator(
        "hybrid", _hybrid, True, "lever", summary="the head times the ceiling", colour="#8c564b", light=True
    ),
    TokenEstimator(
        "weighted_boostedprob",
        _weighted_boostedprob,
        summary="the authors' weighted BoostedProb",
        colour="#17becf",
        light=True,
    ),
    TokenEstimator(
        "combined",
        _combined,
        needs_head=True,
        default=False,
        summary="the authors' head scores ordered as the softmax's",
        colour="#e377c2",
    ),
)
#: Plot colours of the estimators that name none.
PALETTE = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


def _plugins() -> tuple[TokenEstimator, ...]:
    """Token estimators other packages declare under the `sighead_eval.estimators` entry point group,
    each a `TokenEstimator`."""
    import warnings
    from importlib.metadata import entry_points

    taken = {e.name for e in BUILTIN} | set(RESERVED)
    found = []
    for point in entry_points(group="sighead_eval.estimators"):
        try:
            entry = point.load()
        except Exception as err:  # a broken plug-in must not break the package
            warnings.warn(
                f"estimator plug-in {point.name!r} ({point.value}) failed to load: {err}", stacklevel=2
            )
            continue
        if not isinstance(entry, TokenEstimator):
            raise TypeError(
                f"entry point {point.name!r} ({point.value}) of group 'sighead_eval.estimators' should be "
                f"a sighead_eval.estimators.TokenEstimator, got {type(entry).__name__}"
            )
        if entry.name in taken:
            raise ValueError(
                f"estimator plug-in {point.value} is named {entry.name!r}, which is taken; reserved and "
                f"built-in names: {', '.join(sorted(taken))}"
            )
        taken.add(entry.name)
        found.append(entry)
    return tuple(found)


#: Names a plug-in estimator cannot take: what a scoring run records beside the estimators.
RESERVED = ("entropy", "dominant_size", "dominant_mass", "greedy", "length")


#: The one list of token estimators: the built-in ones, then those of installed plug-ins.
REGISTRY: dict[str, TokenEstimator] = {e.name: e for e in (*BUILTIN, *_plugins())}
#: Token-level estimators whose scores are probabilities (kept as natural logs while scoring).
TOKEN_ESTIMATORS = tuple(REGISTRY)
#: The estimators computed unless asked otherwise, and those that need a Sigmoid Head.
DEFAULT_ESTIMATORS = tuple(e.name for e in REGISTRY.values() if e.default)
HEAD_ESTIMATORS = tuple(e.name for e in REGISTRY.values() if e.needs_head)


def colours() -> dict[str, str]:
    """Every token estimator's plot colour, then the entropy's and the length's."""
    free = iter(c for c in PALETTE if c not in {e.colour for e in REGISTRY.values()})
    out = {e.name: e.colour or next(free, "#000000") for e in REGISTRY.values()}
    return {**out, "entropy": "#9467bd", "length": "#7f7f7f"}


def split_confidence(name: str) -> tuple[str, str]:
    """`sigmoid_mean` -> (`sigmoid`, `mean`), `weighted_boostedprob_min` -> (`weighted_boostedprob`,
    `min`); `length` -> (`length`, ``)."""
    estimator, _, aggregation = name.rpartition("_")
    return (estimator, aggregation) if estimator else (name, "")


def by_role(*roles: str) -> tuple[str, ...]:
    """The token estimators of the given roles, in registry order."""
    return tuple(e.name for e in REGISTRY.values() if e.role in roles)


def check_estimators(names) -> tuple[str, ...]:
    """`names` (an iterable, or a '|'- or ','-separated string) checked against the registry."""
    if isinstance(names, str):
        names = names.replace(",", "|").split("|")
    names = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown token estimator(s) {unknown}; known: {', '.join(TOKEN_ESTIMATORS)} (separate several "
            "with '|', e.g. sigmoid|softmax)"
        )
    return names


#: Every aggregation the scoring engine computes per sequence (`ScoredText.sequence_scores`).
SEQUENCE_AGGREGATIONS = ("mean", "prod", "sumlog", "meanlog", "min")
#: The aggregations the reports (lm-eval tasks, demo, compare) rank outputs by.
REPORTED_AGGREGATIONS = ("mean", "prod", "min")
#: Confidences that are probabilities, so calibration metrics apply.
PROBABILITIES = tuple(f"{e}_{a}" for e in TOKEN_ESTIMATORS for a in REPORTED_AGGREGATIONS)
#: Every confidence a report ranks outputs by (higher = more confident).
CONFIDENCES = (*PROBABILITIES, "entropy_mean", "entropy_max", "length")
#: The log-space aggregations a graded task reports beside the others (the authors' sentence
#: scores: the sum and the mean of log scores). Pearson differs between the sum of logs and the
#: product; the rank correlations do not.
LOG_AGGREGATIONS = ("sumlog", "meanlog")
GRADED_CONFIDENCES = (*CONFIDENCES, *(f"{e}_{a}" for e in TOKEN_ESTIMATORS for a in LOG_AGGREGATIONS))


def _confidences(*roles: str) -> tuple[str, ...]:
    return tuple(f"{e}_{a}" for e in by_role(*roles) for a in REPORTED_AGGREGATIONS)


#: The Sigmoid Head's confidences, its ceiling's, the hybrid's.
HEAD_CONFIDENCES = _confidences("head")
CEILING_CONFIDENCES = _confidences("reference")
HYBRID_CONFIDENCES = _confidences("lever")
#: The baselines a head is compared with (the pre-registered pool): the rivals' confidences and the
#: entropy's. The `extra` estimators are reported beside them, outside the pool.
RIVAL_CONFIDENCES = (*_confidences("rival"), "entropy_mean", "entropy_max")

GRADED_METRICS = ("pearson", "spearman", "kendall", "prr", "prr_50")
BINARY_METRICS = ("auroc", "ap", "prr", "prr_50", "aurc")
CALIBRATION_METRICS = ("brier", "ece", "bce")
#: Selective generation: the test half's coverage at the threshold chosen on the dev half with a
#: guaranteed selective risk of at most 5 / 10 / 20 % (probability 0.9; `sighead_eval.selective`).
COVERAGE_METRICS = ("coverage_at_risk_05", "coverage_at_risk_10", "coverage_at_risk_20")
METRICS = tuple(dict.fromkeys(GRADED_METRICS + BINARY_METRICS + CALIBRATION_METRICS))
LOWER_IS_BETTER = frozenset({"aurc", "brier", "ece", "bce"})


def aggregate(log_scores) -> dict[str, float]:
    """Every `SEQUENCE_AGGREGATIONS` of one response's per-token log probabilities: mean
    probability, product, sum and mean of logs, minimum."""
    return {agg: values[0] for agg, values in aggregate_rows(np.asarray(log_scores)[None]).items()}


def aggregate_rows(log_scores: np.ndarray) -> dict[str, list[float]]:
    """`aggregate` of each row of `log_scores` (E, R) at once: a handful of numpy calls for every
    estimator of a response together, not a handful per estimator."""
    logs = np.asarray(log_scores, dtype=np.float64)  # (E, R)
    sums = logs.sum(-1)
    return {
        "mean": np.exp(logs).mean(-1).tolist(),
        "prod": np.exp(sums).tolist(),
        "sumlog": sums.tolist(),
        "meanlog": logs.mean(-1).tolist(),
        "min": np.exp(logs.min(-1)).tolist(),
    }


#: Running aggregations over the tokens generated so far, for decode-time rules (`AbstainBelow`).
RUNNING_AGGREGATIONS = ("min", "mean", "prod")


def check_running_confidence(name: str) -> tuple[str, str]:
    """`(token estimator, running aggregation)` of a decode-time confidence such as `sigmoid_min`."""
    estimator, _, running = str(name).rpartition("_")
    if estimator not in TOKEN_ESTIMATORS or running not in RUNNING_AGGREGATIONS:
        raise ValueError(
            f"unknown decode-time confidence {name!r}; give {{{','.join(TOKEN_ESTIMATORS)}}}_"
            f"{{{','.join(RUNNING_AGGREGATIONS)}}}, e.g. sigmoid_min"
        )
    return estimator, running


def check_confidence(name: str) -> str:
    if name not in GRADED_CONFIDENCES:
        raise ValueError(f"unknown confidence estimator {name!r}; known: {', '.join(GRADED_CONFIDENCES)}")
    return name


def confidence(sequence: Mapping[str, float], n_tokens: int, name: str) -> float | None:
    """The confidence `name` of one output from its sequence scores and token count (higher = more
    confident: entropies and the length are negated); None when the estimator was not computed
    (the Sigmoid Head without an adapter)."""
    if name == "length":
        return -float(n_tokens)
    if name.startswith("entropy_"):
        return -float(sequence[name])
    value = sequence.get(name)
    return None if value is None else float(value)
