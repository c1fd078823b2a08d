"""The Sigmoid Head's objective: binary cross-entropy with logits over sampled pairs.

The logits come from `SigmoidHeadLayer.head_logits` (the one place the head scores tokens, offset
included); these functions only turn them into the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_head_loss(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean BCE over (position, token) pairs: the reference is positive, valid negatives are 0.

    logits: (N, 1+K), the reference's logit first, then the K negatives'; valid: (N, K) bool,
    False where a position had fewer than K negatives to draw. No positive re-weighting.
    """
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    weights = torch.cat([torch.ones_like(logits[:, :1]), valid.to(logits.dtype)], dim=1)  # (N, 1+K)
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_pair * weights).sum() / weights.sum()


def full_vocab_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ablation: BCE over the whole vocabulary, every non-reference token a negative.

    logits: (N, V) the head's logits at every token; targets: (N,).
    """
    labels = torch.zeros_like(logits)
    labels[torch.arange(targets.shape[0]), targets] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)
