"""The Sigmoid Head's objective: binary cross-entropy with logits over sampled pairs.

The logits come from `SigmoidHeadLayer.head_logits` (the one place the head scores tokens, offset
included); these functions only turn them into the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_head_loss(
    logits: torch.Tensor,
    valid: torch.Tensor,
    errors: torch.Tensor | None = None,
    error_weight: float = 1.0,
) -> torch.Tensor:
    """Mean BCE over (position, token) pairs: the reference is positive, valid negatives are 0.

    logits: (N, 1+K), the reference's logit first, then the K negatives'; valid: (N, K) bool,
    False where a position had fewer than K negatives to draw. No positive re-weighting.

    errors: (N,) bool, the positions inside an error span (the authors' MQM mode): there the
    reference itself is the one negative, its pair weighted by `error_weight`, and the position's
    sampled negatives are left out. The mean is over the pairs kept, weights not counted, as
    `BCEWithLogitsLoss(weight=...)` takes it.
    """
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    if errors is not None:
        valid = valid & ~errors.unsqueeze(1)
        labels[:, 0] = (~errors).to(logits.dtype)
    kept = torch.cat([torch.ones_like(logits[:, :1]), valid.to(logits.dtype)], dim=1)  # (N, 1+K)
    weights = kept
    if errors is not None:
        weights = kept.clone()
        weights[:, 0] = torch.where(errors, torch.full_like(weights[:, 0], error_weight), weights[:, 0])
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_pair * weights).sum() / kept.sum()


def ranking_loss(
    reference: torch.Tensor, dominant: torch.Tensor, valid: torch.Tensor, margin: float
) -> torch.Tensor:
    """The authors' ranking loss (their commit b755c23): for every dominant token other than the
    reference at a position, `MarginRankingLoss(margin)(s_ref, s_dom, 1) = max(0, s_dom - s_ref +
    margin)` on the head's logits, averaged over all such pairs of the batch; 0 where there are none.

    reference: (N,) the reference's logit; dominant: (N, D) the dominant tokens' logits; valid:
    (N, D) bool, False on padding (a position with fewer than D such tokens).
    """
    pairs = valid.sum()
    per_pair = (dominant - reference.unsqueeze(1) + margin).clamp_min(0.0) * valid.to(dominant.dtype)
    return per_pair.sum() / pairs.clamp_min(1)


def full_vocab_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ablation: BCE over the whole vocabulary, every non-reference token a negative.

    logits: (N, V) the head's logits at every token; targets: (N,).
    """
    labels = torch.zeros_like(logits)
    labels[torch.arange(targets.shape[0]), targets] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)
