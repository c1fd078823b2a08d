"""Heads made for a base model: a fresh, untrained one (`init_head`, `sighead-eval init-head`), a
compact copy of a trained one (`compress_adapter`, `sighead-eval compress`), and the check that a
head fits a model before either loads (`check_adapter_fits`). These load or read the base model
through `sighead_eval.models`; the files themselves are `io.py`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models import DEFAULT_MODEL, embedded, resolve_model
from .io import ADAPTER_WEIGHTS, adapter_head_shape, check_no_adapter, save_adapter


def check_adapter_fits(adapter: str | os.PathLike, model: str | None = None, trust_remote_code=False) -> None:
    """Fails, naming both shapes, when the adapter's head cannot attach to the model; reads only
    the adapter's file header and the model's config, never the weights."""
    from transformers import AutoConfig

    head = adapter_head_shape(adapter)
    config = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    hidden = next(
        (getattr(text, k) for k in ("hidden_size", "n_embd", "d_model") if getattr(text, k, None)), None
    )
    if vocab is not None and hidden is not None and tuple(head) != (vocab, hidden):
        raise ValueError(
            f"the adapter at {str(adapter)!r} does not fit the model {model or DEFAULT_MODEL!r}: its head "
            "has "
            f"shape [vocab, hidden] = {list(head)}, the model's output head has {[vocab, hidden]}. Pass the "
            "adapter trained for this model (--adapter) or the model it was trained for (--model)."
        )


def init_head(
    output: str | os.PathLike,
    model: str | None = None,
    offset: str = "none",
    trust_remote_code: bool = False,
    overwrite: bool = False,
) -> Path:
    """Writes a fresh, untrained head for `model` (default: the embedded one) to `output`: a copy of
    its output layer with `offset` ('none': scores start near 1.0; 'log_softmax': at
    sigmoid(log p) = p / (1 + p)). Stored as the rows that differ from the LM head (none: a few
    bytes, whatever the vocabulary). `output` must be new or empty unless `overwrite`
    (`check_no_adapter`); the files are written beside and renamed into it. Returns `output`."""
    from peft import get_peft_model

    from ..files import staged_dir, write_atomic
    from ..models import load_model  # at call time: tests stand a refusal in for it
    from .config import OFFSETS, SigmoidHeadConfig

    if offset not in OFFSETS:
        raise ValueError(f"`offset` should be one of {OFFSETS}, got {offset!r}")
    out = check_no_adapter(output, overwrite)
    base, _ = load_model(model, trust_remote_code=trust_remote_code)
    peft_model = get_peft_model(base, SigmoidHeadConfig(offset=offset, inference_mode=True))
    name = str(model) if model else DEFAULT_MODEL  # the name given, not a machine's cache path
    peft_model.peft_config["default"].base_model_name_or_path = name  # get_peft_model sets the path
    with staged_dir(out) as tmp:
        save_adapter(peft_model, tmp, storage="rows")
        write_atomic(tmp / "README.md", _fresh_card(name, offset))  # not PEFT's template card
    return out


def _fresh_card(model: str, offset: str) -> str:
    start = "sigmoid(log p) = p / (1 + p), a function of the softmax" if offset == "log_softmax" else (
        "sigmoid of the output layer's raw logits (about 1.0 for most tokens)"
    )  # fmt: skip
    info = embedded(model)
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {model}",
        "tags: [sigmoid-head, quality-estimation, sighead-eval, untrained]",
        "---",
        "",
        f"# Untrained Sigmoid Head for {model}",
        "",
        f"Written by `sighead-eval init-head --model {model} --offset {offset}`: a copy of the model's",
        f"output layer, **not trained**, with the `{offset}` offset, so a token scores {start}.",
        "It is stored as its difference from the output layer (no rows): the base model holds it.",
        "Use it as a baseline row beside a trained head (`sighead-eval train` starts from the same head).",
    ]
    if info is not None:
        lines += ["", f"The base model is the embedded `{model}`, under its own terms: {info.licence}."]
    return "\n".join(lines) + "\n"


def compress_adapter(
    adapter: str | os.PathLike,
    output: str | os.PathLike,
    storage: str = "lowrank",
    rank: int | None = 64,
    model: str | None = None,
    storage_dtype: str = "float16",
) -> dict:
    """Writes a compact copy of `adapter` (see `save_adapter`); returns and prints the sizes and
    the relative error of the stored difference from the LM head (0 for 'rows')."""
    import torch

    from ..files import check_output_dir
    from ..models import load_model

    out = check_output_dir(str(output))
    base, _ = load_model(model, adapter)
    layer = base.get_base_model().get_output_embeddings()
    head = layer.active_head().detach().float().clone()
    save_adapter(base, out, storage_dtype=storage_dtype, storage=storage, rank=rank)
    # The copy read back beside the original, through the loading hook every route uses (the base
    # model is not loaded a second time).
    base.load_adapter(str(out), adapter_name="compact")
    again = layer.sigmoid_head_embedding["compact"].weight.detach().float()
    delta = head - layer.get_base_layer().weight.detach().float()
    error = float(torch.linalg.norm(again - head) / torch.linalg.norm(delta).clamp_min(1e-30))
    info = {
        "storage": storage,
        "rank": rank if storage == "lowrank" else None,
        "bytes_before": os.path.getsize(Path(adapter) / ADAPTER_WEIGHTS),
        "bytes_after": os.path.getsize(out / ADAPTER_WEIGHTS),
        "relative_error": error,
    }
    print(
        f"{adapter} -> {out}: {info['bytes_before'] / 2**20:.1f} MB -> {info['bytes_after'] / 2**20:.1f} MB "
        f"({storage}{f', rank {rank}' if storage == 'lowrank' else ''}); the stored difference from the LM "
        f"head is off by {100 * error:.2f} % (Frobenius)"
    )
    return info
