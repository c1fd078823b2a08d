"""The Sigmoid Head's objective: binary cross-entropy with logits over sampled pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_head_loss(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    valid: torch.Tensor,
    offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE over (position, token) pairs: the reference is positive, valid negatives are 0.

    head: the sparse `nn.Embedding` (V, H), called once so its gradient touches only the looked-up
    rows; hidden: (N, H); targets: (N,); negatives, valid: (N, K); offset: (N,) added to every logit
    of a position (the head's `log_softmax` offset), or None. Returns (loss, logits (N, 1+K)).
    No positive re-weighting.
    """
    ids = torch.cat([targets.unsqueeze(1), negatives], dim=1)  # (N, 1+K)
    rows = head(ids)  # (N, 1+K, H)
    logits = (rows * hidden.to(rows.dtype).unsqueeze(1)).sum(-1)  # (N, 1+K)
    if offset is not None:
        logits = logits + offset.to(logits.dtype).unsqueeze(1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    weights = torch.cat(
        [torch.ones_like(targets, dtype=logits.dtype).unsqueeze(1), valid.to(logits.dtype)], dim=1
    )
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_pair * weights).sum() / weights.sum(), logits


def full_vocab_loss(
    weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """Ablation: BCE over the whole vocabulary, every non-reference token a negative (dense gradient)."""
    logits = F.linear(hidden.to(weight.dtype), weight)  # (N, V)
    if offset is not None:
        logits = logits + offset.to(logits.dtype).unsqueeze(1)
    labels = torch.zeros_like(logits)
    labels[torch.arange(targets.shape[0]), targets] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)
