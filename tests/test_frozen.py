"""The shared frozen pass: logits computed at scored positions only, checked against the model's own."""

from __future__ import annotations

import torch
from conftest import build_model

from sighead_eval.frozen import _FAST_OK, frozen_pass

SEQS = [[5, 17, 42, 99, 3, 250, 7], [1, 2, 3, 4]]
STARTS = [3, 1]


def _full_logits(model):
    out = []
    for s, st in zip(SEQS, STARTS):
        logits = model(torch.tensor([s])).logits[0]
        out.append(logits[st - 1 : len(s) - 1])
    return torch.cat(out)


def test_fast_path_matches_full_logits(kind):
    model = build_model(kind)
    frozen = frozen_pass(model, SEQS, STARTS, pad=0)
    assert getattr(model, _FAST_OK) is True
    assert frozen.counts == [4, 3]
    assert frozen.targets.tolist() == [99, 3, 250, 7, 2, 3, 4]
    torch.testing.assert_close(frozen.logits, _full_logits(model), atol=1e-5, rtol=1e-5)


def test_model_with_soft_capped_logits_takes_the_full_path():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.5,
    )  # fmt: skip
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # make the cap bite
    frozen = frozen_pass(model, SEQS, STARTS, pad=0)
    assert getattr(model, _FAST_OK) is False
    torch.testing.assert_close(frozen.logits, _full_logits(model), atol=1e-5, rtol=1e-5)
    assert frozen.logits.abs().max() <= 0.5 + 1e-6


def test_wrapped_method_wraps_one_instance_for_the_block_and_restores_it():
    from sighead_eval.frozen import wrapped_method

    class Thing:
        def go(self):
            return "class"

    plain, own = Thing(), Thing()
    own.go = lambda: "own"
    for thing, before in ((plain, "class"), (own, "own")):
        with wrapped_method(thing, "go", lambda original: lambda: "wrapped " + original()):
            assert thing.go() == f"wrapped {before}" and Thing().go() == "class"  # this instance only
        assert thing.go() == before
    assert "go" not in plain.__dict__
    try:
        with wrapped_method(plain, "go", lambda original: original):
            raise KeyError("inside")
    except KeyError:
        pass
    assert "go" not in plain.__dict__  # restored on an error too
