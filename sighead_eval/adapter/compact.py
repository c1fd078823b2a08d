"""Compact storage of a Sigmoid Head: what it adds to the LM head, which the base model holds.

A head is a full vocabulary x hidden matrix (335 MB in fp16 for Gemma 3's 262k vocabulary). A head
copied from the LM head can be stored as its difference from it:
- `rows`: the rows that differ, with their ids (lossless; small when training touched few rows);
- `lowrank`: a rank-r approximation `U V` of the whole difference (truncated SVD; lossy, V x r
  numbers: a few MB), whose dev quality is measured against the full head before it is used.
Both carry the vocabulary size, so a head is checked for shape against the model before it loads.
The one place that expands them is `expand`: the layer's loading hook (every loading route) and
the readers of adapter files call it.
"""

from __future__ import annotations

import torch

ROWS, ROW_IDS, VOCAB, LOW_U, LOW_V = "rows", "row_ids", "vocab_size", "lowrank_u", "lowrank_v"
KEYS = (ROWS, ROW_IDS, VOCAB, LOW_U, LOW_V)
STORAGES = ("full", "rows", "lowrank")


def shape(parts: dict) -> tuple[int, int]:
    """(vocab, hidden) of a compact head from its parts (tensors, or shapes as lists)."""
    vocab = int(parts[VOCAB].reshape(-1)[0])
    last = parts[ROWS] if ROWS in parts else parts[LOW_V]
    return vocab, int(last.shape[-1] if hasattr(last, "shape") else last[-1])


def expand(parts: dict[str, torch.Tensor], lm_weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The full head (in `like`'s dtype and device) from its compact `parts` and the LM head."""
    want = tuple(like.shape)
    got = shape(parts)
    if got != want:
        raise ValueError(
            "Sigmoid Head adapter does not fit this model: the adapter's head has shape "
            f"[vocab, hidden] = {list(got)}, the model's output head has {list(want)}. "
            "Load an adapter trained for this base model."
        )
    weight = lm_weight.detach().to(device=like.device, dtype=like.dtype).clone()
    if ROWS in parts:
        ids = parts[ROW_IDS].long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= got[0]):
            raise ValueError(f"the compact head's row ids should lie in [0, {got[0]}), they do not")
        weight[ids.to(like.device)] = parts[ROWS].to(device=like.device, dtype=like.dtype)
    else:
        u = parts[LOW_U].to(device=like.device, dtype=torch.float32)
        v = parts[LOW_V].to(device=like.device, dtype=torch.float32)
        weight += (u @ v).to(like.dtype)
    return weight


def compress(head: torch.Tensor, lm_weight: torch.Tensor, storage: str, rank: int | None = None) -> dict:
    """The compact parts of `head` against `lm_weight` (float32; the caller casts for storage)."""
    if storage not in ("rows", "lowrank"):
        raise ValueError(f"compact `storage` should be 'rows' or 'lowrank', got {storage!r}")
    head, lm = head.detach().float(), lm_weight.detach().to(device=head.device, dtype=torch.float32)
    vocab = torch.tensor([head.shape[0]], dtype=torch.int64)
    if storage == "rows":
        changed = (head != lm).any(dim=1).nonzero().squeeze(1)
        return {ROWS: head[changed], ROW_IDS: changed.to(torch.int64), VOCAB: vocab}
    if not isinstance(rank, int) or not 1 <= rank <= min(head.shape):
        raise ValueError(f"`rank` should be an integer in [1, {min(head.shape)}], got {rank!r}")
    u, s, vh = torch.linalg.svd(head - lm, full_matrices=False)
    return {LOW_U: u[:, :rank] * s[:rank], LOW_V: vh[:rank], VOCAB: vocab}
