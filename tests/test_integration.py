"""The real embedded model, SmolLM2-135M-Instruct (converted once into the user cache)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.models import default_model_dir, load_model
from sighead_eval.scoring import GenerationOptions, ScoringOptions, generate, score

pytestmark = pytest.mark.integration

QA = [
    {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
    {"prompt": "What is the capital of France?", "response": "The capital of France is Madrid."},
    {"prompt": "How many legs does a spider have?", "response": "A spider has eight legs."},
]


@pytest.fixture(scope="module")
def smol():
    model, tokenizer = load_model()
    return model, tokenizer


def test_default_model_is_cached_as_safetensors(smol):
    path = default_model_dir()
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.gguf"))
    model, tokenizer = smol
    assert model.config.vocab_size == 49152 and tokenizer.chat_template


def test_attached_head_leaves_logits_and_generation_bit_identical(smol):
    model, tokenizer = smol
    ids = tokenizer(QA[0]["prompt"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits.clone()
        greedy = model.generate(ids, max_new_tokens=12, do_sample=False)
        peft_model = get_peft_model(model, SigmoidHeadConfig())
        try:
            assert torch.equal(peft_model(input_ids=ids).logits, logits)
            assert torch.equal(peft_model.generate(input_ids=ids, max_new_tokens=12, do_sample=False), greedy)
        finally:
            peft_model.unload()


def test_saved_head_size_is_vocab_times_hidden(smol, tmp_path):
    model, _ = smol
    peft_model = get_peft_model(model, SigmoidHeadConfig())
    try:
        peft_model.save_pretrained(tmp_path)
    finally:
        peft_model.unload()
    size = os.path.getsize(tmp_path / "adapter_model.safetensors")
    assert 49152 * 576 * 4 <= size < 49152 * 576 * 4 + 4096


def test_real_answers_are_scored_batched_like_unbatched(smol):
    model, tokenizer = smol
    batched = score(model, tokenizer, QA, ScoringOptions(batch_size=3), progress=False)
    for record, result in zip(QA, batched):
        single = score(model, tokenizer, [record], ScoringOptions(batch_size=1), progress=False)[0]
        # fp32 noise across batch shapes depends on the CPU's kernels: up to 1.3e-5 seen in a 30-layer model
        np.testing.assert_allclose(result.log_scores["softmax"], single.log_scores["softmax"], atol=5e-5)
    right, wrong = (r.sequence_scores()["softmax_prod"] for r in batched[:2])
    assert right > wrong  # the base model knows the capital of France


def test_generation_scores_match_force_decoding(smol):
    model, tokenizer = smol
    peft_model = get_peft_model(model, SigmoidHeadConfig())
    try:
        prompts = [{"prompt": QA[0]["prompt"]}, {"prompt": QA[2]["prompt"]}]
        generated = generate(peft_model, tokenizer, prompts, generation=GenerationOptions(max_new_tokens=16))
        assert "Paris" in generated[0].response
        forced = score(
            peft_model,
            tokenizer,
            [
                {**p, "response": g.response, "response_token_ids": g.token_ids}
                for p, g in zip(prompts, generated)
            ],
            progress=False,
        )
        for g, f in zip(generated, forced):
            for e in ("sigmoid", "softmax", "boostedprob"):
                np.testing.assert_allclose(g.log_scores[e], f.log_scores[e], atol=1e-4)
    finally:
        peft_model.unload()


def test_lm_eval_generation_scores_equal_the_generation_time_scores(smol):
    """The `sighead` lm-eval model lets HFLM generate, then scores the decoded text again: on the
    real model and tokenizer, the re-encoded tokens and their scores are those of generation."""
    from lm_eval.api.instance import Instance

    from sighead_eval.harness.model import SigheadLM
    from sighead_eval.runs import shipped_adapter

    adapter = shipped_adapter()
    if adapter is None:
        pytest.skip("the shipped head is not beside this checkout")
    lm = SigheadLM(adapter=str(adapter), batch_size=4)
    questions = [
        "What is the capital of Peru?",
        "What is 17 + 25?",
        "Name a large animal.",
        "Who wrote Hamlet?",
    ]
    contexts = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
    requests = [
        Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 24, "do_sample": False}), i)
        for i, c in enumerate(contexts)
    ]
    outputs = lm.generate_until(requests)
    generated = generate(
        lm.model, lm.tokenizer, [{"prompt": q} for q in questions], ScoringOptions(batch_size=4),
        GenerationOptions(max_new_tokens=24), progress=False,
    )  # fmt: skip
    for out, gen in zip(outputs, generated):
        assert str(out) == gen.response
        assert out.sighead["tokens"]["text"] == gen.tokens  # the same tokens after re-encoding
        for e in ("sigmoid", "softmax", "boostedprob"):
            np.testing.assert_allclose(out.sighead["tokens"][e], np.exp(gen.log_scores[e]), atol=2e-4)
