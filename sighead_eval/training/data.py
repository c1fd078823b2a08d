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


#: Which tokens of a chat row are trained: the last response's own tokens (the tokens `score`
#: scores), or every assistant turn with the template's closing tokens, its end-of-turn token
#: among them (the authors' current code).
TRAIN_TURNS = ("last", "all")


@dataclass
class Example:
    ids: list[int]  # prompt + response tokens
    start: int  # index of the first trained (response) token
    positions: tuple[int, ...] | None = None  # the trained indices, where they are not all of ids[start:]

    @property
    def n_targets(self) -> int:
        return len(self.ids) - self.start if self.positions is None else len(self.positions)

    @property
    def targets(self) -> list[int]:
        """The trained tokens, in order."""
        if self.positions is None:
            return self.ids[self.start :]
        return [self.ids[t] for t in self.positions]


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
    model,
    tokenizer,
    rows: Sequence[Mapping],
    max_length: int,
    chat_template: bool | None,
    train_turns: str = "last",
) -> list[Example]:
    """Token ids and the trained tokens of every row; rows with no trained token are dropped.
    `train_turns` (`TRAIN_TURNS`): the last response only, or every assistant turn."""
    from ..scoring import ScoringOptions, encode_records

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
        if len(ids) > len(item.prompt_ids):
            examples.append(Example(ids=ids, start=len(item.prompt_ids)))
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
