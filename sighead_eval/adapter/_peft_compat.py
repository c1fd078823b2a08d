"""Registers the SIGMOID_HEAD adapter type with PEFT.

Why this module exists: `peft.utils.register_peft_method` refuses any name that is not already a
member of PEFT's closed `PeftType` enum (huggingface/peft#2273, #2634), so a third-party method
cannot register through it. PEFT's loaders only look the type up in three dictionaries in
`peft.mapping`, keyed by the `peft_type` value read from `adapter_config.json`; writing the string
key there is enough for `get_peft_model`, `PeftModel.from_pretrained`,
`AutoPeftModelForCausalLM` and transformers' `load_adapter`. Keep every touch of PEFT's
registries in this one place.

The same goes for loading: PEFT's and transformers' loaders fall back to a pickled
`adapter_model.bin` when there is no safetensors file, and a pickle can run code. Every loading
route (`PeftModel.from_pretrained`, `AutoPeftModelForCausalLM`, transformers' `load_adapter`)
reads the adapter's config through `PeftConfigMixin.from_pretrained` first, so `register` wraps
that one method: a SIGMOID_HEAD adapter without safetensors weights is refused there, before any
weights are read. Other adapter types load as PEFT loads them.
"""

from __future__ import annotations

import functools
import os


class PeftTypeName(str):
    """The type's name as a plain string that also answers `.value` like a `PeftType` member:
    transformers' `load_adapter` reads `peft_type.value` and expects parameter names to carry the
    prefix `peft_type.value.lower() + "_"`."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)


SIGMOID_HEAD = PeftTypeName("SIGMOID_HEAD")
PREFIX = "sigmoid_head_"


def register(config_cls, model_cls) -> None:
    """Makes PEFT know the SIGMOID_HEAD type; safe to call more than once."""
    from peft import mapping

    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[SIGMOID_HEAD] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[SIGMOID_HEAD] = model_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[SIGMOID_HEAD] = PREFIX
    _refuse_pickled_weights()


SAFETENSORS_WEIGHTS = "adapter_model.safetensors"


def check_safetensors_weights(name_or_path: str, subfolder: str | None = None, **hub_kwargs) -> None:
    """Fails unless the SIGMOID_HEAD adapter at `name_or_path` has its weights as safetensors: in a
    local directory, or on the hub (cached when offline)."""
    path = os.path.join(name_or_path, subfolder) if subfolder else name_or_path
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, SAFETENSORS_WEIGHTS)):
            return
        pickled = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".pkl")))
        raise FileNotFoundError(
            f"the Sigmoid Head adapter at {path!r} has no {SAFETENSORS_WEIGHTS}"
            + (
                f" (found {pickled}: pickled weights are never loaded; convert them to safetensors)"
                if pickled
                else ""
            )
        )
    from huggingface_hub import hf_hub_download

    keep = {k: v for k, v in hub_kwargs.items() if k in ("revision", "token", "cache_dir", "repo_type")}
    try:
        hf_hub_download(name_or_path, SAFETENSORS_WEIGHTS, subfolder=subfolder, **keep)
    except Exception as err:  # missing on the hub, or not cached offline
        raise FileNotFoundError(
            f"the Sigmoid Head adapter {name_or_path!r} has no {SAFETENSORS_WEIGHTS} to load "
            f"({type(err).__name__}); only safetensors weights are loaded, never pickled ones"
        ) from None


def _refuse_pickled_weights() -> None:
    from peft.config import PeftConfigMixin

    original = PeftConfigMixin.__dict__["from_pretrained"].__func__
    if getattr(original, "_sighead_safetensors_only", False):
        return

    @functools.wraps(original)
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs):
        config = original(cls, pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        if str(getattr(config, "peft_type", "")) == SIGMOID_HEAD:
            check_safetensors_weights(str(pretrained_model_name_or_path), subfolder, **kwargs)
        return config

    from_pretrained._sighead_safetensors_only = True
    PeftConfigMixin.from_pretrained = classmethod(from_pretrained)
