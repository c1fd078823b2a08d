"""The PEFT tuner that puts a Sigmoid Head beside a model's output head."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from ._peft_compat import PREFIX
from .config import SigmoidHeadConfig
from .layer import SigmoidHeadLayer

_HOOKS_ATTR = "_sighead_hook_handles"


def find_head_module(model: nn.Module) -> str:
    """Name of the module that maps hidden states to vocabulary logits.

    Uses `get_output_embeddings()`, which every transformers LM (Llama/SmolLM, GPT-2, Qwen2,
    Gemma, OPT, T5, BART, Marian...) implements.
    """
    # An already wrapped head (a second adapter) is found under its own name.
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        for name, module in model.named_modules():
            if module is head:
                return name
    raise ValueError(
        f"Could not find the output head of {type(model).__name__}: it has no `get_output_embeddings()` "
        "returning a module. Pass `SigmoidHeadConfig(head_module=...)` with the name of the linear layer "
        "that maps hidden states to vocabulary logits."
    )


def sigmoid_head_layers(model: nn.Module) -> list[SigmoidHeadLayer]:
    return [m for m in model.modules() if isinstance(m, SigmoidHeadLayer)]


def _pop_output_flag(module, args, kwargs):
    # `output_sigmoid_logits=True` is ours: remove it before the model's own forward sees it.
    wanted = bool(kwargs.pop("output_sigmoid_logits", False))
    if wanted:
        for layer in sigmoid_head_layers(module):
            layer._return_sigmoid_logits = True
    return args, kwargs


def _attach_sigmoid_logits(module, args, output):
    for layer in sigmoid_head_layers(module):
        logits, layer._sigmoid_logits = layer._sigmoid_logits, None
        layer._return_sigmoid_logits = False
        if logits is not None:
            output["sigmoid_logits"] = logits  # (B, T, V)
    return output


def install_output_hooks(model: nn.Module) -> None:
    """Lets `model(..., output_sigmoid_logits=True)` return `.sigmoid_logits` on every call path."""
    if getattr(model, _HOOKS_ATTR, None):
        return
    handles = [
        model.register_forward_pre_hook(_pop_output_flag, with_kwargs=True),
        model.register_forward_hook(_attach_sigmoid_logits),
    ]
    object.__setattr__(model, _HOOKS_ATTR, handles)


def remove_output_hooks(model: nn.Module) -> None:
    for handle in getattr(model, _HOOKS_ATTR, None) or []:
        handle.remove()
    if hasattr(model, _HOOKS_ATTR):
        object.__delattr__(model, _HOOKS_ATTR)


class SigmoidHeadModel(BaseTuner):
    prefix: str = PREFIX
    tuner_layer_cls = SigmoidHeadLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(
        self, peft_config: SigmoidHeadConfig, model_config: dict
    ) -> SigmoidHeadConfig:
        if peft_config.head_module is None:
            peft_config.head_module = find_head_module(self.model)
        elif peft_config.head_module not in dict(self.model.named_modules()):
            raise ValueError(
                f"`head_module` {peft_config.head_module!r} is not a module of {type(self.model).__name__}; "
                f"the output head found automatically is {find_head_module(self.model)!r}."
            )
        return peft_config

    @staticmethod
    def _check_target_module_exists(peft_config: SigmoidHeadConfig, key: str) -> bool:
        return key == peft_config.head_module

    def _get_tied_target_modules(self, model: nn.Module) -> list[str]:
        # The head is a copy of the output embeddings, never tied to them, so PEFT's warning
        # about targeting tied weights does not apply.
        return []

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kw):
        dtype = getattr(torch, peft_config.head_dtype)
        if isinstance(target, SigmoidHeadLayer):
            target.update_layer(adapter_name, peft_config.init_from_lm_head, dtype, peft_config.offset)
            return
        if not isinstance(getattr(target, "weight", None), torch.Tensor) or target.weight.dim() != 2:
            raise ValueError(
                f"`head_module` {current_key!r} is a {type(target).__name__} without a 2-D `weight`; "
                "the Sigmoid Head needs the linear layer that maps hidden states to vocabulary logits."
            )
        new_module = SigmoidHeadLayer(target, adapter_name)
        new_module.update_layer(adapter_name, peft_config.init_from_lm_head, dtype, peft_config.offset)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent, child_name, new_module, child):
        setattr(parent, child_name, new_module)
        if not hasattr(new_module, "base_layer"):
            return  # unloading: the base layer goes back in place
        for name, module in new_module.named_modules():
            if self.prefix in name:
                module.to(child.weight.device)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        # PEFT upcasts fp16/bf16 adapters to fp32; the head's dtype is `head_dtype`, set at creation.
        return None

    def _post_injection_hook(self, model: nn.Module, config, adapter_name: str) -> None:
        install_output_hooks(model)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            param.requires_grad = self.prefix in name

    def _unload_and_optionally_merge(
        self, merge=True, progressbar=False, safe_merge=False, adapter_names=None
    ):
        if merge:
            raise ValueError(
                "A Sigmoid Head cannot be merged into the base model; use `unload()` to remove it."
            )
        remove_output_hooks(self.model)
        return super()._unload_and_optionally_merge(
            merge=False, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
