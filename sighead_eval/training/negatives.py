"""Negative sampling for the Sigmoid Head (Dinh & Niehues, 2026).

At each trained position the reference next token is the positive. `K` negatives are drawn
without replacement from the vocabulary minus the reference and the *dominant* tokens of the
frozen softmax: plausible alternatives are never punished. Paper default proposal mix: half the
negatives from the unigram frequency of target tokens (pad zeroed), half from `softmax(log p / T)`
with `T = 2`; excluded tokens are zeroed in both. A token drawn by both halves counts once.

Ablations: `mixed` draws from the paper's proposal mix but excludes only the reference, not the
dominant tokens; `random` draws uniformly from the vocabulary minus the reference; `full` uses
every other token as a negative (full-vocabulary BCE, no sampling).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..dominant import DominantSets, dominant_tokens

MODES = ("dominant", "mixed", "random", "full")
# Keeps every allowed token drawable when its proposal probability underflows to zero.
_FLOOR = 1e-30


def unigram_distribution(
    target_lists: Iterable[list[int]], vocab_size: int, pad_id: int | None
) -> torch.Tensor:
    """(V,) frequency of target tokens in the training data, padding zeroed."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for targets in target_lists:
        counts += torch.bincount(torch.tensor(targets, dtype=torch.long), minlength=vocab_size)[:vocab_size]
    if pad_id is not None and 0 <= pad_id < vocab_size:
        counts[pad_id] = 0
    if counts.sum() == 0:
        raise ValueError("the unigram distribution is empty: no target tokens")
    return (counts / counts.sum()).float()


def excluded_tokens(sets: DominantSets | None, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(N, V) bool: the reference and, when `sets` is given, the dominant tokens."""
    excluded = torch.zeros((targets.shape[0], vocab_size), dtype=torch.bool, device=targets.device)
    if sets is not None:
        excluded.scatter_(1, sets.ids, sets.mask)
    excluded[torch.arange(targets.shape[0], device=targets.device), targets] = True
    return excluded


TOP_P_MAX = 64


def dominant_pairs(sets: DominantSets, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(ids (N, D), valid (N, D))`: each position's dominant tokens other than its reference, for
    the ranking loss, D the most any position has (at least 1); padding is id 0, valid False."""
    keep = sets.mask & (sets.ids != targets.unsqueeze(1)) & (sets.ids >= 0)  # (N, k)
    width = max(int(keep.sum(1).max()), 1) if keep.numel() else 1
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]  # kept ones first
    valid = keep.gather(1, order)
    return torch.where(valid, sets.ids.gather(1, order), 0), valid


def pad_pairs(pieces: list[torch.Tensor]) -> torch.Tensor:
    """(n_i, D_i) pieces of `dominant_pairs` stacked into (sum n_i, max D_i), padded with zeros
    (False)."""
    width = max(p.shape[1] for p in pieces)
    out = torch.zeros(
        (sum(p.shape[0] for p in pieces), width), dtype=pieces[0].dtype, device=pieces[0].device
    )
    start = 0
    for p in pieces:
        out[start : start + p.shape[0], : p.shape[1]] = p
        start += p.shape[0]
    return out


def top_p_set(logits: torch.Tensor, top_p: float, max_size: int = TOP_P_MAX) -> torch.Tensor:
    """(N, V) bool: the smallest set of most probable tokens whose softmax mass reaches `top_p`,
    cut at `max_size` tokens (sorting only the top `max_size`, not the vocabulary)."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` should be in (0, 1], got {top_p!r}")
    probs = torch.softmax(logits.float(), dim=-1)
    top, ids = probs.topk(min(max_size, probs.shape[-1]), dim=-1)  # (N, k) sorted
    before = top.cumsum(-1) - top  # mass of the tokens ranked above
    inside = before < top_p
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(1, ids, inside)


def _first_k_distinct(draws: torch.Tensor, usable: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `k` distinct usable tokens of each row of `draws` (N, M), in draw order; and the
    rows (N,) that have fewer than `k` of them."""
    m = draws.shape[1]
    values, index = torch.where(usable, draws, -1).sort(dim=1, stable=True)
    first = values >= 0
    first[:, 1:] &= values[:, 1:] != values[:, :-1]
    new = torch.zeros_like(first).scatter_(1, index, first)  # first usable occurrence, in draw order
    keep = new & (new.cumsum(1) <= k)
    slots = torch.arange(m, device=draws.device).expand_as(draws)
    order = torch.argsort(torch.where(keep, slots, slots + m), dim=1)[:, :k]
    return draws.gather(1, order), keep.sum(1) < k


