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

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dominant import DominantSets, check_rule, dominant_tokens
from .frozen import HeadInputs, frozen_pass, right_pad, unwrap

PROB_ESTIMATORS = ("sigmoid", "softmax", "boostedprob")
AGGREGATIONS = ("mean", "prod", "sumlog", "meanlog", "min")
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
# The per-token core, shared by force-decoding, generation and training's evaluation
# ---------------------------------------------------------------------------------------------
def token_scores(
    logits: torch.Tensor,
    targets: torch.Tensor,
    hidden: torch.Tensor | None = None,
    head: torch.Tensor | None = None,
    options: ScoringOptions | None = None,
    head_offset: str = "none",
) -> dict[str, torch.Tensor]:
    """Every estimator for `N` scored positions.

    logits: (N, V) softmax logits; targets: (N,) the tokens scored; hidden: (N, H) the head's
    input; head: (V', H) the Sigmoid Head weight, or None; head_offset: the head's offset mode
    ('log_softmax' subtracts the log-sum-exp of `logits`). Returns (N,) float32 tensors: log
    scores for `sigmoid`, `softmax`, `boostedprob`; `entropy`, `dominant_size`, `dominant_mass`;
    `greedy` (1.0 where the token is the softmax's argmax).
    """
    options = options or ScoringOptions()
    logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)  # (N,)
    own = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    sets: DominantSets = dominant_tokens(
        logp,
        p_jump=options.p_jump,
        epsilon=options.epsilon,
        mode=options.dominant_mode,
        top_k=options.dominant_top_k,
    )
    boosted = torch.where(sets.contains(targets), sets.mass.clamp_min(1e-45).log(), own)
    out = {
        "greedy": (logits.argmax(-1) == targets).float(),
        "softmax": own,
        "boostedprob": boosted,
        "entropy": entropy,
        "dominant_size": sets.size.float(),
        "dominant_mass": sets.mass,
    }
    if head is not None:
        if hidden is None:
            raise ValueError("`hidden` is needed to score with a Sigmoid Head")
        rows = F.embedding(targets, head)  # (N, H)
        z = (rows * hidden.to(head.dtype)).sum(-1).float()  # (N,) one dot product per token
        if head_offset == "log_softmax":
            z = z - torch.logsumexp(logits.float(), dim=-1)
        out["sigmoid"] = F.logsigmoid(z)
    return out


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


def aggregate(log_scores: np.ndarray) -> dict[str, float]:
    """Sequence aggregates of per-token log probabilities: mean prob, product, sum and mean of logs, min."""
    logs = np.asarray(log_scores, dtype=np.float64)
    return {
        "mean": float(np.exp(logs).mean()),
        "prod": float(np.exp(logs.sum())),
        "sumlog": float(logs.sum()),
        "meanlog": float(logs.mean()),
        "min": float(np.exp(logs.min())),
    }


@dataclass
class ScoredText:
    """One scored response. Probabilities are kept as natural logs; `to_dict` gives probabilities."""

    record: dict[str, Any]
    response: str
    token_ids: list[int]
    tokens: list[str]
    log_scores: dict[str, np.ndarray]  # estimator -> (R,) log prob
    entropy: np.ndarray  # (R,)
    dominant_size: np.ndarray  # (R,)
    dominant_mass: np.ndarray  # (R,)
    greedy: np.ndarray | None = None  # (R,) 1.0 where the token is the argmax
    empty_response: bool = False
    finished: bool = True  # False when generation stopped at max_new_tokens
    prompt_tokens_dropped: int = 0

    @property
    def estimators(self) -> list[str]:
        return [e for e in PROB_ESTIMATORS if e in self.log_scores]

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


