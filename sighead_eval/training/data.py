"""Training data: loading, the three accepted shapes, response-only masking, the dev split.

Shapes (detected from the columns):
- `messages`: chat turns; the last assistant turn is the response, the rest the prompt;
- `prompt` / `response` columns;
- `text`: plain text, every token after the first is trained (no prompt);
- `src` / `mt` / `annotations` / `lp`: the MQM error-span schema (`RicardoRei/wmt-mqm-error-spans`):
  the translation `mt` is the response to the authors' prompt ("Translate the following text from
  <source language> into <target language>. ..."), as the authors' code formats it.

Error spans (`error_spans=True`, the authors' supervised variant): character spans of the response,
`[start, end)`, from the MQM schema's `annotations` (their `start` and `end`) or, in any other
shape, from an `error_spans` column (`[[start, end], ...]` or `[{"start": .., "end": ..}, ...]`). A
token is an error when it covers a character inside a span (`spans.token_labels`, the rule the
word-level tasks score with); a row with no span is all correct.

Encoding is the scoring engine's own (`scoring.encode_records`), so the head is trained on exactly the
tokens it will later score: prompt, system and chat-template tokens are masked out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import check_utf8, looks_like_a_path

SHAPES = {
    "messages": ("messages",),
    "prompt/response": ("prompt", "response"),
    "text": ("text",),
    "mqm": ("src", "mt", "annotations", "lp"),
}
FILE_TYPES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
BUILTIN_SOURCES = ("sighead:wiki", "sighead:wiki-swapped")
#: The column of error spans in the local layout (any shape but `mqm`, whose spans are `annotations`).
ERROR_SPANS = "error_spans"
#: The authors' language names for MQM language pairs (`lp`, e.g. 'en-de').
LANGUAGES = {
    "en": "English", "de": "German", "zh": "Chinese", "ru": "Russian", "is": "Icelandic", "hi": "Hindi",
    "ja": "Japanese", "es": "Spanish", "uk": "Ukrainian", "cs": "Czech",
}  # fmt: skip


#: Which tokens of a chat row are trained: the last response's own tokens (the tokens `score`
#: scores), or every assistant turn with the template's closing tokens, its end-of-turn token
#: among them (the authors' current code).
TRAIN_TURNS = ("last", "all")


@dataclass
class Example:
    ids: list[int]  # prompt + response tokens
    start: int  # index of the first trained (response) token
    positions: tuple[int, ...] | None = None  # the trained indices, where they are not all of ids[start:]
    errors: tuple[int, ...] | None = None  # with error spans: 1 for each trained token inside one

    @property
    def n_targets(self) -> int:
        return len(self.ids) - self.start if self.positions is None else len(self.positions)

    @property
    def targets(self) -> list[int]:
        """The trained tokens, in order."""
        if self.positions is None:
            return self.ids[self.start :]
        return [self.ids[t] for t in self.positions]


def error_flags(examples: Sequence[Example], device=None):
    """(N,) bool over the examples' trained tokens in order, True inside an error span; None when no
    example carries error labels."""
    if all(e.errors is None for e in examples):
        return None
    import torch

    flags = [x for e in examples for x in (e.errors if e.errors is not None else (0,) * e.n_targets)]
    return torch.tensor(flags, dtype=torch.bool, device=device)


def detect_shape(columns: Sequence[str]) -> str:
    for shape, needed in SHAPES.items():
        if all(c in columns for c in needed):
            return shape
    accepted = "; ".join(" + ".join(f"`{c}`" for c in cols) for cols in SHAPES.values())
    raise ValueError(f"the training data has columns {sorted(columns)}; accepted shapes: {accepted}")


def load_records(source: str | Sequence[Mapping[str, Any]], split: str | None = None) -> list[dict]:
    """Rows from a list, a built-in source, a local json/jsonl/parquet/csv file or directory, or a
    Hugging Face dataset id."""
    if not isinstance(source, str):
        return [dict(r) for r in source]
    if source == "sighead:wiki":
        from ..sources import wiki_training_records

        return wiki_training_records()
    if source == "sighead:wiki-swapped":
        from ..sources import wiki_swapped_records

        return wiki_swapped_records()
    if source.startswith("sighead:"):
        raise ValueError(f"unknown built-in data source {source!r}; known: {BUILTIN_SOURCES}")
    import datasets

    path = Path(source)
    if not path.exists() and looks_like_a_path(source, tuple(FILE_TYPES)):
        raise FileNotFoundError(
            f"data {source!r}: no such file or directory (it looks like a local path, so the hub is not "
            "asked); check the path, or give a hub dataset id such as 'org/name'"
        )
    if path.is_file():
        kind = FILE_TYPES.get(path.suffix.lower())
        if kind is None:
            raise ValueError(
                f"data file {source!r}: unknown type {path.suffix!r}; accepted: {sorted(FILE_TYPES)}"
            )
        if kind != "parquet":
            check_utf8(path)  # datasets' own error names neither the file nor the line
        data = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        data = datasets.load_dataset(source, split=split or "train")
    return [dict(r) for r in data]


def to_scoring_record(row: Mapping[str, Any], shape: str, index: int = 0) -> dict:
    """A row of `shape` as the scoring engine takes it; a row of another shape is named."""
    missing = [c for c in SHAPES[shape] if c not in row or row[c] is None]
    if missing:
        raise ValueError(
            f"training row {index} has keys {sorted(row)} but the data's shape is {shape!r} (from its first "
            f"row): it lacks {missing}. Give every row the same shape."
        )
    if shape == "messages":
        return {"messages": row["messages"]}
    if shape == "prompt/response":
        return {"prompt": str(row["prompt"]), "response": str(row["response"])}
    if shape == "mqm":
        source, target = _languages(row["lp"], index)
        prompt = (
            f"Translate the following text from {source} into {target}.\n{source}: {row['src']}.\n{target}: "
        )
        return {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": " " + row["mt"]},
            ]
        }
    return {"prompt": "", "response": str(row["text"])}


def _languages(lp, index: int) -> tuple[str, str]:
    parts = str(lp).split("-")
    if len(parts) != 2 or any(p not in LANGUAGES for p in parts):
        raise ValueError(
            f"training row {index}: language pair `lp` {lp!r} is not 'xx-yy' with codes the authors' prompt "
            f"names; accepted codes: {', '.join(LANGUAGES)}"
        )
    return LANGUAGES[parts[0]], LANGUAGES[parts[1]]


def check_error_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    """Every row's error spans read and checked against its response's text, before any model loads
    (`error_spans` raises on the first bad row, naming it)."""
    if not rows:
        return
    shape = detect_shape(list(rows[0].keys()))
    for i, row in enumerate(rows):
        record = to_scoring_record(row, shape, i)
        response = record.get("response")
        if response is None:
            last = record["messages"][-1] if record["messages"] else {}
            response = last.get("content") if isinstance(last.get("content"), str) else ""
        error_spans(row, shape, response, i)


def error_spans(row: Mapping[str, Any], shape: str, response: str, index: int = 0) -> list[tuple[int, int]]:
    """The row's error spans as `[start, end)` characters of `response` (an MQM span is shifted by
    the space the authors' format puts before the translation; an omission, start < 0, has no
    characters and is dropped). A malformed span is named with its row."""
    if shape == "mqm":
        raw, column, shift = row.get("annotations") or [], "annotations", 1
    else:
        if ERROR_SPANS not in row:
            raise ValueError(
                f"training row {index} has no `{ERROR_SPANS}` column, which error-span training reads: give "
                f"`{ERROR_SPANS}: [[start, end], ...]` (characters of the response; [] for none), or rows in "
                "the MQM schema (`src`, `mt`, `annotations`, `lp`)"
            )
        raw, column, shift = row[ERROR_SPANS] or [], ERROR_SPANS, 0
    spans = []
    if not isinstance(raw, (list, tuple)):
        raise ValueError(
            f"training row {index}: `{column}` is {raw!r}; it should be a list of spans, [[start, end], ...]"
        )
    for span in raw:
        if isinstance(span, Mapping):
            start, end = span.get("start"), span.get("end")
        else:
            start, end = tuple(span) if isinstance(span, (list, tuple)) and len(span) == 2 else (None, None)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            raise ValueError(
                f"training row {index}: `{column}` holds {span!r}; each span should be [start, end] or "
                '{"start": start, "end": end}, integer character offsets'
            )
        if start < 0:
            continue
        start, end = start + shift, end + shift
        if not start <= end <= len(response):
            raise ValueError(
                f"training row {index}: error span {span!r} of `{column}` is not inside the response "
                f"({len(response)} characters)"
            )
        spans.append((start, end))
    return spans


def encode_examples(
    model,
    tokenizer,
    rows: Sequence[Mapping],
    max_length: int,
    chat_template: bool | None,
    train_turns: str = "last",
    with_errors: bool = False,
) -> list[Example]:
    """Token ids and the trained tokens of every row; rows with no trained token are dropped.
    `train_turns` (`TRAIN_TURNS`): the last response only, or every assistant turn. `with_errors`:
    each trained token's error label from the row's error spans (`error_spans`)."""
    from ..pieces import token_pieces
    from ..scoring import ScoringOptions, encode_records
    from ..spans import char_labels, char_spans, token_labels

    if not rows:
        raise ValueError("the training data is empty")
    if train_turns not in TRAIN_TURNS:
        raise ValueError(f"`train_turns` should be one of {TRAIN_TURNS}, got {train_turns!r}")
    shape = detect_shape(list(rows[0].keys()))
    chat = False if shape == "text" else (True if chat_template is None else chat_template)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the training data is chat-shaped ({shape}) but the tokenizer has no chat template; "
            "give it one, or pass `chat_template=False` (--no-chat-template) to train on plain text"
        )
    records = [to_scoring_record(r, shape, i) for i, r in enumerate(rows)]
    if with_errors and train_turns != "last":
        raise ValueError(
            "error-span training labels the last response's own tokens (as the authors' MQM mode does): "
            "use train_turns='last'"
        )
    if chat and train_turns == "all":
        examples = [e for e in (encode_turns(tokenizer, r, max_length) for r in records) if e is not None]
        if not examples:
            raise ValueError(
                f"no assistant token is left to train on ({len(rows)} rows, max_length={max_length})"
            )
        return examples
    options = ScoringOptions(chat_template=chat, max_length=10**9)
    examples = []
    for item in encode_records(model, tokenizer, records, options, need_response=True):
        if item.empty_response:
            continue
        ids = (item.prompt_ids + item.response_ids)[:max_length]
        if len(ids) <= len(item.prompt_ids):
            continue
        errors = None
        if with_errors:
            response = item.response
            spans = error_spans(rows[item.index], shape, response, item.index)
            labels = token_labels(
                char_spans(token_pieces(tokenizer, item.response_ids), response),
                char_labels(spans, len(response)),
            )
            errors = tuple(int(x) for x in labels[: len(ids) - len(item.prompt_ids)])
        examples.append(Example(ids=ids, start=len(item.prompt_ids), errors=errors))
    if not examples:
        raise ValueError(
            f"no response token is left to train on after masking ({len(rows)} rows, "
            f"max_length={max_length}): the responses are empty or the prompts fill the whole length"
        )
    return examples


def _template_ids(tokenizer, messages, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
    )
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


def encode_turns(tokenizer, record: Mapping, max_length: int) -> Example | None:
    """Every assistant turn of a chat record trained, as the authors' code trains it: each turn's
    tokens after the generation prompt up to the end of the turn in the template, its end-of-turn
    token and the template's closing tokens included. The turns' spans come from tokenizing each
    prefix of the conversation with the chat template (a turn whose prefix is not a prefix of the
    whole is refused: the template would tokenize it differently in context)."""
    messages = (
        record["messages"]
        if "messages" in record
        else [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["response"]},
        ]
    )
    full = _template_ids(tokenizer, messages, False)
    positions: list[int] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _template_ids(tokenizer, messages[:i], True) if i else []
        through = _template_ids(tokenizer, messages[: i + 1], False)
        if full[: len(through)] != through or through[: len(before)] != before:
            raise ValueError(
                f"the chat template tokenizes assistant turn {i} differently alone than in the whole "
                "conversation, so its tokens cannot be found; train with train_turns='last'"
            )
        positions.extend(range(max(len(before), 1), len(through)))
    ids = full[:max_length]
    positions = [t for t in positions if t < len(ids)]
    if not positions:
        return None
    return Example(ids=ids, start=positions[0], positions=tuple(positions))


def split_dev(examples: list[Example], dev_fraction: float, dev_max: int | None, seed: int):
    """(train, dev): a dev split held out by seed."""
    if not 0 < dev_fraction < 1:
        raise ValueError(f"`dev_fraction` should be in (0, 1), got {dev_fraction!r}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(len(examples) * dev_fraction))
    if dev_max is not None:
        n_dev = min(n_dev, dev_max)
    if n_dev >= len(examples):
        raise ValueError(f"{len(examples)} examples are too few to hold out a dev split")
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return [examples[i] for i in train], [examples[i] for i in dev]
