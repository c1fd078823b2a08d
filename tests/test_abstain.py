"""Confidence while decoding (`sighead_eval.scoring.abstain`): abstention as a `StoppingCriteria` in plain
`model.generate`, behind `generate(stopping=...)`, `GenerationOptions(abstain_below=...)` and
`score --generate --abstain-below`, and a streamer of per-token scores."""

from __future__ import annotations

import json
from threading import Thread

import numpy as np
import pytest
import torch
from conftest import build_model
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.scoring import GenerationOptions, generate, score
from sighead_eval.scoring.abstain import AbstainBelow, TokenScoreStreamer

PROMPTS = [{"prompt": "What is the capital of France?"}, {"prompt": "Tell me about Everest."}]


def _model():
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    with torch.no_grad():  # a head of its own, so its scores spread
        head = model.get_base_model().get_output_embeddings().sigmoid_head_embedding["default"].weight
        head.mul_(0.1).add_(torch.randn_like(head) * 0.5)
    return model.eval()


def _inputs(tokenizer, text="What is the capital of France?"):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    return torch.tensor([ids])


def _plain(model, ids, n=12, **kwargs):
    return model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, eos_token_id=None, **kwargs)


def test_a_stopping_criteria_in_plain_generate_stops_where_the_running_minimum_falls(tokenizer):
    model = _model()
    ids = _inputs(tokenizer)
    free = _plain(model, ids)[0, ids.shape[1] :]
    forced = score(
        model,
        tokenizer,
        [{"prompt_token_ids": ids[0].tolist(), "response": "", "response_token_ids": free.tolist()}],
        progress=False,
    )[0]
    running = np.minimum.accumulate(np.exp(forced.log_scores["sigmoid"]))
    threshold = float(running[5] + running[6]) / 2 if running[5] > running[6] else float(running[6]) + 1e-9
    expected = int(np.argmax(running < threshold))

    rule = AbstainBelow(model, threshold)
    out = _plain(model, ids, stopping_criteria=rule.as_list())[0, ids.shape[1] :]
    rule.close()
    assert rule.abstained.tolist() == [True] and rule.abstained_at.tolist() == [expected]
    assert out.tolist() == free[: expected + 1].tolist()  # the same tokens, up to where it stopped

    never = AbstainBelow(model, 0.0)
    untouched = _plain(model, ids, stopping_criteria=never.as_list())[0, ids.shape[1] :]
    never.close()
    assert untouched.tolist() == free.tolist() and never.abstained.tolist() == [False]


def test_generate_marks_abstained_outputs_and_where(tokenizer):
    model = _model()
    free = generate(
        model, tokenizer, PROMPTS, generation=GenerationOptions(max_new_tokens=10), progress=False
    )
    options = GenerationOptions(max_new_tokens=10, abstain_below=1.0)  # every token is below 1
    out = generate(model, tokenizer, PROMPTS, generation=options, progress=False)
    for f, o in zip(free, out):
        assert o.abstained is True and o.abstained_at == 0 and o.token_ids == f.token_ids[:1]
        assert not o.finished and o.to_dict()["abstained"] is True and o.summary()["abstained_at"] == 0
        np.testing.assert_allclose(o.log_scores["sigmoid"], f.log_scores["sigmoid"][:1], atol=1e-6)
    kept = generate(
        model, tokenizer, PROMPTS, generation=GenerationOptions(10, abstain_below=0.0), progress=False
    )
    assert [k.token_ids for k in kept] == [f.token_ids for f in free]
    assert all(k.abstained is False and k.abstained_at is None for k in kept)
    assert "abstained" not in free[0].to_dict()  # no rule asked for: no field


