"""Training data: loading, the three accepted shapes, response-only masking, the dev split.

Shapes (detected from the columns):
- `messages`: chat turns; the last assistant turn is the response, the rest the prompt;
- `prompt` / `response` columns;
- `text`: plain text, every token after the first is trained (no prompt).

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

SHAPES = {"messages": ("messages",), "prompt/response": ("prompt", "response"), "text": ("text",)}
FILE_TYPES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
BUILTIN_SOURCES = ("sighead:wiki",)


@dataclass
class Example:
    ids: list[int]  # prompt + response tokens
    start: int  # index of the first trained (response) token

    @property
    def n_targets(self) -> int:
        return len(self.ids) - self.start


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
    return {"prompt": "", "response": str(row["text"])}


def encode_examples(
    model, tokenizer, rows: Sequence[Mapping], max_length: int, chat_template: bool | None
) -> list[Example]:
    """Token ids and the trained span of every row; rows with no response token are dropped."""
    from ..scoring import ScoringOptions, encode_records

    if not rows:
        raise ValueError("the training data is empty")
    shape = detect_shape(list(rows[0].keys()))
    chat = False if shape == "text" else (True if chat_template is None else chat_template)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the training data is chat-shaped ({shape}) but the tokenizer has no chat template; "
            "give it one, or pass `chat_template=False` (--no-chat-template) to train on plain text"
        )
    records = [to_scoring_record(r, shape, i) for i, r in enumerate(rows)]
    options = ScoringOptions(chat_template=chat, max_length=10**9)
    examples = []
    for item in encode_records(model, tokenizer, records, options, need_response=True):
        if item.empty_response:
            continue
        ids = (item.prompt_ids + item.response_ids)[:max_length]
        if len(ids) > len(item.prompt_ids):
            examples.append(Example(ids=ids, start=len(item.prompt_ids)))
    if not examples:
        raise ValueError(
            f"no response token is left to train on after masking ({len(rows)} rows, "
            f"max_length={max_length}): the responses are empty or the prompts fill the whole length"
        )
    return examples


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
