"""A Sigmoid Head adapter on disk: checking a directory before anything loads (`check_adapter_dir`:
config type, safetensors only, file integrity, finite weights), reading its head's shape from the
file header, saving (`save_adapter`: full or compact, half precision by default) and loading
(`load_adapter`). Nothing here loads a base model; `heads.py` and `authors.py` write adapters for
one, and `sighead_eval.models.load_model` attaches them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

from ._peft_compat import SIGMOID_HEAD

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: What `init-head` and `import-head` write: all they replace in an existing folder (`--overwrite`).
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")
#: The precisions a base model runs in (`--dtype`) and a head's weights are stored in.
DTYPES = ("float32", "bfloat16", "float16")


def check_adapter_dir(path: str | os.PathLike) -> dict:
    """Validates a Sigmoid Head adapter directory before anything is loaded; returns its config.

    Only safetensors weights are read: a directory with pickled weights only is refused. A
    directory is validated once per process while its files stay unchanged (size and mtime).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter directory {str(path)!r} does not exist")
    stamp = tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file()
    )
    return copy.deepcopy(_checked_adapter_dir(str(path.resolve()), stamp))


@functools.lru_cache(maxsize=64)
def _checked_adapter_dir(path: str, stamp: tuple) -> dict:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter directory {str(path)!r} does not exist")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a PEFT adapter: it has no {ADAPTER_CONFIG}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON ({err})") from None
    if config.get("peft_type") != SIGMOID_HEAD:
        raise ValueError(
            f"{str(path)!r} holds a {config.get('peft_type')!r} adapter, not a {SIGMOID_HEAD!r} adapter"
        )
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = [p.name for p in path.glob("*.bin")]
        raise FileNotFoundError(
            f"{str(path)!r} has no {ADAPTER_WEIGHTS}"
            + (
                f" (found {pickled}: pickled weights are never loaded; convert them to safetensors)"
                if pickled
                else ""
            )
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
            if not keys:
                raise ValueError(f"{weights} holds no tensors")
            for key in keys:
                f.get_slice(key).get_shape()
            if os.path.getsize(weights) < _expected_size(weights):
                raise ValueError(f"{weights} is truncated: the file is shorter than its header says")
            _check_finite(weights, f, keys)
    except SafetensorError as err:
        raise ValueError(f"{weights} is truncated or corrupted and cannot be read ({err})") from None
    return config


def _check_finite(weights: Path, opened, keys: list[str]) -> None:
    """Refuses a head holding NaN or infinite weights (`opened`: the file, open): every score it
    would give is NaN, found only when the scores are written."""
    import torch

    for key in keys:
        tensor = opened.get_tensor(key)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{weights}: tensor {key!r} holds {int(torch.isnan(tensor).sum())} NaN and "
                f"{int(torch.isinf(tensor).sum())} infinite value(s); a head's weights must all be "
                "finite (the file is damaged, or the training diverged)"
            )


def adapter_head_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The `(vocab, hidden)` shape of the head saved in an adapter directory, from the file header
    (and, for the compact format, its stored vocabulary size)."""
    from safetensors import safe_open

    from . import compact

    check_adapter_dir(path)
    with safe_open(str(Path(path) / ADAPTER_WEIGHTS), framework="pt") as f:
        keys = list(f.keys())
        if any(k.endswith("." + compact.VOCAB) for k in keys):
            parts = {k.rpartition(".")[2]: k for k in keys}
            return compact.shape(
                {
                    compact.VOCAB: f.get_tensor(parts[compact.VOCAB]),
                    **{
                        n: f.get_slice(parts[n]).get_shape()
                        for n in (compact.ROWS, compact.LOW_V)
                        if n in parts
                    },
                }
            )
        shapes = [tuple(f.get_slice(k).get_shape()) for k in keys]
    return max(shapes, key=lambda s: len(s) and s[0])


def _expected_size(weights: Path) -> int:
    import struct

    with open(weights, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


def save_adapter(
    model,
    path: str | os.PathLike,
    storage_dtype: str | None = "float16",
    storage: str = "full",
    rank: int | None = None,
) -> Path:
    """Saves the Sigmoid Head adapter of `model` (head only), its weights stored in `storage_dtype`.

    Half precision halves the file; the config keeps the head's compute dtype, so the head loads
    back into fp32. `storage` 'rows' or 'lowrank' (with `rank`) writes the head's difference from the
    LM head compactly (`adapter/compact.py`); loading puts the LM head back, whatever loads it. The
    weights file is replaced atomically.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..files import atomic_path
    from . import compact

    if storage not in compact.STORAGES:
        raise ValueError(f"`storage` should be one of {compact.STORAGES}, got {storage!r}")
    if storage_dtype is not None and storage_dtype not in DTYPES:
        raise ValueError(f"`storage_dtype` should be one of {DTYPES} or None, got {storage_dtype!r}")
    path = Path(path)
    model.save_pretrained(str(path))
    if storage_dtype is None and storage == "full":
        return path
    weights = path / ADAPTER_WEIGHTS
    dtype = getattr(torch, storage_dtype) if storage_dtype else None
    tensors = {k: v.to(dtype or v.dtype).contiguous() for k, v in load_file(str(weights)).items()}
    if storage != "full":
        layer = model.get_base_model().get_output_embeddings()
        parts = compact.compress(layer.active_head(), layer.get_base_layer().weight, storage, rank)
        [key] = [k for k in tensors if k.endswith("sigmoid_head_embedding.weight")]
        stem = key.removesuffix("weight")
        tensors = {
            stem + k: (v if v.dtype == torch.int64 else v.to(dtype or torch.float32)).cpu().contiguous()
            for k, v in parts.items()
        }
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return path


def check_no_adapter(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuses, before any work, an `output` folder that holds anything (an adapter, or a user's
    files) unless `overwrite`, which replaces `ADAPTER_FILES` there and nothing else; and an
    `output` that cannot be written."""
    from ..files import check_new_output_dir

    if (Path(output) / ADAPTER_WEIGHTS).exists() and not overwrite:
        raise ValueError(
            f"{str(output)!r} already holds an adapter ({ADAPTER_WEIGHTS}); pass another --output, or "
            "--overwrite to replace it"
        )
    return check_new_output_dir(output, overwrite, ADAPTER_FILES)


def load_adapter(model, path: str | os.PathLike, adapter_name: str = "default"):
    """Attaches the Sigmoid Head saved at `path` to `model`; returns the PeftModel.

    Checks the directory first (config type, safetensors only, file integrity); a head whose shape
    does not match the model's output head fails naming both shapes.
    """
    from peft import PeftModel

    check_adapter_dir(path)
    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=adapter_name)
        model.set_adapter(adapter_name)
        return model
    extra = {}
    if getattr(model, "hf_device_map", None):
        # A model spread by device_map: keep its map (the head sits with the output layer). PEFT's
        # default would dispatch it again with device_map='auto' when part of it is on the CPU.
        extra["device_map"] = dict(model.hf_device_map)
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, **extra)
