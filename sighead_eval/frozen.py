"""The frozen pass, shared by scoring and training: hidden states and logits at scored positions.

For a batch of token sequences, each with the index where its scored part starts, one forward
pass of the frozen model returns, for every scored token `y_t`: the head's input `h_{t-1}`
(what the Sigmoid Head dots with its rows) and the softmax logits that predicted `y_t`.

Full-vocabulary logits cost as much as a large part of the forward pass. When the model accepts
`logits_to_keep`, the pass asks for one position only and computes the logits itself, from the
captured head inputs, at the scored positions alone. This is checked once per model against the
model's own last-position logits. Models whose logits are not a plain linear map of the head
input (final soft-capping, a logits bias) fail the check and take the full path.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FrozenOutputs:
    hidden: torch.Tensor  # (N, H) head inputs at the positions that predict the scored tokens
    logits: torch.Tensor  # (N, V) softmax logits for the scored tokens
    targets: torch.Tensor  # (N,) the scored tokens
    counts: list[int]  # scored tokens per sequence, in batch order


def unwrap(model):
    """The transformers model under a PeftModel (the Sigmoid Head layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def input_device(model) -> torch.device:
    """Where the model takes its input ids: the input embeddings' accelerate execution device for a
    model spread by device_map, else the device of its first parameter."""
    base = unwrap(model)
    hook = getattr(base.get_input_embeddings(), "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return next(base.parameters()).device


def base_head(model) -> torch.nn.Module:
    """The model's own output head (under a Sigmoid Head wrapper, its base layer)."""
    head = unwrap(model).get_output_embeddings()
    return head.get_base_layer() if hasattr(head, "get_base_layer") else head


@contextlib.contextmanager
def wrapped_method(obj, name: str, wrap):
    """While the block runs, `obj.<name>` is `wrap(original)` on this instance alone; afterwards the
    instance is as it was (what it had of its own is put back, else the class's method shows)."""
    original = getattr(obj, name)
    own = obj.__dict__.get(name)
    setattr(obj, name, wrap(original))
    try:
        yield
    finally:
        if own is None:
            delattr(obj, name)
        else:
            setattr(obj, name, own)


class HeadInputs:
    """Forward pre-hook on the output head that keeps its input, the `h_t` the Sigmoid Head scores."""

    def __init__(self, model, last_only: bool = False):
        self.head_module = unwrap(model).get_output_embeddings()
        self.last_only = last_only
        self.captured: list[torch.Tensor] = []

    def _hook(self, module, args):
        x = args[0]
        self.captured.append(x[:, -1].detach().clone() if self.last_only else x.detach())

    def __enter__(self):
        self._handle = self.head_module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    def step(self, output) -> tuple[torch.Tensor, torch.Tensor | None]:
        """For a forward hook's `output` during `generate`: the step's last-position logits (B, V)
        and the head input captured for it (B, H), or None when the head was not called."""
        logits = output.logits if hasattr(output, "logits") else output[0]
        hidden = self.captured.pop() if self.captured else None
        self.captured.clear()
        return logits[:, -1], hidden


def forward_passes(model, fn) -> int:
    """How many times running `fn()` calls `model`'s forward (the one-pass checks of the lm-eval
    model, in its tests and `bench/bench_lm_eval.py`)."""
    count = []
    handle = unwrap(model).register_forward_pre_hook(lambda *a: count.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(count)


def right_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (B, T). Right padding keeps every real token at its unbatched
    position: causal attention never looks ahead at the pads, so batched scores equal unbatched."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids, mask


_FAST_OK = "_sighead_fast_logits_ok"


def _accepts_logits_to_keep(base) -> bool:
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def frozen_pass(
    model, sequences: list[list[int]], starts: list[int], pad: int, positions=None
) -> FrozenOutputs:
    """One forward pass over right-padded `sequences`; token `s[t]` for `t >= starts[b]` is scored,
    or, where `positions[b]` is given (a sorted list of indices >= 1), token `s[t]` for each `t` in it
    (several assistant turns of one conversation, say)."""
    base = unwrap(model)
    device = input_device(model)
    ids, mask = right_pad(sequences, pad)
    positions = positions if positions is not None else [None] * len(sequences)
    scored = [  # the scored indices of each sequence
        torch.arange(st, len(s)) if p is None else torch.as_tensor(p, dtype=torch.long)
        for s, st, p in zip(sequences, starts, positions)
    ]
    b_idx = torch.cat([torch.full((len(p),), b, dtype=torch.long) for b, p in enumerate(scored)])
    t_idx = torch.cat(scored) - 1  # the position that predicts each scored token
    targets = ids[b_idx, t_idx + 1]
    counts = [len(p) for p in scored]
    body = getattr(base, "base_model", None)
    fast = (
        getattr(base, _FAST_OK, None) is not False
        and _accepts_logits_to_keep(base)
        and isinstance(body, torch.nn.Module)
        and body is not base
    )
    if fast:
        # With `logits_to_keep=1` the head sees the last position only; the body's output holds all.
        kept: list[torch.Tensor] = []

        def keep(module, args, output):
            kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

        handle = body.register_forward_hook(keep)
        try:
            out = base(
                input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1, use_cache=False
            )
        finally:
            handle.remove()
        weight = base_head(model).weight
        hidden = kept[-1][b_idx, t_idx].to(weight.device)  # (N, H), on the output layer's device
        if getattr(base, _FAST_OK, None) is None:
            # Once per model: our logits must be the model's own.
            own = F.linear(kept[-1][:, -1].to(weight.device), weight)
            theirs = out.logits[:, -1]
            # under autocast both sides are rounded to half precision: compare at its resolution
            atol = 1e-4 if own.dtype == torch.float32 and theirs.dtype == torch.float32 else 0.25
            ok = own.shape == theirs.shape and torch.allclose(own.float(), theirs.float(), atol=atol)
            object.__setattr__(base, _FAST_OK, bool(ok))
            if not ok:
                return frozen_pass(model, sequences, starts, pad, positions)
        logits = F.linear(hidden, weight)  # (N, V)
    else:
        with HeadInputs(model) as capture:
            out = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        hidden = capture.captured[-1][b_idx, t_idx]  # (N, H)
        logits = out.logits[b_idx, t_idx]  # (N, V)
    return FrozenOutputs(hidden=hidden, logits=logits, targets=targets.to(logits.device), counts=counts)
