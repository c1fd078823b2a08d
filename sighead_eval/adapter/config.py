"""Configuration of the Sigmoid Head adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig

from ._peft_compat import SIGMOID_HEAD

HEAD_DTYPES = ("float32", "float16", "bfloat16", "float64")
OFFSETS = ("none", "log_softmax")


@dataclass
class SigmoidHeadConfig(PeftConfig):
    """A second, sigmoid-activated unembedding head beside the frozen LM head.

    The head `W_sig` has the shape of the LM's output embeddings `[vocab, hidden]`, has no bias and
    scores a token `v` after hidden state `h_t` as `sigmoid(h_t . W_sig[v])`, independently of the
    other tokens. Attaching it never changes the base model's logits (Dinh & Niehues, 2026).
    """

    head_module: str | None = field(
        default=None,
        metadata={
            "help": "Name of the model's output head (the module that maps hidden states to vocabulary "
            "logits), e.g. 'lm_head'. Found automatically through `get_output_embeddings()` when unset."
        },
    )
    init_from_lm_head: bool = field(
        default=True,
        metadata={
            "help": "Initialise the head as a copy of the LM's output embeddings (the paper's default). "
            "When false, rows are drawn from N(0, 0.02)."
        },
    )
    offset: str = field(
        default="none",
        metadata={
            "help": "Per-position offset added to the head's logit: 'none' (the paper) or 'log_softmax' "
            "(minus the log-sum-exp of the LM's logits at that position, so a head copied from the LM head "
            "starts at sigmoid(log p), ranking tokens exactly as the softmax does)."
        },
    )
    head_dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype the head is kept and computed in, whatever the base model's dtype "
            f"(one of {', '.join(HEAD_DTYPES)})."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = SIGMOID_HEAD
        if self.offset not in OFFSETS:
            raise ValueError(f"`offset` should be one of {OFFSETS}, got {self.offset!r}")
        if self.head_dtype not in HEAD_DTYPES:
            raise ValueError(f"`head_dtype` should be one of {HEAD_DTYPES}, got {self.head_dtype!r}")
        if self.head_module is not None and (not isinstance(self.head_module, str) or not self.head_module):
            raise ValueError(
                f"`head_module` should be a module name such as 'lm_head', got {self.head_module!r}"
            )

    @property
    def target_modules(self):
        # PEFT's generic code reads `target_modules`. The head is found through `head_module`
        # instead, and a `target_modules` that named `lm_head` would make `save_pretrained` also
        # write the frozen LM head (it counts as an embedding layer), so this is always None.
        return None
