"""Registers the SIGMOID_HEAD adapter type with PEFT.

Why this module exists: `peft.utils.register_peft_method` refuses any name that is not already a
member of PEFT's closed `PeftType` enum (huggingface/peft#2273, #2634), so a third-party method
cannot register through it. PEFT's loaders only look the type up in three dictionaries in
`peft.mapping`, keyed by the `peft_type` value read from `adapter_config.json`; writing the string
key there is enough for `get_peft_model`, `PeftModel.from_pretrained`,
`AutoPeftModelForCausalLM` and transformers' `load_adapter`. Keep every touch of PEFT's
registries in this one place.
"""

from __future__ import annotations


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
