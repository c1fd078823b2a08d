"""The per-token core, shared by force-decoding, generation and lm-eval's one pass: `token_scores`
runs every wanted estimator of the registry (`sighead_eval.estimators.REGISTRY`) over chunks of
scored rows. A `Chunk` holds what the estimators share (the log-softmax, the sorted top of each
row, the dominant sets, the head's logit of the scored token), each computed once, when an
estimator first asks for it.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from ..dominant import DominantSets, dominant_from_top, exact_top_k
from ..estimators import CEILING_TEMPERATURE, DEFAULT_ESTIMATORS, REGISTRY
from ..frozen import unwrap
from .options import ScoringOptions

#: Rows per vocabulary-sized intermediate on a CPU: (64, V) float32 tensors stay small enough
#: (12 MB at V = 49k) for the allocator to reuse their memory, where (512, V) ones are fresh pages
#: each time, and the page faults cost as much as the arithmetic.
CPU_CHUNK_ROWS = 64
#: On an accelerator the cost is the number of kernels, not page faults: one chunk holds up to this
#: many bytes of one (rows, V) float32 intermediate (a few such are alive at once).
DEVICE_CHUNK_BYTES = 256 * 2**20
#: Ranks sorted first for the dominant rule; rows with more than this many tokens above `epsilon`
#: (rare: a flat distribution) are sorted again to the exact bound.
SHORT_TOP_K = 24
#: What a batch's scores hold besides the token estimators, in the order they are copied to the host.
TOKEN_STATS = ("entropy", "dominant_size", "dominant_mass", "greedy")


def chunk_rows(device: torch.device | str, vocab: int, rows: int | None = None) -> int:
    """Rows scored together on `device` for a vocabulary of `vocab`: `rows` when given, else
    `CPU_CHUNK_ROWS` on a CPU and as many as fit `DEVICE_CHUNK_BYTES` elsewhere."""
    if rows is not None:
        return rows
    if torch.device(device).type == "cpu":
        return CPU_CHUNK_ROWS
    return max(CPU_CHUNK_ROWS, DEVICE_CHUNK_BYTES // (4 * max(vocab, 1)))


def host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a value back (`.any()`, `.nonzero()`) costs nothing on `device`: on a CPU
    it does not, and the estimators take the branches that save arithmetic; on an accelerator it
    waits for every queued kernel, and they take the branches that never read back."""
    return device.type == "cpu"


def fused_statistics(logits: torch.Tensor, targets: torch.Tensor, inv_temperature: float):
    """The vocabulary-wide statistics of a chunk in a few reductions over its logits, never
    writing a (n, V) intermediate: `(log-sum-exp, entropy, tempered mass, log p(y))`, each (n,).
    The entropy is sum p (lse - z), whose terms are never negative (no cancellation); masked
    tokens (z = -inf) add nothing. `torch.compile` fuses it on accelerators (`_fused`)."""
    z = logits.float()
    top = z.amax(-1, keepdim=True)
    lse = top + (z - top).exp().sum(-1, keepdim=True).log()  # (n, 1)
    nll = lse - z  # -log p >= 0
    p = (-nll).exp()
    entropy = torch.where(p > 0, p * nll, 0.0).sum(-1)
    tempered = (-nll * inv_temperature).exp().sum(-1)
    own = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse.squeeze(-1)
    return lse.squeeze(-1), entropy, tempered, own


_COMPILED: dict = {}


def _fused(device: torch.device):
    """`fused_statistics`, compiled once for CUDA devices (Triton kernels); eager elsewhere, or where
    compiling is turned off (SIGHEAD_EVAL_COMPILE=0) or fails on its first call (with a warning:
    `torch.compile` compiles lazily, so a missing compiler shows only then)."""
    if device.type not in _COMPILED:
        import os

        fn = fused_statistics
        if device.type == "cuda" and os.environ.get("SIGHEAD_EVAL_COMPILE", "1") != "0":
            compiled = torch.compile(fused_statistics, dynamic=True)

            def fn(*args):
                try:
                    out = compiled(*args)
                except Exception as err:  # a platform without a working compiler: eager, same values
                    import warnings

                    warnings.warn(f"torch.compile failed ({err}); the estimators run eagerly", stacklevel=2)
                    _COMPILED[device.type] = fused_statistics
                    return fused_statistics(*args)
                _COMPILED[device.type] = compiled  # it works: no wrapper from now on
                return out

        _COMPILED[device.type] = fn
    return _COMPILED[device.type]


