"""The scoring engine: model + texts -> per-token, per-word and per-sequence confidence.

One frozen pass gives, at every response position, the head's input `h_t` and the softmax logits.
From them `token_scores` computes every estimator:

- `sigmoid`: the Sigmoid Head, `sigmoid(h_t . W_sig[y])`, one dot product per token;
- `softmax`: the LM's own probability `p(y)`;
- `boostedprob`: the dominant-set mass if `y` is dominant, else `p(y)` (BoostedProb);
- `entropy`: the softmax entropy in nats (higher = less sure), and the dominant set's size and mass.

Two ways in: `score` force-decodes given responses (one forward pass per batch), `generate` lets
the model write the responses and records the same scores during generation, with no second pass.

Conventions: prompt and chat-template tokens are never scored; the end-of-turn/EOS token is left
out unless `include_eos=True`. An empty response is scored as the end-of-turn token the model
emitted in its place (so every aggregate is a finite number, never NaN); such results carry
`empty_response=True`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dominant import DominantSets, boosted_log_prob, check_rule, dominant_from_top, exact_top_k
from .estimators import SEQUENCE_AGGREGATIONS, TOKEN_ESTIMATORS, aggregate_rows, check_running_confidence
from .frozen import HeadInputs, frozen_pass, right_pad, unwrap
from .pieces import token_pieces

TRUNCATION = ("error", "left")


@dataclass
class ScoringOptions:
    """How texts are turned into token scores."""

    chat_template: bool | None = field(
        default=None,
        metadata={
            "help": "Wrap prompts in the tokenizer's chat template. Default: on when the tokenizer has one."
        },
    )
    include_eos: bool = field(
        default=False, metadata={"help": "Also score the end-of-turn/EOS token that closes the response."}
    )
    batch_size: int | str = field(
        default=8,
        metadata={
            "help": "Records per forward pass, or 'auto' (force-decoding only): as many as the device's "
            "memory holds, from 512 records down, halved on running out of memory; 8 on a CPU."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt+response in tokens. Default: the model's context length."},
    )
    truncation: str = field(
        default="error",
        metadata={
            "help": "What to do with a record longer than `max_length`: 'error', or 'left' (drop prompt "
            "tokens from the left, with a warning; the response is never cut)."
        },
    )
    p_jump: float = field(
        default=0.3, metadata={"help": "Dominant-token rule: relative drop that marks a rank."}
    )
    epsilon: float = field(
        default=0.005, metadata={"help": "Dominant-token rule: absolute drop that marks a rank."}
    )
    dominant_mode: str = field(
        default="last", metadata={"help": "Dominant-token rule: cut at the 'last' (paper) or 'first' mark."}
    )
    dominant_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Probabilities sorted for the dominant rule. Default: the exact bound 1/epsilon + 2."
        },
    )
    chunk_rows: int | None = field(
        default=None,
        metadata={
            "help": "Scored positions per vocabulary-sized pass. Default: by device (64 on a CPU, up to "
            "256 MB of float32 logits on an accelerator)."
        },
    )

    def __post_init__(self):
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"`batch_size` should be a positive integer or 'auto', got {self.batch_size!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"`max_length` should be an integer >= 2 or None, got {self.max_length!r}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"`truncation` should be one of {TRUNCATION}, got {self.truncation!r}")
        check_rule(self.p_jump, self.epsilon, self.dominant_mode, self.dominant_top_k)
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ValueError(f"`chunk_rows` should be a positive integer or None, got {self.chunk_rows!r}")


@dataclass
class GenerationOptions:
    """How `generate` samples responses."""

    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per response."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with `do_sample`)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with `do_sample`)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler; batch i uses seed + i."})
    abstain_below: float | None = field(
        default=None,
        metadata={
            "help": "Stop a response as soon as its running confidence (--abstain-confidence) falls below "
            "this probability, and mark it `abstained` (where it happened: `abstained_at`)."
        },
    )
    abstain_confidence: str = field(
        default="sigmoid_min",
        metadata={
            "help": "The running confidence --abstain-below watches: {sigmoid,hybrid,softmax,boostedprob,"
            "ceiling}_{min,mean,prod} over the tokens generated so far."
        },
    )

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` should be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` should be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` should be in (0, 1], got {self.top_p!r}")
        if self.abstain_below is not None and not 0 <= self.abstain_below <= 1:
            raise ValueError(f"`abstain_below` is a probability in [0, 1], got {self.abstain_below!r}")
        check_running_confidence(self.abstain_confidence)


# ---------------------------------------------------------------------------------------------
# The per-token core, shared by force-decoding and generation
# ---------------------------------------------------------------------------------------------
#: Rows per vocabulary-sized intermediate on a CPU: (64, V) float32 tensors stay small enough
#: (12 MB at V = 49k) for the allocator to reuse their memory, where (512, V) ones are fresh pages
#: each time, and the page faults cost as much as the arithmetic.
CPU_CHUNK_ROWS = 64
#: On an accelerator the cost is the number of kernels, not page faults: one chunk holds up to this
#: many bytes of one (rows, V) float32 intermediate (a few such are alive at once).
DEVICE_CHUNK_BYTES = 256 * 2**20


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


def token_scores(
    logits: torch.Tensor,
    targets: torch.Tensor,
    hidden: torch.Tensor | None = None,
    head=None,
    options: ScoringOptions | None = None,
) -> dict[str, torch.Tensor]:
    """Every estimator for `N` scored positions, as (N,) tensors on the logits' device.

    logits: (N, V) softmax logits; targets: (N,) the tokens scored; hidden: (N, H) the head's
    input; head: the model's `SigmoidHeadLayer` with an active adapter (`active_head_layer`), or
    None for the softmax baselines only. Returns (N,) float32 tensors: log scores for `softmax`,
    `boostedprob`, `ceiling` and, with a head, `sigmoid` and `hybrid`; `entropy`, `dominant_size`,
    `dominant_mass`; `greedy` (1.0 where the token is the softmax's argmax).

    Off the CPU nothing here waits for the device: no value is read back to the host, so the
    kernels of consecutive chunks and batches queue up behind the forward pass.
    """
    options = options or ScoringOptions()
    if head is not None and hidden is None:
        raise ValueError("`hidden` is needed to score with a Sigmoid Head")
    step = chunk_rows(logits.device, logits.shape[-1], options.chunk_rows)
    parts = []
    for start in range(0, max(logits.shape[0], 1), step):
        rows = slice(start, start + step)
        part = _softmax_scores(logits[rows], targets[rows], options)
        lse = part.pop("_lse")
        if head is not None:
            offset = head.logit_offset(log_normalizer=lse)  # None for the paper's head
            part["sigmoid"] = F.logsigmoid(head.head_logits(hidden[rows], targets[rows], offset=offset))
            part["hybrid"] = part["sigmoid"] + part["ceiling"]  # the head times its ceiling
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}


def _softmax_scores(logits: torch.Tensor, targets: torch.Tensor, options: ScoringOptions) -> dict:
    """The estimators that read the softmax, for a chunk of rows. Few vocabulary-sized passes: a
    log-softmax, one short top-k, and exp, multiply and sum for the entropy, -sum_v p_v log p_v
    (pairwise summation: as accurate as the terms, where a dot product loses 1e-4 nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
    top_logp, top_ids = _top_log_probs(logp, options)
    sets: DominantSets = dominant_from_top(
        top_logp, top_ids, p_jump=options.p_jump, epsilon=options.epsilon, mode=options.dominant_mode
    )
    p = logp.exp()  # (n, V)
    # p^(1/T) as exp(log p / T): the square root of the tail's denormal probabilities runs about
    # seven times slower than exp on a CPU (and exp of the halved log is the more accurate)
    tempered = logp.mul(1.0 / CEILING_TEMPERATURE).exp_()  # (n, V)
    tempered_mass = tempered.sum(-1)  # (n,) the ceiling's softmax proposal, before the dominant cut
    terms = p.mul_(logp)  # (n, V) p log p
    if host_reads_are_free(logp.device):
        entropy = -terms.sum(-1)  # (n,)
        bad = ~torch.isfinite(entropy)
        if bad.any():  # -inf logits (masked tokens) give 0 * -inf: the guarded formula for those rows
            lp = logp[bad]
            entropy[bad] = -torch.where(lp > -math.inf, lp.exp() * lp, torch.zeros_like(lp)).sum(-1)
    else:  # the same values without reading `bad` back to the host: 0 log 0 = 0 in place
        entropy = -terms.nan_to_num_(nan=0.0).sum(-1)
    own = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (n,) log p(y)
    inside = sets.contains(targets)
    return {
        "greedy": (top_ids[:, 0] == targets).float(),
        "softmax": own,
        "boostedprob": boosted_log_prob(own, targets, sets),
        "ceiling": _ceiling_log_score(own, inside, top_logp, sets, tempered_mass, logp.shape[-1]),
        "entropy": entropy,
        "dominant_size": sets.size.float(),
        "dominant_mass": sets.mass,
        # the log-sum-exp, for the head's offset: logit minus log probability of the argmax
        "_lse": logits.gather(-1, top_ids[:, :1]).squeeze(-1).float() - top_logp[:, 0],
    }


#: The paper's recipe, which the ceiling assumes: K negatives, the unigram's share of them, and the
#: temperature of the softmax proposal.
CEILING_NEGATIVES, CEILING_UNIGRAM_SHARE, CEILING_TEMPERATURE = 10, 0.5, 2.0


def _ceiling_log_score(own, inside, top_logp, sets, tempered_mass, vocab: int) -> torch.Tensor:
    """log of the converged head's score under the paper's recipe: a dominant token is never a
    negative and goes to 1; another settles at p / (p + its expected
    negative draws per position), k_s p^(1/T) / S from the softmax proposal (S summed over the
    non-dominant tokens) plus k_u / V from the unigram (taken as uniform)."""
    k_u = CEILING_NEGATIVES * CEILING_UNIGRAM_SHARE
    k_s = CEILING_NEGATIVES - k_u
    dominant_tempered = ((top_logp / CEILING_TEMPERATURE).exp() * sets.mask).sum(-1)  # (n,)
    rest = (tempered_mass - dominant_tempered).clamp_min(1e-30)  # S
    p = own.exp()
    draws = k_s * (own / CEILING_TEMPERATURE).exp() / rest + k_u / vocab
    score = torch.log(p / (p + draws)).clamp_min(own - 100.0)  # finite where p underflows
    return torch.where(inside, torch.zeros_like(own), score)


#: Ranks sorted first for the dominant rule; rows with more than this many tokens above `epsilon`
#: (rare: a flat distribution) are sorted again to the exact bound.
SHORT_TOP_K = 24


def _top_log_probs(logp: torch.Tensor, options: ScoringOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """`(top log probs (n, k), their ids (n, k))`, k the dominant rule's exact bound
    (`exact_top_k`) or `dominant_top_k`.

    Sorting k = 202 of 49,152 costs twice as much as sorting 24. The rule reads rank `i + 1` only
    for ranks with `p_i > epsilon`, so a row whose 24th probability is at most epsilon is decided by
    its top 24; its ranks below are filled with probability 0 (id -1), which marks nothing. Only
    the other rows are sorted to k. The sets are those of a full sort."""
    vocab = logp.shape[-1]
    k = min(options.dominant_top_k or exact_top_k(options.epsilon, vocab), vocab)
    # Off the CPU, choosing the rows to sort again would wait for the device; one sort to k does not.
    cheap = host_reads_are_free(logp.device)
    short = k if (options.dominant_top_k is not None or not cheap) else min(SHORT_TOP_K, k)
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


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
def word_spans(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Groups sub-word pieces into words: a word starts at a piece that begins with whitespace or
    follows one that ends with it. Returns `[start, end)` index pairs."""
    spans: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        starts = i == 0 or (piece[:1].isspace()) or (pieces[i - 1][-1:].isspace()) or not pieces[i - 1]
        if starts:
            spans.append((i, i + 1))
        else:
            spans[-1] = (spans[-1][0], i + 1)
    return spans


@dataclass
class ScoredText:
    """One scored response. Probabilities are kept as natural logs; `to_dict` gives probabilities."""

    record: dict[str, Any]
    response: str
    token_ids: list[int]
    log_scores: dict[str, np.ndarray]  # token estimator -> (R,) log prob
    entropy: np.ndarray  # (R,)
    dominant_size: np.ndarray  # (R,)
    dominant_mass: np.ndarray  # (R,)
    greedy: np.ndarray | None = None  # (R,) 1.0 where the token is the argmax
    empty_response: bool = False
    finished: bool = True  # False when generation stopped at max_new_tokens
    abstained: bool | None = None  # with `abstain_below`: whether the confidence fell below it
    abstained_at: int | None = None  # ... and at which generated token
    prompt_tokens_dropped: int = 0
    tokenizer: Any = field(default=None, repr=False, compare=False)  # decodes `tokens` when read
    _tokens: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def tokens(self) -> list[str]:
        """Each scored token's text (`tokenizer.decode([t])`), decoded on first use."""
        if self._tokens is None:
            if self.tokenizer is None:
                raise ValueError("this ScoredText has no tokenizer to decode its tokens with")
            self._tokens = token_pieces(self.tokenizer, self.token_ids)
        return self._tokens

    def __getstate__(self) -> dict:  # pickles without the tokenizer, its token texts decoded
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["_tokens"], state["tokenizer"] = (
            self.tokens if self.tokenizer is not None else self._tokens,
            None,
        )
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def estimators(self) -> list[str]:
        return [e for e in TOKEN_ESTIMATORS if e in self.log_scores]

    def words(self) -> tuple[list[str], dict[str, list[float]]]:
        """Words and their probability per estimator (product of the pieces' probabilities)."""
        spans = word_spans(self.tokens)
        text = ["".join(self.tokens[a:b]) for a, b in spans]
        scores = {
            e: [float(np.exp(self.log_scores[e][a:b].sum())) for a, b in spans] for e in self.estimators
        }
        return text, scores

    def sequence_scores(self) -> dict[str, float]:
        """`{estimator}_{aggregation}` for every probability estimator; `entropy_mean`, `entropy_max`."""
        names = self.estimators
        rows = aggregate_rows(np.stack([self.log_scores[e] for e in names])) if names else {}
        out = {f"{e}_{agg}": rows[agg][i] for i, e in enumerate(names) for agg in SEQUENCE_AGGREGATIONS}
        out["entropy_mean"] = float(self.entropy.mean())
        out["entropy_max"] = float(self.entropy.max())
        return out

    def summary(self, digits: int = 6) -> dict[str, Any]:
        """A compact record of this response: sequence scores, token count and per-token scores
        (rounded); what the lm-eval model attaches to each output."""
        tokens = {"text": self.tokens, "id": list(self.token_ids)}
        names = self.estimators
        if names:  # every estimator's list in one exp, one round and one `tolist`
            lists = np.exp(np.stack([self.log_scores[e] for e in names])).round(digits).tolist()
            tokens.update(zip(names, lists))
        tokens["entropy"] = self.entropy.round(digits).tolist()
        return {
            "response": self.response,
            "sequence": self.sequence_scores(),
            "n_tokens": len(self.token_ids),
            "empty_response": self.empty_response,
            **self._abstention(),
            "tokens": tokens,
        }

    def _abstention(self) -> dict[str, Any]:
        if self.abstained is None:
            return {}
        return {"abstained": self.abstained, "abstained_at": self.abstained_at}

    def to_dict(self) -> dict[str, Any]:
        words, word_scores = self.words()
        tokens = {"text": self.tokens, "id": self.token_ids}
        tokens.update({e: np.exp(self.log_scores[e]).tolist() for e in self.estimators})
        tokens["entropy"] = self.entropy.tolist()
        tokens["dominant_size"] = self.dominant_size.astype(int).tolist()
        tokens["dominant_mass"] = self.dominant_mass.tolist()
        return {
            **self.record,
            "response": self.response,
            "n_tokens": len(self.token_ids),
            "empty_response": self.empty_response,
            "finished": self.finished,
            "prompt_tokens_dropped": self.prompt_tokens_dropped,
            **self._abstention(),
            "sequence": self.sequence_scores(),
            "words": {"text": words, **word_scores},
            "tokens": tokens,
        }


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    index: int
    record: dict[str, Any]
    prompt_ids: list[int]
    response_ids: list[int]  # the scored tokens
    empty_response: bool = False
    dropped: int = 0
    response: str | None = None  # the response's text (chat content parts joined)


def _uses_chat_template(tokenizer, options: ScoringOptions) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if options.chat_template and not has:
        raise ValueError(
            "`chat_template=True` but the tokenizer has no chat template; pass `chat_template=False` to "
            "score plain prompt + response text."
        )
    return has if options.chat_template is None else bool(options.chat_template)


def _check_token_ids(ids, vocab: int, index: int, key: str) -> list[int]:
    """`ids` as a list of Python ints, checked in a few numpy calls, not a Python check per token."""
    arr = np.asarray(ids) if isinstance(ids, (list, tuple, np.ndarray)) else None
    if arr is None or arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"record {index}: `{key}` should be a list of integer token ids")
    outside = (arr < 0) | (arr >= vocab)
    if outside.any():
        raise ValueError(
            f"record {index}: `{key}` holds ids outside the model's vocabulary [0, {vocab}): "
            f"{arr[outside][:5].tolist()}"
        )
    return arr.tolist()


def _content_text(content, index: int, turn: int) -> str:
    """A message's text: a string, or a list of text parts joined as chat templates join them
    (`{"type": "text", "text": ...}` dicts or plain strings)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise TypeError(
                    f"record {index}, message {turn}: a `content` part should be a string or a "
                    f"{{'type': 'text', 'text': ...}} dict, got {part!r}"
                )
        return "".join(texts)
    raise TypeError(
        f"record {index}, message {turn}: `content` should be a string or a list of text parts, got "
        f"{type(content).__name__}" + (" (null)" if content is None else "")
    )


def _split_record(
    record: Mapping[str, Any], index: int, need_response: bool
) -> tuple[list[dict], str | None]:
    """(prompt messages, response text) of a record in either accepted shape."""
    if not isinstance(record, Mapping):
        raise TypeError(f"record {index} should be a dict, got {type(record).__name__}")
    if "prompt_token_ids" in record:  # already templated and tokenised (the lm-eval model does this)
        response = record.get("response")
        if need_response and response is None:
            raise ValueError(f"record {index}: has `prompt_token_ids` but no `response` to score")
        return [], response
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise TypeError(f"record {index}: `messages` should be a list of {{'role', 'content'}} dicts")
        messages = [
            {**m, "content": _content_text(m.get("content"), index, j)} for j, m in enumerate(messages)
        ]
        if messages and messages[-1].get("role") == "assistant":
            return messages[:-1], messages[-1]["content"]
        if need_response:
            raise ValueError(
                f"record {index}: the last message should be the assistant's response to score, got role "
                f"{messages[-1].get('role') if messages else None!r}"
            )
        return messages, None
    if "prompt" in record:
        response = record.get("response")
        if need_response and response is None:
            raise ValueError(f"record {index}: has `prompt` but no `response` to score")
        if not isinstance(record["prompt"], str) or (response is not None and not isinstance(response, str)):
            raise TypeError(f"record {index}: `prompt` and `response` should be strings")
        return [{"role": "user", "content": record["prompt"]}], response
    raise ValueError(
        f"record {index} has keys {sorted(record)}; accepted: `messages` (chat turns, the last one the "
        "assistant's response), `prompt` with `response`, or `prompt_token_ids` with `response`"
    )


def eos_ids(model, tokenizer) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS first (the one scored for empty responses), then the
    generation config's; ids outside the model's vocabulary are ignored."""
    vocab = model.get_output_embeddings().weight.shape[0]
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and 0 <= int(i) < vocab and int(i) not in ids:
                ids.append(int(i))
    return ids


def encode_records(model, tokenizer, records, options: ScoringOptions, need_response: bool) -> list[Encoded]:
    """Each record as prompt and response token ids (the engine's own encoding: chat template,
    EOS, truncation), checked: shapes, types and token ids."""
    chat = _uses_chat_template(tokenizer, options)
    eos = eos_ids(model, tokenizer)
    max_len = options.max_length or model_context_length(model)
    vocab = unwrap(model).get_output_embeddings().weight.shape[0]
    encoded = []
    for i, record in enumerate(records):
        messages, response = _split_record(record, i, need_response)
        given = {
            key: _check_token_ids(record[key], vocab, i, key)
            for key in ("prompt_token_ids", "response_token_ids")
            if record.get(key) is not None
        }
        if "prompt_token_ids" in record:
            prompt_ids = given.get("prompt_token_ids", [])
            if not prompt_ids:
                raise ValueError(f"record {i}: `prompt_token_ids` is empty; give at least a BOS token")
        elif chat:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
            prompt_ids = tokenizer(prompt)["input_ids"] if prompt else []
            if not prompt_ids:
                # The first response token needs a context: the BOS token, or EOS as GPT-2 does.
                start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (eos or [None])[0]
                if start is None:
                    raise ValueError(f"record {i}: empty prompt and the tokenizer has no BOS or EOS token")
                prompt_ids = [start]
        item = Encoded(i, dict(record), list(prompt_ids), [], response=response)
        if response is not None:
            ids = (
                given.get("response_token_ids") or tokenizer(response, add_special_tokens=False)["input_ids"]
            )
            if options.include_eos or not ids:
                if not eos:
                    raise ValueError(
                        f"record {i}: the response is empty after tokenisation and the tokenizer has no EOS "
                        "token to score in its place"
                    )
                item.empty_response = not ids
                ids = list(ids) + [eos[0]]
            item.response_ids = list(ids)
        total = len(item.prompt_ids) + len(item.response_ids) + (0 if response is not None else 1)
        if max_len is not None and total > max_len:
            over = total - max_len
            too_long = over >= len(item.prompt_ids)
            if options.truncation == "error" or too_long:
                raise ValueError(
                    f"record {i} is {total} tokens long, more than `max_length` = {max_len}; shorten it, "
                    "raise `max_length`, or pass `truncation='left'` to drop prompt tokens"
                    + (" (the response alone is too long for that)" if too_long else "")
                )
            warnings.warn(
                f"record {i}: dropped {over} prompt tokens from the left to fit {max_len} tokens",
                stacklevel=2,
            )
            item.prompt_ids = item.prompt_ids[over:]
            item.dropped = over
        encoded.append(item)
    return encoded


def fit_response(ctx: list[int], cont: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Context and continuation cut to fit the model's context, as lm-eval's HFLM does: a
    continuation longer than the context window keeps its last `max_length - 1` tokens (with a
    warning) after one context token; shorter ones keep all their tokens (scoring with
    `truncation='left'` then drops context from the left)."""
    if max_length is None or len(cont) < max_length:
        return ctx, cont
    warnings.warn(
        f"a continuation of {len(cont)} tokens is longer than the model's context ({max_length}); only "
        f"its last {max_length - 1} tokens are scored",
        stacklevel=2,
    )
    return ctx[-1:] or ctx, cont[-(max_length - 1) :]


def model_context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# The two ways in: force-decoding (`score`) and generation (`generate`)
# ---------------------------------------------------------------------------------------------
def active_head_layer(model):
    """The model's `SigmoidHeadLayer` when a Sigmoid Head adapter is active on it, else None."""
    from .adapter import SigmoidHeadLayer

    head = unwrap(model).get_output_embeddings()
    if isinstance(head, SigmoidHeadLayer) and head.active_head() is not None:
        return head
    return None


def active_head(model) -> torch.Tensor | None:
    """The active Sigmoid Head weight `(V, H)` of `model`, or None (no adapter, or disabled)."""
    layer = active_head_layer(model)
    return None if layer is None else layer.active_head()


def _device(model) -> torch.device:
    from .frozen import input_device

    return input_device(model)


def padding_id(model, tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else the first end-of-turn id."""
    return _pad_id(tokenizer, eos_ids(unwrap(model), tokenizer))


def _pad_id(tokenizer, eos: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if eos:
        return eos[0]
    raise ValueError(
        "The tokenizer has no pad token and no EOS token to pad with; set `tokenizer.pad_token` first."
    )


#: What a batch's scores hold besides the token estimators, in the order they are copied to the host.
_TOKEN_STATS = ("entropy", "dominant_size", "dominant_mass", "greedy")


def scores_to_host(scores: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A batch's (N,) score tensors as float64 numpy arrays, in one device-to-host copy: every
    estimator is stacked into one (E, N) tensor first, so the copy count does not grow with the
    number of outputs or estimators."""
    keys = [k for k in (*TOKEN_ESTIMATORS, *_TOKEN_STATS) if k in scores]
    stacked = torch.stack([scores[k].detach().to(torch.float64) for k in keys]).cpu().numpy()  # (E, N)
    return dict(zip(keys, stacked))


def build_result(
    item: Encoded,
    tokenizer,
    targets: list[int],
    host: Mapping[str, np.ndarray],
    rows: slice,
    response: str | None = None,
    finished: bool = True,
) -> ScoredText:
    """One output's `ScoredText` from its batch's host scores (`scores_to_host`): views of `rows`,
    no copy; its token texts are decoded only when read."""
    return ScoredText(
        record=item.record,
        response=_response_text(item) if response is None else response,
        token_ids=list(targets),
        log_scores={e: host[e][rows] for e in TOKEN_ESTIMATORS if e in host},
        entropy=host["entropy"][rows],
        dominant_size=host["dominant_size"][rows],
        dominant_mass=host["dominant_mass"][rows],
        greedy=host["greedy"][rows] if "greedy" in host else None,
        empty_response=item.empty_response,
        finished=finished,
        prompt_tokens_dropped=item.dropped,
        tokenizer=tokenizer,
    )


def _response_text(item: Encoded) -> str:
    return "" if item.response is None else str(item.response)


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def score(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    options: ScoringOptions | None = None,
    progress: bool = True,
) -> list[ScoredText]:
    """Force-decodes each record's response and scores every response token.

    `records`: dicts with `prompt` and `response`, or `messages` whose last turn is the assistant's
    response. Other keys are carried into the results. `model` may be a PeftModel with a Sigmoid
    Head, a transformers model with one loaded, or a plain model (then the softmax baselines only).
    Returns one `ScoredText` per record, in order.
    """
    from tqdm.auto import tqdm

    options = options or ScoringOptions()
    base = unwrap(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return _score_seq2seq(model, tokenizer, records, options, progress)
    items = encode_records(base, tokenizer, records, options, need_response=True)
    head = active_head_layer(model)
    pad = _pad_id(tokenizer, eos_ids(base, tokenizer))
    auto = options.batch_size == "auto"
    size = auto_batch_start(_device(model)) if auto else options.batch_size
    # Batches of similar length waste less on padding; results go back in input order. With `auto`
    # the longest come first, so that a batch too large for the device fails at once.
    order = sorted(items, key=lambda it: len(it.prompt_ids) + len(it.response_ids), reverse=auto)
    results: list[ScoredText | None] = [None] * len(items)
    total = sum(len(it.response_ids) for it in items)
    bar = tqdm(total=total, desc="scoring", unit="tok", unit_scale=True, disable=not progress)
    start = 0
    while start < len(order):
        batch = order[start : start + size]
        try:
            frozen = frozen_pass(
                model,
                [it.prompt_ids + it.response_ids for it in batch],
                [len(it.prompt_ids) for it in batch],
                pad,
            )
            scores = token_scores(
                frozen.logits,
                frozen.targets,
                frozen.hidden if head is not None else None,
                head,
                options,
            )
            host = scores_to_host(scores)
        except torch.OutOfMemoryError:
            if not auto or size == 1:
                raise
            frozen = scores = None
            size //= 2  # HFLM's `batch_size=auto` halves too; the size that fits is kept
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        offset = 0
        for it, r in zip(batch, frozen.counts):
            results[it.index] = build_result(it, tokenizer, it.response_ids, host, slice(offset, offset + r))
            offset += r
        start += len(batch)
        bar.update(sum(frozen.counts))
    bar.close()
    return results  # type: ignore[return-value]


#: Records in the first batch of `batch_size='auto'` off the CPU; halved until a batch fits.
AUTO_BATCH_START = 512
#: On a CPU, batches past 8 records only add padding: the matrix products are as fast per token.
CPU_AUTO_BATCH = 8


def _fixed(options: ScoringOptions) -> int:
    if options.batch_size == "auto":
        raise ValueError(
            "`batch_size='auto'` is for force-decoding decoder-only models (`score`); give generation "
            "and encoder-decoder models a number of records, e.g. batch_size=8"
        )
    return options.batch_size


def auto_batch_start(device: torch.device) -> int:
    """The first batch size `batch_size='auto'` tries on `device`."""
    return CPU_AUTO_BATCH if device.type == "cpu" else AUTO_BATCH_START


def _score_seq2seq(model, tokenizer, records, options, progress) -> list[ScoredText]:
    from tqdm.auto import tqdm

    base = unwrap(model)
    opts = ScoringOptions(**{f.name: getattr(options, f.name) for f in fields(options)})
    opts.chat_template = False  # the prompt is the encoder's input, as the model was trained
    items = encode_records(base, tokenizer, records, opts, need_response=True)
    head = active_head_layer(model)
    device = _device(model)
    pad = _pad_id(tokenizer, eos_ids(base, tokenizer))
    results: list[ScoredText | None] = [None] * len(items)
    for batch in tqdm(list(_batches(items, _fixed(options))), desc="scoring", disable=not progress):
        enc = right_pad([it.prompt_ids for it in batch], pad)
        labels = right_pad([it.response_ids for it in batch], -100)[0]
        with HeadInputs(model) as capture:
            logits = base(
                input_ids=enc[0].to(device), attention_mask=enc[1].to(device), labels=labels.to(device)
            ).logits  # (B, L, V): position t predicts label t
        hidden = capture.captured[-1]
        for b, it in enumerate(batch):
            r = len(it.response_ids)
            scores = token_scores(
                logits[b, :r],
                torch.tensor(it.response_ids, device=device),
                hidden[b, :r],
                head,
                options,
            )
            results[it.index] = build_result(
                it, tokenizer, it.response_ids, scores_to_host(scores), slice(0, r)
            )
    return results  # type: ignore[return-value]


def first_end(tokens: np.ndarray, eos: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For generated `tokens` (B, S): whether each row holds an end-of-turn id of `eos`, and the
    index of its first one (S where there is none), for the whole batch at once."""
    hit = np.isin(tokens, np.asarray(list(eos), dtype=tokens.dtype))  # (B, S)
    stopped = hit.any(1)
    return stopped, np.where(stopped, hit.argmax(1), tokens.shape[1])


class StepScores:
    """Scores every generated token from the step that produced it, while `generate` runs.

    A forward hook on the model keeps each step's logits (B, V) and the head's input (B, H); the
    next step's forward pre-hook reads the tokens just chosen (its input ids). On an accelerator,
    steps whose tokens are known are scored together once they fill a chunk (`chunk_rows`, chosen
    by device), so the estimators run as a few large passes, not a series of small ones per step;
    on a CPU each step is scored at once (`_due`). At most a chunk of logits is held, never
    (B, S, V). Rows past a sequence's end are scored too and never read, so
    the host never has to look at the tokens while generating; `finish` scores what is left and
    copies the whole batch to the host at once.

        with StepScores(model, options) as steps:
            sequences = model.generate(...)
        host = steps.finish(sequences[:, width:])  # estimator -> (B * S,), row-major
    """

    def __init__(self, model, options: ScoringOptions | None = None):
        self.base = unwrap(model)
        self.head = active_head_layer(model)
        self.options = options or ScoringOptions()
        self.scored: list[dict[str, torch.Tensor]] = []  # chunks of steps, step-major (k * B,)
        self.n_steps = 0
        self._inputs = HeadInputs(model, last_only=True)
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the newest step
        self._known: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []  # its tokens known

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self._pending is not None and ids is not None:
            self._chosen(ids[:, -1])

    def _after(self, module, args, kwargs, output):
        logits, hidden = self._inputs.step(output)  # (B, V), (B, H)
        if self.head is not None and hidden is None:
            raise RuntimeError("the model's generate loop did not call the output head at this step")
        self._pending = (logits, hidden)

    def _chosen(self, tokens: torch.Tensor) -> None:
        logits, hidden = self._pending
        self._pending = None
        self._known.append((logits, hidden, tokens.to(logits.device)))
        if self._due(logits):
            self._flush()

    def _due(self, logits: torch.Tensor) -> bool:
        """Whether the steps whose tokens are known are scored now. On a CPU at every step: holding
        several steps' logits costs fresh memory pages, more than the kernels it would save (+4.1 %
        against +2.6 % of generation time, measured with `bench/bench_scoring.py`). Elsewhere once
        they fill a chunk."""
        if self.options.chunk_rows is None and host_reads_are_free(logits.device):
            return True
        rows = chunk_rows(logits.device, logits.shape[-1], self.options.chunk_rows)
        return len(self._known) * logits.shape[0] >= rows

    @torch.no_grad()
    def _flush(self) -> None:
        if not self._known:
            return
        logits, hidden, tokens = zip(*self._known)
        self.n_steps += len(self._known)
        self._known = []
        self.scored.append(
            token_scores(
                torch.cat(logits),  # (k * B, V), step-major
                torch.cat(tokens),
                None if self.head is None else torch.cat(hidden),
                self.head,
                self.options,
            )
        )

    def __enter__(self):
        self._inputs.__enter__()
        self._handles = [
            self.base.register_forward_pre_hook(self._before, with_kwargs=True),
            self.base.register_forward_hook(self._after, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._inputs.__exit__(*exc)

    def finish(self, generated: torch.Tensor) -> dict[str, np.ndarray]:
        """The batch's scores on the host, from the generated tokens `generated` (B, S):
        `{estimator: (B * S,)}`, row `b`'s step `s` at `b * S + s`."""
        if self._pending is not None:
            self._chosen(generated[:, -1])
        self._flush()
        batch, steps = generated.shape
        if self.n_steps != steps:
            raise RuntimeError(
                f"scored {self.n_steps} steps for {steps} generated tokens; the model's generate loop "
                "calls the model an unexpected number of times"
            )
        if not self.scored:
            return {}
        flat = {  # step-major (S * B,) -> row-major (B * S,)
            k: torch.cat([part[k] for part in self.scored]).view(steps, batch).t().reshape(-1)
            for k in self.scored[0]
        }
        return scores_to_host(flat)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    options: ScoringOptions | None = None,
    generation: GenerationOptions | None = None,
    progress: bool = True,
) -> list[ScoredText]:
    """Generates a response to each record and scores its tokens as they are generated.

    The scores come from the same logits and head inputs that produced the tokens: no second
    forward pass. `softmax` is the model's raw distribution (before temperature or top-p).
    `records`: dicts with `prompt`, or `messages` (the conversation so far).
    """
    from tqdm.auto import tqdm

    options = options or ScoringOptions()
    generation = generation or GenerationOptions()
    base = unwrap(model)
    if getattr(base.config, "is_encoder_decoder", False):
        raise ValueError("`generate` supports decoder-only models; use `score` for encoder-decoder models")
    eos = eos_ids(base, tokenizer)
    pad = _pad_id(tokenizer, eos)
    items = encode_records(base, tokenizer, records, options, need_response=False)
    device = _device(model)
    results: list[ScoredText] = []
    for n, batch in enumerate(
        tqdm(list(_batches(items, _fixed(options))), desc="generating", disable=not progress)
    ):
        width = max(len(it.prompt_ids) for it in batch)
        # Left padding: every prompt ends at the same column, where generation continues.
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, it in enumerate(batch):
            input_ids[b, width - len(it.prompt_ids) :] = torch.tensor(it.prompt_ids)
            mask[b, width - len(it.prompt_ids) :] = 1
        sampling = (
            {"do_sample": True, "temperature": generation.temperature, "top_p": generation.top_p}
            if generation.do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        torch.manual_seed(generation.seed + n)
        rule = _abstention_rule(model, generation, options)
        try:
            with StepScores(model, options) as steps:
                out = base.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=generation.max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=eos or None,
                    return_dict_in_generate=True,
                    **({"stopping_criteria": rule.as_list()} if rule is not None else {}),
                    **sampling,
                )
        finally:
            if rule is not None:
                rule.close()
        generated = out.sequences[:, width:]  # (B, S)
        host = steps.finish(generated)
        tokens = generated.cpu().numpy()  # (B, S)
        stopped, ends = first_end(tokens, eos)
        if rule is not None:
            abstained, at = rule.abstained.cpu().numpy(), rule.abstained_at.cpu().numpy()
        for b, it in enumerate(batch):
            end, stop = int(ends[b]), bool(stopped[b])
            if rule is not None and abstained[b] and at[b] < end:  # stopped by the rule: cut after it
                end, stop = int(at[b]) + 1, False
            keep = end + 1 if (stop and (options.include_eos or end == 0)) else end
            it.empty_response = end == 0
            start = b * tokens.shape[1]
            result = build_result(
                it,
                tokenizer,
                tokens[b, :keep].tolist(),
                host,
                slice(start, start + keep),
                response=tokenizer.decode(tokens[b, :end].tolist(), skip_special_tokens=True),
                finished=stop,
            )
            if rule is not None:
                result.abstained = bool(abstained[b] and at[b] < keep)
                result.abstained_at = int(at[b]) if result.abstained else None
            results.append(result)
    return results


def _abstention_rule(model, generation: GenerationOptions, options: ScoringOptions):
    """The decode-time abstention rule `generation` asks for, or None."""
    if generation.abstain_below is None:
        return None
    from .abstain import AbstainBelow

    return AbstainBelow(model, generation.abstain_below, generation.abstain_confidence, options)