def test_generate_takes_a_ready_made_rule_built_by_its_caller(tokenizer):
    """The engine never builds the rule: its caller does, once, and the engine resets it before
    each batch, so a row's running confidence starts afresh in every batch."""
    from sighead_eval.scoring import ScoringOptions, abstention_rule, engine

    model = _model()
    free = generate(model, tokenizer, PROMPTS[:1], generation=GenerationOptions(10), progress=False)[0]
    threshold = float(np.exp(free.log_scores["sigmoid"][:4].min())) + 1e-6  # the first row stops early
    options = GenerationOptions(max_new_tokens=10, abstain_below=threshold)
    alone = [generate(model, tokenizer, [p], generation=options, progress=False)[0] for p in PROMPTS]
    assert alone[0].abstained and alone[0].abstained_at <= 3
    with abstention_rule(model, options) as rule:  # one rule for both batches (batch size 1)
        given = engine.generate(
            model, tokenizer, PROMPTS, ScoringOptions(batch_size=1), options, progress=False, stopping=rule
        )
    outcome = lambda r: (r.token_ids, r.abstained, r.abstained_at)  # noqa: E731
    assert [outcome(g) for g in given] == [outcome(a) for a in alone]
    assert abstention_rule(model, GenerationOptions(10)) is None
    with pytest.raises(ValueError, match="needs its stopping rule"):
        engine.generate(model, tokenizer, PROMPTS, generation=options, progress=False)


def test_abstention_needs_a_head_for_the_heads_confidence(tokenizer):
    with pytest.raises(ValueError, match="needs a Sigmoid Head adapter"):
        AbstainBelow(build_model("llama"), 0.5)
    with pytest.raises(ValueError, match="unknown decode-time confidence 'sigmoid_median'"):
        AbstainBelow(_model(), 0.5, "sigmoid_median")
    with pytest.raises(ValueError, match="`abstain_below` is a probability"):
        GenerationOptions(abstain_below=1.5)
    with pytest.raises(ValueError, match="unknown decode-time confidence 'entropy_max'"):
        GenerationOptions(abstain_below=0.5, abstain_confidence="entropy_max")  # before any model loads
    plain = generate(
        build_model("llama"), tokenizer, PROMPTS[:1], generation=GenerationOptions(5, abstain_below=1.0,
        abstain_confidence="softmax_min"), progress=False,
    )[0]  # fmt: skip
    assert plain.abstained and plain.abstained_at == 0  # the softmax needs no head


def test_the_streamer_yields_each_token_with_the_scores_of_force_decoding(tokenizer):
    model = _model()
    ids = _inputs(tokenizer)
    streamer = TokenScoreStreamer(model, tokenizer, timeout=60)
    thread = Thread(target=_plain, args=(model, ids), kwargs={"n": 8, "streamer": streamer})
    thread.start()
    items = list(streamer)
    thread.join()
    assert len(items) == 8
    forced = score(
        model,
        tokenizer,
        [
            {
                "prompt_token_ids": ids[0].tolist(),
                "response": "",
                "response_token_ids": [i["id"] for i in items],
            }
        ],
        progress=False,
    )[0]
    np.testing.assert_allclose([i["sigmoid"] for i in items], np.exp(forced.log_scores["sigmoid"]), atol=1e-5)
    np.testing.assert_allclose([i["softmax"] for i in items], np.exp(forced.log_scores["softmax"]), atol=1e-5)
    assert items[0]["token"] == tokenizer.decode([items[0]["id"]])


def test_score_generate_abstain_below_on_the_command_line(tiny_dir, capsys):
    from sighead_eval.cli import main

    (tiny_dir / "in.jsonl").write_text(json.dumps({"prompt": "Hi"}) + "\n")
    args = ["score", "--input", str(tiny_dir / "in.jsonl"), "--output", str(tiny_dir / "out.jsonl")]
    args += ["--model", str(tiny_dir / "base"), "--adapter", str(tiny_dir / "head"), "--generate"]
    assert main([*args, "--max-new-tokens", "6", "--abstain-below", "1.0", "--no-tokens"]) == 0
    row = json.loads((tiny_dir / "out.jsonl").read_text())
    assert row["abstained"] is True and row["abstained_at"] == 0 and row["n_tokens"] == 1