def active_head_layer(model):
    """The model's `SigmoidHeadLayer` when a Sigmoid Head adapter is active on it, else None."""
    from ..adapter import SigmoidHeadLayer

    head = unwrap(model).get_output_embeddings()
    if isinstance(head, SigmoidHeadLayer) and head.active_head() is not None:
        return head
    return None


def active_head(model) -> torch.Tensor | None:
    """The active Sigmoid Head weight `(V, H)` of `model`, or None (no adapter, or disabled)."""
    layer = active_head_layer(model)
    return None if layer is None else layer.active_head()


def wanted_estimators(options: ScoringOptions, head) -> tuple[str, ...]:
    """The token estimators a run computes: those asked for (`options.estimators`), else the
    default ones; those needing a head only where one is."""
    names = options.estimators if options.estimators is not None else DEFAULT_ESTIMATORS
    return tuple(n for n in names if head is not None or not REGISTRY[n].needs_head)


def token_scores(
    logits: torch.Tensor,
    targets: torch.Tensor,
    hidden: torch.Tensor | None = None,
    head=None,
    options: ScoringOptions | None = None,
) -> dict[str, torch.Tensor]:
    """Every wanted estimator for `N` scored positions, as (N,) tensors on the logits' device.

    logits: (N, V) softmax logits; targets: (N,) the tokens scored; hidden: (N, H) the head's
    input; head: the model's `SigmoidHeadLayer` with an active adapter (`active_head_layer`), or
    None for the softmax baselines only. Returns (N,) float32 tensors: the log score of each
    estimator (`wanted_estimators`); `entropy`, `dominant_size`, `dominant_mass`; `greedy` (1.0
    where the token is the softmax's argmax).

    Off the CPU nothing here waits for the device (but the opt-in `combined`): no value is read
    back to the host, so the kernels of consecutive chunks and batches queue up behind the
    forward pass.
    """
    options = options or ScoringOptions()
    if head is not None and hidden is None:
        raise ValueError("`hidden` is needed to score with a Sigmoid Head")
    names = wanted_estimators(options, head)
    step = chunk_rows(logits.device, logits.shape[-1], options.chunk_rows)
    if (
        options.chunk_rows is None
        and all(REGISTRY[n].light for n in names)
        and _fused(logits.device) is not fused_statistics
    ):
        # compiled, the fused statistics write no (n, V) intermediate: chunking would only multiply
        # the kernels launched (about a hundred a chunk), which is what an accelerator pays for
        step = max(step, logits.shape[0])
    parts = []
    for start in range(0, max(logits.shape[0], 1), step):
        rows = slice(start, start + step)
        chunk = Chunk(logits[rows], targets[rows], None if hidden is None else hidden[rows], head, options)
        parts.append({**{name: chunk.log_score(name) for name in names}, **chunk.stats()})
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}


