"""The scoring engine on tiny random models: what is scored, how, and what happens on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import build_model, build_tokenizer
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.estimators import aggregate
from sighead_eval.scoring import (
    GenerationOptions,
    ScoringOptions,
    generate,
    score,
    word_spans,
)

RECORDS = [
    {"id": "a", "prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
    {"id": "b", "prompt": "Add them.", "response": "Two plus two is four, and three plus three is six."},
    {
        "id": "c",
        "messages": [
            {"role": "user", "content": "Tell me about Everest."},
            {"role": "assistant", "content": "Mount Everest is the highest mountain on Earth."},
        ],
    },
    {"id": "d", "prompt": "Boiling?", "response": "Water boils."},
]


def _with_head(kind: str = "llama", seed: int = 0):
    model = get_peft_model(build_model(kind, seed=seed), SigmoidHeadConfig())
    with torch.no_grad():  # a head that differs from the LM head, so its scores are its own
        head = model.get_base_model().get_output_embeddings().sigmoid_head_embedding["default"].weight
        head.mul_(0.1).add_(torch.randn_like(head) * 0.5)
    return model.eval()


def _close(a, b, atol=1e-5):
    assert a.estimators == b.estimators
    for e in a.estimators:
        np.testing.assert_allclose(a.log_scores[e], b.log_scores[e], atol=atol)
    np.testing.assert_allclose(a.entropy, b.entropy, atol=atol)
    np.testing.assert_array_equal(a.dominant_size, b.dominant_size)


def test_batched_equals_unbatched(kind, tokenizer):
    model = _with_head(kind)
    batched = score(model, tokenizer, RECORDS, ScoringOptions(batch_size=4), progress=False)
    for record, result in zip(RECORDS, batched):
        single = score(model, tokenizer, [record], ScoringOptions(batch_size=1), progress=False)[0]
        _close(result, single)
        assert result.record["id"] == record["id"]


def test_only_response_tokens_are_scored(tokenizer):
    model = _with_head()
    result = score(model, tokenizer, RECORDS[:1], progress=False)[0]
    expected = tokenizer(RECORDS[0]["response"], add_special_tokens=False)["input_ids"]
    assert result.token_ids == expected
    assert "".join(result.tokens) == RECORDS[0]["response"]
    with_eos = score(model, tokenizer, RECORDS[:1], ScoringOptions(include_eos=True), progress=False)[0]
    assert with_eos.token_ids == expected + [tokenizer.eos_token_id]
    np.testing.assert_allclose(with_eos.log_scores["softmax"][:-1], result.log_scores["softmax"], atol=1e-6)


def test_scores_match_a_direct_forward_pass(tokenizer):
    model = _with_head("qwen2")
    record = RECORDS[1]
    result = score(model, tokenizer, [record], progress=False)[0]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": record["prompt"]}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + result.token_ids])
    out = model(input_ids=ids, output_sigmoid_logits=True)
    positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    targets = torch.tensor(result.token_ids)
    logp = torch.log_softmax(out.logits[0, positions], -1)
    softmax = logp.gather(-1, targets[:, None])[:, 0]
    sigmoid = torch.nn.functional.logsigmoid(
        out.sigmoid_logits[0, positions].gather(-1, targets[:, None])[:, 0]
    )
    entropy = -(logp.exp() * logp).sum(-1)
    np.testing.assert_allclose(result.log_scores["softmax"], softmax.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(result.log_scores["sigmoid"], sigmoid.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(result.entropy, entropy.detach().numpy(), atol=1e-5)


def test_chat_template_switch(tokenizer):
    model = _with_head()
    on = score(model, tokenizer, RECORDS[:1], progress=False)[0]
    off = score(model, tokenizer, RECORDS[:1], ScoringOptions(chat_template=False), progress=False)[0]
    assert on.token_ids == off.token_ids
    assert not np.allclose(on.log_scores["softmax"], off.log_scores["softmax"])


def test_chat_template_requested_without_one(plain_tokenizer):
    with pytest.raises(ValueError, match="`chat_template=True` but the tokenizer has no chat template"):
        score(_with_head(), plain_tokenizer, RECORDS[:1], ScoringOptions(chat_template=True), progress=False)


def test_plain_tokenizer_empty_prompt_starts_from_bos(plain_tokenizer):
    result = score(
        _with_head("gpt2"), plain_tokenizer, [{"prompt": "", "response": "Water boils."}], progress=False
    )
    assert "".join(result[0].tokens) == "Water boils."


def test_sequence_aggregates_are_named_and_consistent(tokenizer):
    result = score(_with_head(), tokenizer, RECORDS[:1], progress=False)[0]
    seq = result.sequence_scores()
    for e in ("sigmoid", "softmax", "boostedprob"):
        logs = result.log_scores[e]
        assert seq[f"{e}_sumlog"] == pytest.approx(logs.sum())
        assert seq[f"{e}_meanlog"] == pytest.approx(logs.mean())
        assert seq[f"{e}_prod"] == pytest.approx(math.exp(logs.sum()))
        assert seq[f"{e}_mean"] == pytest.approx(np.exp(logs).mean())
        assert seq[f"{e}_min"] == pytest.approx(np.exp(logs).min())
    assert seq["entropy_mean"] == pytest.approx(result.entropy.mean())
    # BoostedProb never scores a token lower than its softmax probability
    assert (result.log_scores["boostedprob"] >= result.log_scores["softmax"] - 1e-6).all()


def test_aggregate_by_hand():
    out = aggregate(np.log([0.5, 0.25]))
    assert out == pytest.approx(
        {"mean": 0.375, "prod": 0.125, "sumlog": math.log(0.125), "meanlog": math.log(0.125) / 2, "min": 0.25}
    )


def test_word_level_combines_pieces_as_a_product(tokenizer):
    result = score(_with_head(), tokenizer, RECORDS[:1], progress=False)[0]
    words, scores = result.words()
    assert "".join(words) == RECORDS[0]["response"]
    spans = word_spans(result.tokens)
    for (a, b), value in zip(spans, scores["softmax"]):
        assert value == pytest.approx(math.exp(result.log_scores["softmax"][a:b].sum()))


def test_word_spans():
    assert word_spans(["The", " cap", "ital", " of", "\n", "Par", "is"]) == [
        (0, 1),
        (1, 3),
        (3, 4),
        (4, 5),
        (5, 7),
    ]


def test_without_adapter_only_the_softmax_baselines(tokenizer):
    result = score(build_model("llama"), tokenizer, RECORDS[:1], progress=False)[0]
    assert result.estimators == ["softmax", "boostedprob", "ceiling", "weighted_boostedprob"]
    assert "sigmoid_mean" not in result.sequence_scores()


def test_disabled_adapter_scores_like_no_adapter(tokenizer):
    model = _with_head()
    with model.disable_adapter():
        result = score(model, tokenizer, RECORDS[:1], progress=False)[0]
    plain = score(build_model("llama"), tokenizer, RECORDS[:1], progress=False)[0]
    assert "sigmoid" not in result.log_scores
    np.testing.assert_allclose(result.log_scores["softmax"], plain.log_scores["softmax"], atol=1e-6)


def test_empty_response_scores_the_end_of_turn_token(tokenizer):
    result = score(_with_head(), tokenizer, [{"prompt": "Say nothing.", "response": ""}], progress=False)[0]
    assert result.empty_response
    assert result.token_ids == [tokenizer.eos_token_id]
    values = list(result.sequence_scores().values())
    assert all(math.isfinite(v) for v in values)
    assert result.to_dict()["n_tokens"] == 1


def test_too_long_input_is_an_error_or_truncated_left(tokenizer):
    model = _with_head()
    long = {"prompt": "The capital of France is Paris. " * 40, "response": "Paris."}
    with pytest.raises(ValueError, match=r"record 0 is \d+ tokens long, more than `max_length` = 256"):
        score(model, tokenizer, [long], progress=False)
    with pytest.warns(UserWarning, match="dropped .* prompt tokens from the left"):
        result = score(model, tokenizer, [long], ScoringOptions(truncation="left"), progress=False)[0]
    assert result.prompt_tokens_dropped > 0
    assert "".join(result.tokens) == "Paris."
    with pytest.raises(ValueError, match="the response alone is too long"):
        score(
            model,
            tokenizer,
            [{"prompt": "x", "response": "Paris. " * 200}],
            ScoringOptions(truncation="left"),
        )


def test_tokenizer_without_pad_or_eos_is_refused():
    tokenizer = build_tokenizer(chat=True)
    tokenizer.eos_token = None
    model = build_model("gpt2")
    model.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match="no pad token and no EOS token"):
        score(model, tokenizer, RECORDS[:1], progress=False)


@pytest.mark.parametrize(
    ("record", "error", "message"),
    [
        (
            {"text": "hi"},
            ValueError,
            r"record 0 has keys \['text'\]; accepted: `messages`.*`prompt` with `response`",
        ),
        ({"prompt": "hi"}, ValueError, "record 0: has `prompt` but no `response` to score"),
        ({"prompt": 3, "response": "x"}, TypeError, "`prompt` and `response` should be strings"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            ValueError,
            "the last message should be the assistant's response to score, got role 'user'",
        ),
        ("hello", TypeError, "record 0 should be a dict, got str"),
    ],
)
def test_bad_records_are_refused(tokenizer, record, error, message):
    with pytest.raises(error, match=message):
        score(_with_head(), tokenizer, [record], progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "`batch_size` should be a positive integer or 'auto', got 0"),
        ({"truncation": "right"}, r"`truncation` should be one of \('error', 'left'\), got 'right'"),
        ({"max_length": 1}, "`max_length` should be an integer >= 2 or None, got 1"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScoringOptions(**kwargs)


def test_generation_scores_equal_force_decoding_of_the_same_tokens(kind, tokenizer):
    model = _with_head(kind)
    prompts = [{"prompt": r["prompt"]} for r in RECORDS if "prompt" in r]
    generated = generate(
        model, tokenizer, prompts, generation=GenerationOptions(max_new_tokens=10), progress=False
    )
    forced = score(
        model,
        tokenizer,
        [
            {**p, "response": g.response, "response_token_ids": g.token_ids}
            for p, g in zip(prompts, generated)
        ],
        ScoringOptions(batch_size=2),
        progress=False,
    )
    for g, f in zip(generated, forced):
        assert len(g.token_ids) == 10 and not g.finished
        _close(g, f, atol=1e-5)


def test_generation_stops_at_eos_and_leaves_it_out(tokenizer):
    model = _with_head()
    prompts = [{"prompt": "Hi"}]
    options = GenerationOptions(
        max_new_tokens=8, do_sample=True, temperature=1.5, seed=3
    )  # varied, reproducible
    free = generate(model, tokenizer, prompts, generation=options, progress=False)[0]
    # Make a token the model really generates, first seen at position `stop`, the end-of-turn token.
    stop = next(i for i in range(1, 8) if free.token_ids[i] not in free.token_ids[:i])
    ending = build_tokenizer(chat=True)
    ending.eos_token = ending.convert_ids_to_tokens(free.token_ids[stop])
    model.get_base_model().generation_config.eos_token_id = None
    cut = generate(model, ending, prompts, generation=options, progress=False)[0]
    assert cut.finished and cut.token_ids == free.token_ids[:stop]
    kept = generate(model, ending, prompts, ScoringOptions(include_eos=True), options, progress=False)[0]
    assert kept.token_ids == free.token_ids[: stop + 1]
    np.testing.assert_allclose(kept.log_scores["softmax"][:stop], cut.log_scores["softmax"], atol=1e-6)


def test_generation_with_adapter_writes_the_same_text(tokenizer):
    base = build_model("llama")
    prompts = [{"prompt": "What is the capital of France?"}]
    plain = generate(
        base, tokenizer, prompts, generation=GenerationOptions(max_new_tokens=12), progress=False
    )
    model = get_peft_model(base, SigmoidHeadConfig())
    adapted = generate(
        model, tokenizer, prompts, generation=GenerationOptions(max_new_tokens=12), progress=False
    )
    assert plain[0].token_ids == adapted[0].token_ids
    assert "sigmoid" in adapted[0].log_scores and "sigmoid" not in plain[0].log_scores


def test_sampled_generation_is_reproducible_by_seed(tokenizer):
    model = _with_head()
    prompts = [{"prompt": "Hi"}, {"prompt": "Tell me something."}]
    options = GenerationOptions(max_new_tokens=12, do_sample=True, temperature=1.5, seed=3)
    a = generate(model, tokenizer, prompts, generation=options, progress=False)
    b = generate(model, tokenizer, prompts, generation=options, progress=False)
    c = generate(
        model, tokenizer, prompts, generation=GenerationOptions(12, True, 1.5, seed=4), progress=False
    )
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_seq2seq_force_decoding(tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=300, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    model = get_peft_model(BartForConditionalGeneration(config).eval(), SigmoidHeadConfig())
    results = score(model, tokenizer, RECORDS[:2], ScoringOptions(batch_size=2), progress=False)
    for record, result in zip(RECORDS, results):
        assert result.token_ids == tokenizer(record["response"], add_special_tokens=False)["input_ids"]
        single = score(model, tokenizer, [record], progress=False)[0]
        _close(result, single)


def test_token_scores_equal_the_plain_formulas_on_peaked_flat_and_masked_rows():
    """The fast per-token core (one softmax, a short top-k, one dot product) against the textbook
    formulas and a full sort, on rows whose dominant rule needs more than the short top-k."""
    from sighead_eval.dominant import dominant_tokens
    from sighead_eval.scoring import SHORT_TOP_K, token_scores

    g = torch.Generator().manual_seed(0)
    vocab = 3000
    z = torch.randn(64, vocab, generator=g) * 2
    z[:20, :3] += 8.0  # a clear dominant set
    z[20:40] = torch.randn(20, vocab, generator=g) * 0.05
    z[20:40, :60] += 4.0  # a flat block of 60 tokens above epsilon: more than the short top-k decides
    z[40:44, 100:] = -math.inf  # masked tokens
    targets = torch.randint(0, 100, (64,), generator=g)
    out = token_scores(z, targets)
    logp = torch.log_softmax(z, -1)
    p = logp.exp()
    sets = dominant_tokens(logp, top_k=vocab)  # a full sort
    assert (sets.size[20:40] > SHORT_TOP_K).all() and (sets.size[:20] > 0).all()
    assert torch.allclose(out["softmax"], logp.gather(-1, targets[:, None])[:, 0], atol=1e-5)
    assert torch.equal(out["dominant_size"], sets.size.float())
    assert torch.allclose(out["dominant_mass"], sets.mass, atol=1e-6)
    boosted = torch.where(sets.contains(targets), sets.mass.log(), logp.gather(-1, targets[:, None])[:, 0])
    assert torch.allclose(out["boostedprob"], boosted, atol=1e-5)
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    assert torch.allclose(out["entropy"], entropy, atol=1e-4)
    assert torch.equal(out["greedy"], (z.argmax(-1) == targets).float())


def test_the_ceiling_is_the_converged_heads_closed_form():
    """1 for a dominant token; else p / (p + 5 sqrt(p) / S + 5 / V), S over the non-dominant tokens
    (the paper's recipe: K = 10, half unigram, half softmax at T = 2)."""
    from sighead_eval.mechanism import regime_distributions
    from sighead_eval.scoring import token_scores

    p = torch.tensor(regime_distributions()[0][2], dtype=torch.float32)  # a winner, a smooth tail
    targets = torch.tensor([0, 1, 3])
    out = token_scores(p.log().expand(3, -1), targets)
    s = p[1:].sqrt().sum()  # the winner alone is dominant
    expected = [1.0] + [float(p[t] / (p[t] + 5 * p[t].sqrt() / s + 5 / p.numel())) for t in (1, 3)]
    assert out["dominant_size"].tolist() == [1.0, 1.0, 1.0]
    assert out["ceiling"].exp().tolist() == pytest.approx(expected, rel=1e-4)

    assert torch.isfinite(out["ceiling"]).all()


def test_the_hybrid_is_the_head_times_its_ceiling_and_needs_a_head(tokenizer):
    from sighead_eval.scoring import active_head_layer, token_scores

    model = _with_head()
    layer = active_head_layer(model)
    vocab, width = layer.base_layer.weight.shape
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, vocab, generator=g) * 0.5
    z[:, 0] += 8.0  # token 0 wins clearly: dominant
    targets = torch.tensor([0, 0, 0, 0, 5, 6, 7, 8])
    hidden = torch.randn(8, width, generator=g)
    with torch.no_grad():
        out = token_scores(z, targets, hidden, layer)
    assert torch.allclose(out["hybrid"], out["sigmoid"] + out["ceiling"], atol=1e-6)
    inside = out["ceiling"] == 0
    assert inside.tolist() == [True] * 4 + [False] * 4
    assert torch.equal(out["hybrid"][:4], out["sigmoid"][:4])  # inside the set: the trained head's own
    assert (out["hybrid"][4:] < out["sigmoid"][4:]).all()  # outside: discounted by the mechanism
    assert "hybrid" not in token_scores(z, targets) and "sigmoid" not in token_scores(z, targets)
    [scored] = score(model, tokenizer, RECORDS[:1], progress=False)
    logs = scored.log_scores
    np.testing.assert_allclose(logs["hybrid"], logs["sigmoid"] + logs["ceiling"], atol=1e-6)
    assert scored.sequence_scores()["hybrid_min"] == pytest.approx(float(np.exp(logs["hybrid"].min())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
def test_scores_on_a_gpu_equal_those_on_the_cpu(tokenizer):
    """Every estimator, the opt-in `combined` too: the GPU's fused statistics and one-sort top-k
    against the CPU's branches."""
    from sighead_eval.estimators import TOKEN_ESTIMATORS

    model = _with_head()
    options = ScoringOptions(estimators=TOKEN_ESTIMATORS)
    on_cpu = score(model, tokenizer, RECORDS, options, progress=False)
    on_gpu = score(model.to("cuda"), tokenizer, RECORDS, options, progress=False)
    for a, b in zip(on_cpu, on_gpu):
        assert set(a.log_scores) == set(TOKEN_ESTIMATORS)
        _close(a, b, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs; this machine has fewer")
def test_a_model_spread_over_gpus_scores_as_on_one_device(tokenizer, tmp_path):
    """device='auto' (device_map over the GPUs at hand): the head sits with the output layer and
    the scores equal a one-device run."""
    from sighead_eval.models import load_adapter, load_model, save_adapter

    model = _with_head()
    save_adapter(model, tmp_path / "head", storage_dtype=None)
    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    expected = score(model, tokenizer, RECORDS, progress=False)
    spread, _ = load_model(str(tmp_path / "base"), device="auto")
    assert spread.hf_device_map  # placed by accelerate
    spread = load_adapter(spread, tmp_path / "head")
    for a, b in zip(expected, score(spread, tokenizer, RECORDS, progress=False)):
        _close(a, b, atol=1e-4)