def _uses_chat_template(tokenizer, options: ScoringOptions) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if options.chat_template and not has:
        raise ValueError(
            "`chat_template=True` but the tokenizer has no chat template; pass `chat_template=False` to "
            "score plain prompt + response text."
        )
    return has if options.chat_template is None else bool(options.chat_template)


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
        if messages and messages[-1].get("role") == "assistant":
            return [dict(m) for m in messages[:-1]], str(messages[-1].get("content", ""))
        if need_response:
            raise ValueError(
                f"record {index}: the last message should be the assistant's response to score, got role "
                f"{messages[-1].get('role') if messages else None!r}"
            )
        return [dict(m) for m in messages], None
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


def _encode(model, tokenizer, records, options: ScoringOptions, need_response: bool) -> list[_Encoded]:
    chat = _uses_chat_template(tokenizer, options)
    eos = _eos_ids(model, tokenizer)
    max_len = options.max_length or model_context_length(model)
    encoded = []
    for i, record in enumerate(records):
        messages, response = _split_record(record, i, need_response)
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
        item = _Encoded(i, dict(record), list(prompt_ids), [])
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


def model_context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# The frozen pass
# ---------------------------------------------------------------------------------------------
def active_head(model) -> torch.Tensor | None:
    """The active Sigmoid Head weight `(V, H)` of `model`, or None (no adapter, or disabled)."""
    from .adapter import SigmoidHeadLayer

    head = unwrap(model).get_output_embeddings()
    return head.active_head() if isinstance(head, SigmoidHeadLayer) else None


def active_head_offset(model) -> str:
    """The active Sigmoid Head's offset mode ('none' without a head)."""
    from .adapter import SigmoidHeadLayer

    head = unwrap(model).get_output_embeddings()
    return head.active_offset() if isinstance(head, SigmoidHeadLayer) else "none"


def _device(model) -> torch.device:
    return next(unwrap(model).parameters()).device


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
        log_scores={e: scores[e].double().cpu().numpy() for e in PROB_ESTIMATORS if e in scores},
        entropy=scores["entropy"].double().cpu().numpy(),
        dominant_size=scores["dominant_size"].cpu().numpy(),
        dominant_mass=scores["dominant_mass"].double().cpu().numpy(),
        greedy=scores["greedy"].cpu().numpy() if "greedy" in scores else None,
        empty_response=item.empty_response,
        finished=finished,
        prompt_tokens_dropped=item.dropped,
    )


def _response_text(item: _Encoded) -> str:
    if "messages" in item.record:
        return str(item.record["messages"][-1].get("content", ""))
    return str(item.record.get("response", ""))


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
    items = _encode(base, tokenizer, records, options, need_response=True)
    head = active_head(model)
    head_offset = active_head_offset(model)
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
            head_offset,
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
    items = _encode(base, tokenizer, records, opts, need_response=True)
    head = active_head(model)
    head_offset = active_head_offset(model)
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
                head_offset,
            )
            results[it.index] = _build_result(it, tokenizer, it.response_ids, scores)
    return results  # type: ignore[return-value]


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
    items = _encode(base, tokenizer, records, options, need_response=False)
    head = active_head(model)
    head_offset = active_head_offset(model)
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
        logits = torch.stack(out.logits, dim=1)  # (B, S, V)
        hidden = torch.stack(capture.captured, dim=1)  # (B, S, H)
        generated = out.sequences[:, width:]  # (B, S)
        for b, it in enumerate(batch):
            ids = generated[b].tolist()
            stop = next((i for i, t in enumerate(ids) if t in eos), None)
            finished = stop is not None
            end = stop if finished else len(ids)
            keep = end + 1 if (finished and (options.include_eos or end == 0)) else end
            it.empty_response = end == 0
            targets = ids[:keep]
            scores = token_scores(
                logits[b, :keep],
                generated[b, :keep],
                hidden[b, :keep] if head is not None else None,
                head,
                options,
                head_offset,
            )
            results.append(
                _build_result(
                    it,
                    tokenizer,
                    targets,
                    scores,
                    response=tokenizer.decode(ids[:end], skip_special_tokens=True),
                    finished=finished,
                )
            )
    return results
