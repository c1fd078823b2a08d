"""What scoring is given: records (prompt and response, chat messages, or token ids) turned into
checked prompt and response token ids (`encode_records`), the model's end-of-turn and padding ids,
and HFLM's rule for fitting a continuation into the model's window."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..frozen import unwrap
from .options import ScoringOptions


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


def hflm_context_ids(tokenizer, context: str) -> list[int]:
    """A context's token ids as lm-eval's HFLM encodes a causal model's: the tokenizer's special
    tokens, unless the (chat-templated) text already starts with the BOS token; an empty context is
    the BOS token (else EOS)."""
    bos = tokenizer.bos_token
    ids = tokenizer(context, add_special_tokens=not (bos and context.startswith(bos)))["input_ids"]
    if ids:
        return ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("an empty context, and the tokenizer has no BOS or EOS token to start from")
    return [start]


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
