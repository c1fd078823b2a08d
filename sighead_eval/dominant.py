"""Dominant tokens of a softmax distribution (the BoostedProb rule, Dinh & Niehues, EMNLP 2025).

Sort the probabilities in descending order. Rank `i` is *marked* when the drop to the next rank is
large both relative to `p_i` and absolutely: `p_i - p_{i+1} > p_jump * p_i` and
`p_i - p_{i+1} > epsilon`. The dominant set is the top `1..i*`, where `i*` is the last marked rank
(mode "last", the paper's) or the first (mode "first"); it is empty when no rank is marked.

Exactness of the top-k cut: a marked rank `i` has `p_i > epsilon`, and fewer than `1 / epsilon`
tokens can have that much mass, so every marked rank is among the top `floor(1 / epsilon)`; the
rule reads `p_{i+1}` too, so the top `floor(1 / epsilon) + 1` probabilities decide it. The code
sorts one more, `floor(1 / epsilon) + 2` (202 for the default epsilon), so that floating-point
rounding of `1 / epsilon` can never cut the rule short: the same sets as a full sort, at a fraction
of its cost (`top_k=None`). With `epsilon = 0` there is no such bound: give `top_k` (the paper
sorts the top 1024) to accept an approximate rule.

Used by scoring (the BoostedProb baseline and the dominant set size/mass) and by training (the
negatives exclude the dominant set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MODES = ("last", "first")


@dataclass(frozen=True)
class DominantSets:
    """Dominant sets of `N` distributions, stored as a prefix of each top-k list.

    ids:   (N, k) token ids sorted by probability, descending
    probs: (N, k) their probabilities
    mask:  (N, k) True where the token is in the dominant set (always a prefix)
    """

    ids: torch.Tensor
    probs: torch.Tensor
    mask: torch.Tensor

    @property
    def size(self) -> torch.Tensor:  # (N,)
        return self.mask.sum(-1)

    @property
    def mass(self) -> torch.Tensor:  # (N,)
        return (self.probs * self.mask).sum(-1)

    def contains(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether `tokens[n]` is in set `n`."""
        return ((self.ids == tokens.unsqueeze(-1)) & self.mask).any(-1)


def exact_top_k(epsilon: float, vocab_size: int) -> int:
    """Smallest k for which the top-k probabilities decide the rule exactly (see module doc)."""
    if epsilon <= 0:
        raise ValueError(
            "`epsilon` = 0 has no exact top-k bound; pass `top_k` (e.g. 1024, the paper's) to use an "
            "approximate rule, or an `epsilon` > 0"
        )
    return min(vocab_size, math.floor(1.0 / epsilon) + 2)


def check_rule(p_jump: float, epsilon: float, mode: str, top_k: int | None) -> None:
    if not (isinstance(p_jump, (int, float)) and 0.0 <= p_jump <= 1.0):
        raise ValueError(f"`p_jump` should be a number in [0, 1], got {p_jump!r}")
    if not (isinstance(epsilon, (int, float)) and 0.0 <= epsilon < 1.0):
        raise ValueError(f"`epsilon` should be a number in [0, 1), got {epsilon!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` should be one of {MODES}, got {mode!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 2):
        raise ValueError(f"`top_k` should be an integer >= 2 or None (exact), got {top_k!r}")
    if top_k is None and epsilon == 0:
        raise ValueError(
            "`epsilon` = 0 has no exact top-k bound: pass an `epsilon` > 0, or a `top_k` (e.g. 1024, the "
            "paper's) to accept an approximate rule"
        )


def dominant_tokens(
    log_probs: torch.Tensor,
    *,
    p_jump: float = 0.3,
    epsilon: float = 0.005,
    mode: str = "last",
    top_k: int | None = None,
) -> DominantSets:
    """Dominant sets of the softmax distributions `log_probs` `(..., V)`, flattened to `(N, V)`."""
    check_rule(p_jump, epsilon, mode, top_k)
    log_probs = log_probs.reshape(-1, log_probs.shape[-1])  # (N, V)
    k = min(top_k or exact_top_k(epsilon, log_probs.shape[-1]), log_probs.shape[-1])
    top_logp, ids = torch.topk(log_probs.float(), k=k, dim=-1, largest=True, sorted=True)  # (N, k)
    return dominant_from_top(top_logp, ids, p_jump=p_jump, epsilon=epsilon, mode=mode)


def dominant_from_top(
    top_logp: torch.Tensor, ids: torch.Tensor, *, p_jump: float, epsilon: float, mode: str
) -> DominantSets:
    """The rule on distributions already cut to their top k, sorted descending: `top_logp` (N, k)
    log probabilities and their token `ids` (N, k). For callers that sort the logits themselves
    (the same order), with k at least `exact_top_k`."""
    probs = top_logp.exp()
    k = probs.shape[-1]
    drop = probs[:, :-1] - probs[:, 1:]  # (N, k-1)
    marked = (drop > p_jump * probs[:, :-1]) & (drop > epsilon)
    ranks = torch.arange(k - 1, device=probs.device).expand_as(marked)
    if mode == "last":
        cut = torch.where(marked, ranks, -1).amax(-1)  # (N,) last marked rank, -1 if none
    else:
        cut = torch.where(marked, ranks, k).amin(-1)
        cut = torch.where(cut == k, -1, cut)  # (N,) first marked rank, -1 if none
    mask = torch.arange(k, device=probs.device).unsqueeze(0) <= cut.unsqueeze(-1)  # (N, k)
    return DominantSets(ids=ids, probs=probs, mask=mask)


def boosted_log_prob(own_log_prob: torch.Tensor, targets: torch.Tensor, sets: DominantSets) -> torch.Tensor:
    """log BoostedProb of `targets` (N,): log of the dominant mass if the token is dominant, else
    its own log probability `own_log_prob` (N,)."""
    inside = sets.contains(targets)
    return torch.where(inside, sets.mass.clamp_min(1e-45).log(), own_log_prob)
