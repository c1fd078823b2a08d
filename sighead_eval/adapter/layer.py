"""The wrapped output head: base logits untouched, the sigmoid head beside them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class SigmoidHeadLayer(nn.Module, BaseTunerLayer):
    """Wraps the LM head. `forward` returns the base layer's output unchanged.

    Each adapter is an `nn.Embedding(vocab, hidden, sparse=True)`: scoring a chosen token is one
    row lookup and one dot product, and training touches only the rows it looks up.
    """

    adapter_layer_names = ("sigmoid_head_embedding",)
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.sigmoid_head_embedding = nn.ModuleDict({})
        self.head_offset: dict[str, str] = {}
        self._active_adapter = adapter_name
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs
        # Set by the model-level hooks when a caller asks for `output_sigmoid_logits=True`.
        self._return_sigmoid_logits = False
        self._sigmoid_logits: torch.Tensor | None = None
        self._register_load_state_dict_pre_hook(self._check_loaded_shapes)

    # -- construction -------------------------------------------------------------------------
    def update_layer(
        self, adapter_name: str, init_from_lm_head: bool, head_dtype: torch.dtype, offset: str = "none"
    ) -> None:
        weight = self.get_base_layer().weight  # (V, H)
        vocab, hidden = weight.shape
        embedding = nn.Embedding(vocab, hidden, sparse=True, device=weight.device, dtype=head_dtype)
        with torch.no_grad():
            if init_from_lm_head:
                # A copy, never a view: tied input embeddings must stay untouched by training.
                embedding.weight.copy_(weight.detach().to(head_dtype))
            else:
                embedding.weight.normal_(0.0, 0.02)
        self.sigmoid_head_embedding[adapter_name] = embedding
        self.head_offset[adapter_name] = offset
        self.set_adapter(self.active_adapters)

    def _check_loaded_shapes(self, state_dict, prefix, *args, **kwargs) -> None:
        # Runs inside `load_state_dict`, so every loading path (PeftModel, AutoPeftModel,
        # transformers' load_adapter) reports a mismatched head in these terms.
        for name, embedding in self.sigmoid_head_embedding.items():
            key = f"{prefix}sigmoid_head_embedding.{name}.weight"
            if key in state_dict and state_dict[key].shape != embedding.weight.shape:
                got = tuple(state_dict[key].shape)
                want = tuple(embedding.weight.shape)
                raise ValueError(
                    f"Sigmoid Head adapter {name!r} does not fit this model: the adapter's head has shape "
                    f"[vocab, hidden] = {list(got)}, the model's output head has {list(want)}. "
                    "Load an adapter trained for this base model."
                )

    # -- the head ------------------------------------------------------------------------------
    def active_head(self) -> torch.Tensor | None:
        """The weight `(V, H)` of the active adapter, or None when adapters are disabled."""
        if self.disable_adapters:
            return None
        names = [n for n in self.active_adapters if n in self.sigmoid_head_embedding]
        if not names:
            return None
        if len(names) > 1:
            raise ValueError(
                f"Several Sigmoid Head adapters are active at once ({names}); a token gets one score, "
                "so activate one with `set_adapter(name)`."
            )
        return self.sigmoid_head_embedding[names[0]].weight

    def active_offset(self) -> str:
        """The active adapter's offset mode ('none' or 'log_softmax')."""
        names = [n for n in self.active_adapters if n in self.sigmoid_head_embedding]
        return self.head_offset.get(names[0], "none") if names else "none"

    def sigmoid_logits(self, hidden: torch.Tensor, base_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Full-vocabulary head logits: `(..., H) -> (..., V)`, in the head's dtype. An adapter with
        `offset='log_softmax'` needs the LM's logits at the same positions (`base_logits`)."""
        weight = self.active_head()
        if weight is None:
            raise ValueError("No Sigmoid Head adapter is active on this model.")
        z = F.linear(hidden.to(weight.dtype), weight)
        if self.active_offset() == "log_softmax":
            if base_logits is None:
                raise ValueError("this Sigmoid Head has offset='log_softmax': pass the LM's logits")
            z = z - torch.logsumexp(base_logits.float(), dim=-1, keepdim=True).to(z.dtype)
        return z

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self._return_sigmoid_logits and self.active_head() is not None:
            self._sigmoid_logits = self.sigmoid_logits(x, result)
        return result

    # -- PEFT interface --------------------------------------------------------------------------
    def merge(self, *args, **kwargs) -> None:
        raise ValueError(
            "A Sigmoid Head cannot be merged: it is a second output, not a change of the base weights. "
            "Use `unload()` to get the base model back."
        )

    def unmerge(self) -> None:
        return None

    def __repr__(self) -> str:
        return "sighead." + super().__repr__()