class Chunk:
    """A chunk of scored rows and the statistics its estimators share, each computed once.

    logits (n, V), targets (n,), hidden (n, H) or None, head: a `SigmoidHeadLayer` or None. Few
    vocabulary-sized passes: a log-softmax, one short top-k, exp, multiply and sum for the
    entropy (pairwise summation: as accurate as the terms, where a dot product loses 1e-4 nats),
    and one tempered exp and sum where the ceiling is wanted.
    """

    def __init__(self, logits, targets, hidden, head, options: ScoringOptions):
        self.logits, self.targets, self.hidden = logits, targets, hidden
        self.head, self.options = head, options
        self.vocab = logits.shape[-1]
        self._scores: dict[str, torch.Tensor] = {}
        # Off the CPU, the vocabulary-wide statistics come from one fused function over the logits
        # (`fused_statistics`) and the top-k sorts the logits themselves: no (n, V) float32 copy.
        self.fused = not host_reads_are_free(logits.device)

    @cached_property
    def _statistics(self) -> tuple[torch.Tensor, ...]:
        return _fused(self.logits.device)(self.logits, self.targets, 1.0 / CEILING_TEMPERATURE)

    def log_score(self, name: str) -> torch.Tensor:
        """Estimator `name`'s (n,) log scores, computed once."""
        if name not in self._scores:
            entry = REGISTRY[name]
            if entry.needs_head and self.head is None:
                raise ValueError(f"estimator {name!r} needs a Sigmoid Head; none is active")
            self._scores[name] = entry.compute(self).float()
        return self._scores[name]

    @cached_property
    def logp(self) -> torch.Tensor:
        """(n, V) float32 log-softmax."""
        return torch.log_softmax(self.logits.float(), dim=-1)

    @cached_property
    def _top(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused:  # the logits' order is the log-softmax's; one sort to the bound, no host read
            top, ids = torch.topk(self.logits, k=top_k_bound(self.options, self.vocab), dim=-1, sorted=True)
            return top.float() - self.log_normalizer.unsqueeze(-1), ids
        return top_log_probs(self.logp, self.options)

    @property
    def top_logp(self) -> torch.Tensor:
        """(n, k) the top log probabilities, sorted descending (k: the dominant rule's bound)."""
        return self._top[0]

    @property
    def top_ids(self) -> torch.Tensor:
        """(n, k) their token ids (-1 where a row was decided by a shorter sort)."""
        return self._top[1]

    @cached_property
    def sets(self) -> DominantSets:
        o = self.options
        return dominant_from_top(
            self.top_logp, self.top_ids, p_jump=o.p_jump, epsilon=o.epsilon, mode=o.dominant_mode
        )

    @cached_property
    def own(self) -> torch.Tensor:
        """(n,) log p(y)."""
        if self.fused:
            return self._statistics[3]
        return self.logp.gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)

    @cached_property
    def inside(self) -> torch.Tensor:
        """(n,) whether y is dominant."""
        return self.sets.contains(self.targets)

    @cached_property
    def tempered_mass(self) -> torch.Tensor:
        """(n,) sum of p^(1/T) over the vocabulary: the ceiling's softmax proposal before the cut.
        As exp(log p / T): the square root of the tail's denormal probabilities runs about seven
        times slower than exp on a CPU (and exp of the halved log is the more accurate)."""
        if self.fused:
            return self._statistics[2]
        return self._tempered.sum(-1)

    @cached_property
    def _tempered(self) -> torch.Tensor:
        """(n, V) p^(1/T), kept: at T = 2 its square is p, so the entropy needs no second exp."""
        return self.logp.mul(1.0 / CEILING_TEMPERATURE).exp_()

    @cached_property
    def entropy(self) -> torch.Tensor:
        """(n,) the softmax entropy in nats."""
        if self.fused:
            return self._statistics[1]
        logp = self.logp
        if CEILING_TEMPERATURE == 2.0 and "_tempered" in self.__dict__:  # p = (p^(1/2))^2: a multiply
            terms = self._tempered.square().mul_(logp)  # (n, V) p log p
        else:
            terms = logp.exp().mul_(logp)
        entropy = -terms.sum(-1)
        bad = ~torch.isfinite(entropy)  # a host read: free on the CPU, the only device this runs on
        if bad.any():  # -inf logits (masked tokens) give 0 * -inf: the guarded formula for those rows
            lp = logp[bad]
            entropy[bad] = -torch.where(lp > -math.inf, lp.exp() * lp, torch.zeros_like(lp)).sum(-1)
        return entropy

    @cached_property
    def log_normalizer(self) -> torch.Tensor:
        """(n,) the logits' log-sum-exp: the argmax's logit minus its log probability."""
        if self.fused:
            return self._statistics[0]
        return self.logits.gather(-1, self.top_ids[:, :1]).squeeze(-1).float() - self.top_logp[:, 0]

    @cached_property
    def offset(self) -> torch.Tensor | None:
        """What the head's offset adds to each of its logits (None for the paper's head)."""
        return self.head.logit_offset(log_normalizer=self.log_normalizer)

    @cached_property
    def head_logit(self) -> torch.Tensor:
        """(n,) the head's logit of the scored token, offset included."""
        return self.head.head_logits(self.hidden, self.targets, offset=self.offset)

    def min_head_logit_above(self) -> torch.Tensor:
        """(n,) the least head logit among the tokens the softmax ranks strictly above y; +inf where
        none is (y is the argmax). The sorted top covers a row when y's probability is at least the
        last sorted one's; the other rows are scored over the whole vocabulary."""
        ids, top = self.top_ids, self.top_logp
        own = self.own.unsqueeze(-1)
        z = self.head.head_logits(self.hidden, ids.clamp_min(0), offset=self.offset)  # (n, k)
        z = torch.where((top > own) & (ids >= 0), z.float(), math.inf).amin(-1)
        # tokens outside the sorted top may rank above y where y is below its last sorted token
        beyond = self.own < torch.where(ids >= 0, top, math.inf).amin(-1)
        rows = beyond.nonzero().squeeze(-1)  # a host read: `combined` is opt-in
        if rows.numel():
            offset = None if self.offset is None else self.offset[rows]
            full = self.head.head_logits(self.hidden[rows], None, offset=offset).float()  # (m, V)
            logp = (
                self.logits[rows].float() - self.log_normalizer[rows].unsqueeze(-1)
                if self.fused
                else self.logp[rows]
            )
            above = logp > self.own[rows].unsqueeze(-1)
            z[rows] = torch.where(above, full, math.inf).amin(-1)
        return z

    def stats(self) -> dict[str, torch.Tensor]:
        """What every run records beside the estimators."""
        return {
            "entropy": self.entropy,
            "dominant_size": self.sets.size.float(),
            "dominant_mass": self.sets.mass,
            "greedy": (self.top_ids[:, 0] == self.targets).float(),
        }


