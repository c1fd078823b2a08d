"""The wrapped output head: base logits untouched, the sigmoid head beside them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from . import compact
from .config import OFFSETS


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
        self.sigmoid_head_offset: dict[str, str] = {}  # adapter name -> one of OFFSETS
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
        if weight.device.type == "meta":
            raise ValueError(
                "the model's output layer is offloaded (its weights are on the 'meta' device, as "
                "device_map puts layers that fit nowhere on disk): the Sigmoid Head computes beside it, so "
                "keep the output layer on a device (more max_memory, or a device_map that places it)"
            )
        vocab, hidden = weight.shape
        embedding = nn.Embedding(vocab, hidden, sparse=True, device=weight.device, dtype=head_dtype)
        with torch.no_grad():
            if init_from_lm_head:
                # A copy, never a view: tied input embeddings must stay untouched by training.
                embedding.weight.copy_(weight.detach().to(head_dtype))
            else:
                embedding.weight.normal_(0.0, 0.02)
        if offset not in OFFSETS:
            raise ValueError(f"`offset` should be one of {OFFSETS}, got {offset!r}")
        self.sigmoid_head_embedding[adapter_name] = embedding
        self.sigmoid_head_offset[adapter_name] = offset
        self.set_adapter(self.active_adapters)

    def _check_loaded_shapes(self, state_dict, prefix, *args, **kwargs) -> None:
        # Runs inside `load_state_dict`, so every loading path (PeftModel, AutoPeftModel,
        # transformers' load_adapter) reads the compact format and reports a mismatched head in
        # these terms. PEFT inserts the adapter's name only into keys the model has, so the compact
        # keys arrive without it: they belong to the adapter being loaded, the last one added.
        names = list(self.sigmoid_head_embedding.keys())
        for name, embedding in self.sigmoid_head_embedding.items():
            key = f"{prefix}sigmoid_head_embedding.{name}.weight"
            for stem in (f"{prefix}sigmoid_head_embedding.{name}.", f"{prefix}sigmoid_head_embedding."):
                if stem + compact.VOCAB in state_dict and (name == names[-1] or stem.endswith(f".{name}.")):
                    parts = {k: state_dict.pop(stem + k) for k in compact.KEYS if stem + k in state_dict}
                    state_dict[key] = compact.expand(parts, self.get_base_layer().weight, embedding.weight)
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
        """The active adapter's offset mode (one of `OFFSETS`; 'none' without an active adapter)."""
        names = [n for n in self.active_adapters if n in self.sigmoid_head_embedding]
        return self.sigmoid_head_offset.get(names[0], "none") if names else "none"

    def logit_offset(
        self, base_logits: torch.Tensor | None = None, log_normalizer: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the active adapter adds to every head logit of a position, `(...,)`, or None.

        'none' (the paper): nothing. 'log_softmax': minus the LM's log-sum-exp at the position, so a
        head copied from the LM head starts at `sigmoid(log p)`. Give the LM's logits `(..., V)`, or
        their log-sum-exp `(...,)` as `log_normalizer` when the caller has it already.
        """
        if self.active_offset() == "none":
            return None
        if log_normalizer is None:
            if base_logits is None:
                raise ValueError("this Sigmoid Head has offset='log_softmax': pass the LM's logits")
            log_normalizer = torch.logsumexp(base_logits.float(), dim=-1)
        return -log_normalizer.float()

    def head_logits(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        base_logits: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
        rows=None,
    ) -> torch.Tensor:
        """The active head's logits, offset included: the one place a head scores tokens.

        hidden: (N, H) head inputs; targets: (N,) or (N, K) tokens to score at each position, or
        None for the whole vocabulary; base_logits: (N, V) the LM's logits at the same positions
        (read only by the 'log_softmax' offset), or `offset`: (N,) from `logit_offset`, computed
        once by a caller that scores the same positions again. `rows`: the module that looks rows
        up (default: the head's own sparse embedding; training passes its DDP wrapper).
        Returns (N,), (N, K) or (N, V), in float32 or the head's wider dtype.
        """
        weight = self.active_head()
        if weight is None:
            raise ValueError("No Sigmoid Head adapter is active on this model.")
        if targets is None:
            z = F.linear(hidden.to(weight.dtype), weight)  # (N, V)
        else:
            lookup = rows if rows is not None else self.sigmoid_head_embedding[self._active_name()]
            if targets.dim() == 2:
                # Sampled sets repeat tokens: look each row up once, so that a sparse gradient
                # carries one entry a distinct token (half the training step's cost, same values).
                # (index_select's backward adds in index order: deterministic, unlike indexing's.)
                unique, inverse = torch.unique(targets, return_inverse=True)
                picked = lookup(unique).index_select(0, inverse.reshape(-1)).view(*targets.shape, -1)
            else:
                picked = lookup(targets)  # (N, H)
            h = hidden.to(picked.dtype)
            z = (picked * (h if targets.dim() == 1 else h.unsqueeze(1))).sum(-1)  # one dot product a token
        if offset is None:
            offset = self.logit_offset(base_logits)
        z = z if z.dtype in (torch.float32, torch.float64) else z.float()
        if offset is not None:
            z = z + (offset if z.dim() == 1 else offset.unsqueeze(-1)).to(z.dtype)
        return z

    def _active_name(self) -> str:
        return next(n for n in self.active_adapters if n in self.sigmoid_head_embedding)

    def sigmoid_logits(self, hidden: torch.Tensor, base_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Full-vocabulary head logits: `(..., H) -> (..., V)`. An adapter with
        `offset='log_softmax'` needs the LM's logits at the same positions (`base_logits`)."""
        shape = hidden.shape[:-1]
        flat = None if base_logits is None else base_logits.reshape(-1, base_logits.shape[-1])
        z = self.head_logits(hidden.reshape(-1, hidden.shape[-1]), base_logits=flat)
        return z.reshape(*shape, z.shape[-1])

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
