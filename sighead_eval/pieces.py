"""Token strings, made only when asked for: one vocabulary table per tokenizer, not one `decode`
per token.

`token_pieces(tokenizer, ids)` equals `[tokenizer.decode([t]) for t in ids]`. The first call for a
tokenizer decodes its whole vocabulary once (one batched call into the Rust tokenizer where there
is one); every later call is one fancy-index of that table, whatever the number of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from weakref import WeakKeyDictionary

import numpy as np

_TABLES: WeakKeyDictionary = WeakKeyDictionary()


def _decode_each(tokenizer, size: int) -> list[str]:
    """`tokenizer.decode([i])` for every id below `size`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        # What `decode` does for a fast tokenizer without the clean-up step, for all ids in one call.
        return backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    return [tokenizer.decode([i]) for i in range(size)]


def vocabulary_pieces(tokenizer, size: int = 0) -> np.ndarray:
    """The tokenizer's piece table: an object array, entry `i` = `tokenizer.decode([i])`, with at
    least `size` entries (a model's vocabulary can be larger than its tokenizer's)."""
    table = _TABLES.get(tokenizer)
    if table is None or len(table) < size:
        table = np.array(_decode_each(tokenizer, max(size, len(tokenizer))), dtype=object)
        _TABLES[tokenizer] = table
    return table


def token_pieces(tokenizer, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The text of each token in `ids`, as `tokenizer.decode([t])` gives it."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return []
    return vocabulary_pieces(tokenizer, int(ids.max()) + 1)[ids].tolist()