def top_k_bound(options: ScoringOptions, vocab: int) -> int:
    """Ranks sorted for the dominant rule: its exact bound (`exact_top_k`), or `dominant_top_k`."""
    return min(options.dominant_top_k or exact_top_k(options.epsilon, vocab), vocab)


def top_log_probs(logp: torch.Tensor, options: ScoringOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """`(top log probs (n, k), their ids (n, k))`, k the dominant rule's exact bound
    (`exact_top_k`) or `dominant_top_k`.

    Sorting k = 202 of 49,152 costs twice as much as sorting 24. The rule reads rank `i + 1` only
    for ranks with `p_i > epsilon`, so a row whose 24th probability is at most epsilon is decided by
    its top 24; its ranks below are filled with probability 0 (id -1), which marks nothing. Only
    the other rows are sorted to k (a host read: this is the CPU's path). The sets are those of a
    full sort."""
    k = top_k_bound(options, logp.shape[-1])
    short = k if options.dominant_top_k is not None else min(SHORT_TOP_K, k)
    top_logp, ids = torch.topk(logp, k=short, dim=-1, largest=True, sorted=True)  # (n, short)
    if short == k:
        return top_logp, ids
    full_logp = torch.full((logp.shape[0], k), -math.inf, device=logp.device)
    full_ids = torch.full((logp.shape[0], k), -1, dtype=ids.dtype, device=logp.device)
    full_logp[:, :short], full_ids[:, :short] = top_logp, ids
    rows = (top_logp[:, -1].exp() > options.epsilon).nonzero().squeeze(-1)
    if rows.numel():
        full_logp[rows], full_ids[rows] = torch.topk(logp[rows], k=k, dim=-1, largest=True, sorted=True)
    return full_logp, full_ids
