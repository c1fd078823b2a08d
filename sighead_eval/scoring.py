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
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dominant import DominantSets, boosted_log_prob, check_rule, dominant_from_top, exact_top_k
from .estimators import TOKEN_ESTIMATORS, aggregate
from .frozen import HeadInputs, frozen_pass, right_pad, unwrap

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
    batch_size: int = field(default=8, metadata={"help": "Records per forward pass."})
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

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"`batch_size` should be a positive integer, got {self.batch_size!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"`max_length` should be an integer >= 2 or None, got {self.max_length!r}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"`truncation` should be one of {TRUNCATION}, got {self.truncation!r}")
        check_rule(self.p_jump, self.epsilon, self.dominant_mode, self.dominant_top_k)


@dataclass
class GenerationOptions:
    """How `generate` samples responses."""

    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per response."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with `do_sample`)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with `do_sample`)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler; batch i uses seed + i."})

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` should be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` should be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` should be in (0, 1], got {self.top_p!r}")


# ---------------------------------------------------------------------------------------------
# The per-token core, shared by force-decoding and generation
# ---------------------------------------------------------------------------------------------
#: Rows per vocabulary-sized intermediate: (64, V) float32 tensors stay small enough (12 MB at
#: V = 49k) for the allocator to reuse their memory, where (512, V) ones are fresh pages each
#: time, and the page faults cost as much as the arithmetic.
CHUNK_ROWS = 64


def token_scores(
    logits: torch.Tensor,
    targets: torch.Tensor,
    hidden: torch.Tensor | None = None,
    head=None,
    options: ScoringOptions | None = None,
) -> dict[str, torch.Tensor]:
    """Every estimator for `N` scored positions.

    logits: (N, V) softmax logits; targets: (N,) the tokens scored; hidden: (N, H) the head's
    input; head: the model's `SigmoidHeadLayer` with an active adapter (`active_head_layer`), or
    None for the softmax baselines only. Returns (N,) float32 tensors: log scores for `softmax`,
    `boostedprob`, `ceiling` and, with a head, `sigmoid` and `hybrid`; `entropy`, `dominant_size`,
    `dominant_mass`; `greedy` (1.0 where the token is the softmax's argmax).
    """
    options = options or ScoringOptions()
    if head is not None and hidden is None:
        raise ValueError("`hidden` is needed to score with a Sigmoid Head")
    parts = []
    for start in range(0, max(logits.shape[0], 1), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
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
    tempered = p.sqrt() if CEILING_TEMPERATURE == 2.0 else p.pow(1.0 / CEILING_TEMPERATURE)
    tempered_mass = tempered.sum(-1)  # (n,) the ceiling's softmax proposal, before the dominant cut
    entropy = -p.mul_(logp).sum(-1)  # (n,)
    bad = ~torch.isfinite(entropy)
    if bad.any():  # -inf logits (masked tokens) give 0 * -inf: the guarded formula for those rows
        lp = logp[bad]
        entropy[bad] = -torch.where(lp > -math.inf, lp.exp() * lp, torch.zeros_like(lp)).sum(-1)
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
    """log of the converged head's score under the paper's recipe (`../shared/METHOD.md`): a
    dominant token is never a negative and goes to 1; another settles at p / (p + its expected
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
    tokens: list[str]
    log_scores: dict[str, np.ndarray]  # token estimator -> (R,) log prob
    entropy: np.ndarray  # (R,)
    dominant_size: np.ndarray  # (R,)
    dominant_mass: np.ndarray  # (R,)
    greedy: np.ndarray | None = None  # (R,) 1.0 where the token is the argmax
    empty_response: bool = False
    finished: bool = True  # False when generation stopped at max_new_tokens
    prompt_tokens_dropped: int = 0

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
        out = {}
        for e in self.estimators:
            for agg, value in aggregate(self.log_scores[e]).items():
                out[f"{e}_{agg}"] = value
        out["entropy_mean"] = float(self.entropy.mean())
        out["entropy_max"] = float(self.entropy.max())
        return out

    def summary(self, digits: int = 6) -> dict[str, Any]:
        """A compact record of this response: sequence scores, token count and per-token scores
        (rounded); what the lm-eval model attaches to each output."""
        tokens = {"text": self.tokens}
        tokens.update({e: np.exp(self.log_scores[e]).round(digits).tolist() for e in self.estimators})
        tokens["entropy"] = self.entropy.round(digits).tolist()
        return {
            "response": self.response,
            "sequence": self.sequence_scores(),
            "n_tokens": len(self.token_ids),
            "empty_response": self.empty_response,
            "tokens": tokens,
        }

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
            "sequence": self.sequence_scores(),
            "words": {"text": words, **word_scores},
            "tokens": tokens,
        }


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass
class _Encoded:
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


def _check_token_ids(ids, vocab: int, index: int, key: str) -> None:
    if not isinstance(ids, (list, tuple)) or not all(
        isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in ids
    ):
        raise TypeError(f"record {index}: `{key}` should be a list of integer token ids")
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(
            f"record {index}: `{key}` holds ids outside the model's vocabulary [0, {vocab}): {bad[:5]}"
        )


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


def _eos_ids(model, tokenizer) -> list[int]:
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


def encode_records(model, tokenizer, records, options: ScoringOptions, need_response: bool) -> list[_Encoded]:
    """Each record as prompt and response token ids (the engine's own encoding: chat template,
    EOS, truncation), checked: shapes, types and token ids."""
    chat = _uses_chat_template(tokenizer, options)
    eos = _eos_ids(model, tokenizer)
    max_len = options.max_length or model_context_length(model)
    vocab = unwrap(model).get_output_embeddings().weight.shape[0]
    encoded = []
    for i, record in enumerate(records):
        messages, response = _split_record(record, i, need_response)
        for key in ("prompt_token_ids", "response_token_ids"):
            if record.get(key) is not None:
                _check_token_ids(record[key], vocab, i, key)
        if "prompt_token_ids" in record:
            prompt_ids = [int(t) for t in record["prompt_token_ids"]]
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
        item = _Encoded(i, dict(record), list(prompt_ids), [], response=response)
        if response is not None:
            ids = (
                record.get("response_token_ids") or tokenizer(response, add_special_tokens=False)["input_ids"]
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
    return _pad_id(tokenizer, _eos_ids(unwrap(model), tokenizer))


def _pad_id(tokenizer, eos: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if eos:
        return eos[0]
    raise ValueError(
        "The tokenizer has no pad token and no EOS token to pad with; set `tokenizer.pad_token` first."
    )


def _build_result(
    item: _Encoded,
    tokenizer,
    targets: list[int],
    scores: dict[str, torch.Tensor],
    response: str | None = None,
    finished: bool = True,
) -> ScoredText:
    return ScoredText(
        record=item.record,
        response=_response_text(item) if response is None else response,
        token_ids=list(targets),
        tokens=[tokenizer.decode([t]) for t in targets],
        log_scores={e: scores[e].double().cpu().numpy() for e in TOKEN_ESTIMATORS if e in scores},
        entropy=scores["entropy"].double().cpu().numpy(),
        dominant_size=scores["dominant_size"].cpu().numpy(),
        dominant_mass=scores["dominant_mass"].double().cpu().numpy(),
        greedy=scores["greedy"].cpu().numpy() if "greedy" in scores else None,
        empty_response=item.empty_response,
        finished=finished,
        prompt_tokens_dropped=item.dropped,
    )


def _response_text(item: _Encoded) -> str:
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
    pad = _pad_id(tokenizer, _eos_ids(base, tokenizer))
    # Batches of similar length waste less on padding; results go back in input order.
    order = sorted(items, key=lambda it: len(it.prompt_ids) + len(it.response_ids))
    results: list[ScoredText | None] = [None] * len(items)
    for batch in tqdm(list(_batches(order, options.batch_size)), desc="scoring", disable=not progress):
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
        offset = 0
        for it, r in zip(batch, frozen.counts):
            part = {k: v[offset : offset + r] for k, v in scores.items()}
            results[it.index] = _build_result(it, tokenizer, it.response_ids, part)
            offset += r
    return results  # type: ignore[return-value]


def _score_seq2seq(model, tokenizer, records, options, progress) -> list[ScoredText]:
    from tqdm.auto import tqdm

    base = unwrap(model)
    opts = ScoringOptions(**{f.name: getattr(options, f.name) for f in fields(options)})
    opts.chat_template = False  # the prompt is the encoder's input, as the model was trained
    items = encode_records(base, tokenizer, records, opts, need_response=True)
    head = active_head_layer(model)
    device = _device(model)
    pad = _pad_id(tokenizer, _eos_ids(base, tokenizer))
    results: list[ScoredText | None] = [None] * len(items)
    for batch in tqdm(list(_batches(items, options.batch_size)), desc="scoring", disable=not progress):
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
            results[it.index] = _build_result(it, tokenizer, it.response_ids, scores)
    return results  # type: ignore[return-value]


def _step_scores(step_logits, step_hidden, generated, keeps, head, options) -> list[dict]:
    """Every estimator for the tokens generated, step by step from generate's per-step logits
    (B, V) each, so that no (B, S, V) copy is made; rows past a sequence's end are skipped.
    Returns, per sequence b, `{estimator: (keeps[b],) tensor}`."""
    per_step = []
    for s, z in enumerate(step_logits):
        rows = [b for b, keep in enumerate(keeps) if s < keep]
        if not rows:
            break
        index = torch.tensor(rows, device=z.device)
        all_rows = len(rows) == z.shape[0]
        scored = token_scores(
            z if all_rows else z[index],
            generated[:, s] if all_rows else generated[index, s],
            None if head is None else (step_hidden[s] if all_rows else step_hidden[s][index]),
            head,
            options,
        )
        per_step.append((rows, scored))
    if not per_step:
        return [{} for _ in keeps]
    owner = torch.tensor([b for rows, _ in per_step for b in rows])  # step-major, like `flat`
    flat = {k: torch.cat([scored[k] for _, scored in per_step]) for k in per_step[0][1]}
    out = []
    for b in range(len(keeps)):
        mine = (owner == b).nonzero().squeeze(-1).to(next(iter(flat.values())).device)
        out.append({k: v.index_select(0, mine) for k, v in flat.items()})
    return out


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
    eos = _eos_ids(base, tokenizer)
    pad = _pad_id(tokenizer, eos)
    items = encode_records(base, tokenizer, records, options, need_response=False)
    head = active_head_layer(model)
    device = _device(model)
    results: list[ScoredText] = []
    for n, batch in enumerate(
        tqdm(list(_batches(items, options.batch_size)), desc="generating", disable=not progress)
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
        with HeadInputs(model, last_only=True) as capture:
            out = base.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=generation.max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos or None,
                output_logits=True,
                return_dict_in_generate=True,
                **sampling,
            )
        steps = len(out.logits)
        if len(capture.captured) != steps:
            raise RuntimeError(
                f"captured {len(capture.captured)} head inputs for {steps} generated steps; the model's "
                "generate loop calls the output head an unexpected number of times"
            )
        generated = out.sequences[:, width:]  # (B, S)
        keeps, ends = [], []
        for b in range(len(batch)):
            ids = generated[b].tolist()
            stop = next((i for i, t in enumerate(ids) if t in eos), None)
            end = stop if stop is not None else len(ids)
            ends.append((end, stop is not None))
            keeps.append(end + 1 if (stop is not None and (options.include_eos or end == 0)) else end)
        scores = _step_scores(out.logits, capture.captured, generated, keeps, head, options)
        for b, it in enumerate(batch):
            (end, finished), keep = ends[b], keeps[b]
            it.empty_response = end == 0
            ids = generated[b].tolist()
            results.append(
                _build_result(
                    it,
                    tokenizer,
                    ids[:keep],
                    scores[b],
                    response=tokenizer.decode(ids[:end], skip_special_tokens=True),
                    finished=finished,
                )
            )
    return results