def _draw(proposal: torch.Tensor, excluded: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`k` distinct tokens per row from the row-wise `proposal` (N, V) with `excluded` zeroed.

    Successive sampling (draw with replacement, keep the first `k` distinct tokens) is exactly
    sampling without replacement, at a fraction of `multinomial(replacement=False)`'s cost over
    a large vocabulary; rows that do not reach `k` distinct draws take that slow path.
    """
    if k == 0:
        return torch.empty((proposal.shape[0], 0), dtype=torch.long, device=proposal.device)
    return _draw_from(proposal.clamp_min(_FLOOR).masked_fill_(excluded, 0.0), k, generator)


def _draw_from(q: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """`_draw` from a prepared proposal `q` (N, V), excluded tokens already zeroed."""
    draws = torch.multinomial(q, 4 * k, replacement=True, generator=generator)  # (N, 4k)
    out, short = _first_k_distinct(draws, torch.ones_like(draws, dtype=torch.bool), k)
    if short.any():
        out[short] = torch.multinomial(q[short], k, replacement=False, generator=generator)
    return out


def _draw_shared(
    dist: torch.Tensor, excluded: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """As `_draw` for one proposal `dist` (V,) shared by every row: draws from `dist` and rejects
    each row's excluded tokens (exact for the renormalised distribution), never building (N, V)."""
    n = excluded.shape[0]
    if k == 0:
        return torch.empty((n, 0), dtype=torch.long, device=excluded.device)
    draws = torch.multinomial(dist, n * 8 * k, replacement=True, generator=generator).view(n, 8 * k)
    out, short = _first_k_distinct(draws, ~excluded.gather(1, draws), k)
    if short.any():
        out[short] = _draw(dist.expand(int(short.sum()), -1), excluded[short], k, generator)
    return out


def sample_negatives(
    logits: torch.Tensor, targets: torch.Tensor, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negatives (N, K) token ids, valid (N, K) bool): one round of `sample_negative_rounds`,
    whose keyword options it takes. Invalid entries are duplicates."""
    return sample_negative_rounds(logits, targets, rounds=1, **options)[0]


def sample_negative_rounds(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    rounds: int,
    k: int = 10,
    mode: str = "dominant",
    sets: DominantSets | None = None,
    unigram: torch.Tensor | None = None,
    unigram_share: float = 0.5,
    temperature: float = 2.0,
    generator: torch.Generator | None = None,
    exclude_top_p: float = 0.0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`rounds` independent draws of (negatives (N, K), valid (N, K)), one per planned epoch say,
    drawn one after the other from `generator`; the excluded sets and the proposals are computed
    once. Invalid entries are duplicates. `exclude_top_p` > 0 also keeps the softmax's top-p set
    (at most `TOP_P_MAX` tokens) out of the negatives: softer negatives for plausible tokens the
    dominant rule does not cover."""
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` should be a positive integer, got {rounds!r}")
    if mode not in ("dominant", "mixed", "random"):
        raise ValueError(f"`mode` should be 'dominant', 'mixed' or 'random' for sampling, got {mode!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` should be a positive integer, got {k!r}")
    n, vocab = logits.shape
    if mode == "random":
        excluded = excluded_tokens(None, targets, vocab)
        q = torch.ones((n, vocab), device=logits.device).masked_fill_(excluded, 0.0)
        out = []
        for _ in range(rounds):
            negatives = _draw_from(q, k, generator)
            out.append((negatives, torch.ones_like(negatives, dtype=torch.bool)))
        return out
    if (mode == "dominant" and sets is None) or unigram is None:
        raise ValueError(
            "dominant-excluded sampling needs the dominant `sets` and the `unigram` distribution"
        )
    if not 0.0 <= unigram_share <= 1.0:
        raise ValueError(f"`unigram_share` should be in [0, 1], got {unigram_share!r}")
    excluded = excluded_tokens(sets if mode == "dominant" else None, targets, vocab)
    if exclude_top_p > 0:
        excluded |= top_p_set(logits, exclude_top_p)
    k_uni = round(k * unigram_share)
    tempered = torch.softmax(logits.float() / temperature, dim=-1)  # (N, V)
    q = tempered.clamp_min_(_FLOOR).masked_fill_(excluded, 0.0) if k - k_uni else None
    out = []
    for _ in range(rounds):
        from_unigram = _draw_shared(unigram.to(logits.device), excluded, k_uni, generator)  # (N, k_u)
        from_softmax = (
            _draw_from(q, k - k_uni, generator)
            if q is not None
            else torch.empty((n, 0), dtype=torch.long, device=logits.device)
        )  # (N, k_s)
        negatives = torch.cat([from_unigram, from_softmax], dim=1)  # (N, K)
        valid = torch.ones_like(negatives, dtype=torch.bool)
        if k_uni and k - k_uni:
            dup = (from_softmax.unsqueeze(-1) == from_unigram.unsqueeze(1)).any(-1)  # (N, k_s)
            valid[:, k_uni:] = ~dup
        out.append((negatives, valid))
    return out


def _generator(seed: int, *parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + sum(p * 7919**i for i, p in enumerate(parts, 1))) % (2**63))
    return g


def dominant_sets(frozen, config):
    """The dominant sets of one batch's frozen outputs, by the run's rule."""
    logp = torch.log_softmax(frozen.logits.float(), -1)  # (N, V)
    return dominant_tokens(logp, p_jump=config.p_jump, epsilon=config.epsilon, mode=config.dominant_mode)


def draw_negatives(frozen, config, unigram, generator, mode: str, top_p: float = 0.0, rounds=None, sets=None):
    """(negatives, valid) for one batch's frozen outputs, or a list of `rounds` such draws (one a
    planned epoch, for the cache); dominant sets only when the mode excludes them (`sets`, when the
    caller has them already)."""
    if mode != "dominant":
        sets = None
    elif sets is None:
        sets = dominant_sets(frozen, config)
    drawn = sample_negative_rounds(
        frozen.logits,
        frozen.targets,
        rounds=rounds or 1,
        k=config.num_negatives,
        mode=mode,
        sets=sets,
        unigram=unigram,
        unigram_share=config.unigram_share,
        temperature=config.softmax_temperature,
        generator=generator,
        exclude_top_p=top_p,
    )
    return drawn if rounds is not None else drawn[0]
