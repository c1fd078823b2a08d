"""The authors' released heads, as this package's adapters.

Dinh & Niehues release each trained Sigmoid Head as a folder (on the Hugging Face hub, e.g.
`tuanh23/SigmoidHead-TowerInstruct-7B-v0.2`) holding `model.safetensors`, one tensor `weight` of
shape `[vocab, hidden]`, and a `config.json`. The head has no bias and no offset: a token's score
is `sigmoid(h . W[y])`, read beside the frozen base model. Here that is a `SigmoidHeadConfig` with
`offset='none'`, and the tensor renamed to the adapter's key.

`import_head(source, model, output)` reads the folder (or downloads it, where the hub is
reachable), checks the tensor against the base model's output layer without loading its weights,
and writes an adapter directory with a card naming the source. `sighead-eval import-head` is the
same on the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The file and the only tensor of the authors' format.
AUTHORS_WEIGHTS = "model.safetensors"
#: safetensors' dtype names, as this package's `head_dtype` values.
DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def locate_source(source: str | os.PathLike) -> Path:
    """A local folder as it is; anything else is taken for a hub id and downloaded (the weights
    and config only). Offline, a hub id fails naming both ways in."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(
            f"head source {str(source)!r} is a file; pass the folder that holds {AUTHORS_WEIGHTS}"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=[AUTHORS_WEIGHTS, "config.json"]))
    except Exception as err:  # offline, unknown repository, no access: one clear line
        raise FileNotFoundError(
            f"head source {str(source)!r} is neither a local folder nor a hub repository that could be "
            f"downloaded ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); download "
            f"it where the hub is reachable and pass the folder"
        ) from None


def read_head_tensor(folder: Path) -> tuple[str, tuple[int, int], str]:
    """`(name, shape, head_dtype)` of the one tensor in the folder's weights file, from its header;
    anything but exactly one 2-D tensor of a floating dtype is refused."""
    from safetensors import SafetensorError, safe_open

    weights = folder / AUTHORS_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} has no {AUTHORS_WEIGHTS}; the authors' format is one [vocab, hidden] tensor "
            f"`weight` in {AUTHORS_WEIGHTS}, beside a config.json"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            names = list(f.keys())
            if len(names) != 1:
                raise ValueError(
                    f"{weights} holds {len(names)} tensors ({', '.join(names[:5])}); a head in the authors' "
                    "format is exactly one [vocab, hidden] tensor"
                )
            piece = f.get_slice(names[0])
            shape, dtype = tuple(piece.get_shape()), piece.get_dtype()
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err})") from None
    if len(shape) != 2:
        raise ValueError(f"{weights}: tensor {names[0]!r} has shape {list(shape)}; a head is [vocab, hidden]")
    if dtype not in DTYPES:
        raise ValueError(
            f"{weights}: tensor {names[0]!r} is {dtype}; a head is floating point ({', '.join(DTYPES)})"
        )
    return names[0], shape, DTYPES[dtype]


def output_layer(model: str, trust_remote_code: bool = False) -> tuple[str, tuple[int, int], type]:
    """`(module name, (vocab, hidden), model class)` of the model's output layer, from a copy built
    on the meta device (its config only; no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .model import find_head_module

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    name = find_head_module(skeleton)
    weight = skeleton.get_submodule(name).weight
    return name, tuple(weight.shape), type(skeleton)


def import_head(
    source: str | os.PathLike,
    model: str,
    output: str | os.PathLike,
    trust_remote_code: bool = False,
    overwrite: bool = False,
) -> Path:
    """Writes the authors' head at `source` (folder or hub id) as an adapter directory `output`
    for `model` (hub id or local path of the base model it was trained on). `output` must be new or
    empty unless `overwrite`; the files are written beside and renamed into it. Returns `output`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..files import staged_dir, write_atomic
    from ..models import resolve_model
    from .config import SigmoidHeadConfig
    from .io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_no_adapter

    out = check_no_adapter(output, overwrite)
    folder = locate_source(source)
    name, shape, dtype = read_head_tensor(folder)
    base = resolve_model(model)
    module, expected, model_class = output_layer(base, trust_remote_code)
    if shape != expected:
        raise ValueError(
            f"the head at {str(source)!r} does not fit the model {model!r}: its tensor {name!r} has shape "
            f"[vocab, hidden] = {list(shape)}, the model's output layer `{module}` has {list(expected)}. "
            "Pass the base model the head was trained on (--model)."
        )
    with safe_open(str(folder / AUTHORS_WEIGHTS), framework="pt") as f:
        weight = f.get_tensor(name)  # in the file's own dtype
    check_finite(weight, f"{folder / AUTHORS_WEIGHTS}: tensor {name!r}")
    config = SigmoidHeadConfig(
        head_module=module,
        init_from_lm_head=False,
        offset="none",
        head_dtype=dtype,
        base_model_name_or_path=str(model),
        inference_mode=True,
    )
    key = f"base_model.model.{module}.sigmoid_head_embedding.weight"
    meta = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    # what PEFT's AutoPeftModel reads to rebuild the base model, as `save_pretrained` writes it
    meta["auto_mapping"] = {
        "base_model_class": model_class.__name__,
        "parent_library": model_class.__module__,
    }
    source_config = folder / "config.json"
    original = json.loads(source_config.read_text()) if source_config.is_file() else None
    card = _card(str(source), str(model), model_class.__name__, name, shape, dtype, original)
    with staged_dir(out) as tmp:
        save_file({key: weight.contiguous()}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_atomic(tmp / ADAPTER_CONFIG, json.dumps(meta, indent=2, sort_keys=True))
        write_atomic(tmp / "README.md", card)
    return out


def check_finite(weight, what: str) -> None:
    """Refuses a head holding NaN or infinite weights, which would poison every score it gives."""
    import torch

    nan = int(torch.isnan(weight).sum())
    inf = int(torch.isinf(weight).sum())
    if nan or inf:
        raise ValueError(
            f"{what} holds {nan} NaN and {inf} infinite value(s) among {weight.numel()}; a head's weights "
            "must all be finite numbers (the file is damaged, or the training diverged)"
        )


def _card(source, model, model_class, name, shape, dtype, original) -> str:
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {model}",
        "tags: [sigmoid-head, quality-estimation, sighead-eval]",
        "---",
        "",
        f"# Sigmoid Head for {model}, imported",
        "",
        f"Imported by `sighead-eval import-head` from `{source}`, a head released by the authors of the",
        "Sigmoid Head (Dinh & Niehues, arXiv:2601.00680) in their format: one tensor "
        f"`{name}` of shape [vocab, hidden] = {list(shape)}, {dtype}.",
        "",
        f"- Base model: `{model}` ({model_class}); the head reads the input of its output layer.",
        "- Offset: `none`, as the authors score: a token's score is `sigmoid(h . W[y])`.",
        f"- Kept and computed in {dtype}, the dtype of the released file.",
        "- Trained by the authors, not by this package: see their paper and release for the recipe and",
        "  the training data, and the source's own licence.",
        "",
        "Load it with `sighead_eval.models.load_model(model, adapter=<this directory>)`, or",
        "`PeftModel.from_pretrained(base, <this directory>)` after `import sighead_eval`.",
    ]
    if original is not None:
        lines += ["", "The source's `config.json`:", "", "```json", json.dumps(original, indent=2), "```"]
    return "\n".join(lines) + "\n"
