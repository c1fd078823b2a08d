"""Training the Sigmoid Head: each step of the method, then the trainer on tiny models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CORPUS, build_model
from safetensors.torch import load_file

from sighead_eval.dominant import dominant_tokens
from sighead_eval.training import (
    TrainConfig,
    Trainer,
    TrainingError,
    detect_shape,
    encode_examples,
    excluded_tokens,
    full_vocab_loss,
    sample_negatives,
    sigmoid_head_loss,
    train,
    unigram_distribution,
)
from sighead_eval.training.checkpoint import read_checkpoint_meta


def _peaked_logits(n: int = 64, vocab: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g) * 2
    logits[:, :3] += 6.0  # a dominant set at the top
    return logits


# -- negatives ------------------------------------------------------------------------------------
def test_negatives_avoid_the_reference_and_the_dominant_set():
    logits = _peaked_logits()
    targets = torch.randint(0, 300, (64,), generator=torch.Generator().manual_seed(1))
    sets = dominant_tokens(torch.log_softmax(logits, -1))
    assert sets.size.float().mean() > 1
    unigram = torch.full((300,), 1 / 300)
    neg, valid = sample_negatives(logits, targets, sets=sets, unigram=unigram, generator=torch.Generator())
    assert neg.shape == valid.shape == (64, 10)
    excluded = excluded_tokens(sets, targets, 300)
    assert not excluded.gather(1, neg).any()
    for half in (neg[:, :5], neg[:, 5:]):  # each half is drawn without replacement
        assert all(len(set(row.tolist())) == 5 for row in half)
    duplicated = (neg[:, 5:].unsqueeze(-1) == neg[:, :5].unsqueeze(1)).any(-1)
    assert torch.equal(~valid[:, 5:], duplicated) and valid[:, :5].all()


def test_top_p_negatives_also_exclude_the_softmax_nucleus():
    from sighead_eval.training.negatives import top_p_set

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [0.0] * 6]).clamp_min(1e-9))
    assert top_p_set(logits, 0.7)[0, :4].tolist() == [True, True, False, False]  # 0.5 + 0.3 reach 0.7
    assert top_p_set(logits, 0.85)[0, :4].tolist() == [True, True, True, False]
    logits = _peaked_logits()
    logp = torch.log_softmax(logits, -1)
    sets = dominant_tokens(logp)
    targets = logits.argmin(-1)
    unigram = torch.full((logits.shape[1],), 1.0 / logits.shape[1])
    g = torch.Generator().manual_seed(0)
    neg, _ = sample_negatives(
        logits, targets, k=10, sets=sets, unigram=unigram, generator=g, exclude_top_p=0.9
    )
    nucleus = top_p_set(logits, 0.9)
    assert not nucleus.gather(1, neg).any()
    with pytest.raises(ValueError, match="top_p"):
        top_p_set(logits, 0.0)


def test_random_negatives_exclude_only_the_reference():
    logits = _peaked_logits(n=256)
    targets = torch.zeros(256, dtype=torch.long)
    neg, valid = sample_negatives(
        logits, targets, mode="random", k=20, generator=torch.Generator().manual_seed(0)
    )
    assert valid.all() and not (neg == 0).any()
    assert ((neg == 1) | (neg == 2)).any()  # dominant tokens can be drawn


@pytest.mark.parametrize("share", [1.0, 0.0])
def test_sampling_follows_the_masked_proposal(share):
    """First draws are distributed as the proposal renormalised over the allowed tokens."""
    vocab, n = 8, 20000
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.5, 0.0, -1.0, 0.2]]).expand(n, vocab)
    targets = torch.zeros(n, dtype=torch.long)
    unigram = torch.tensor([0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.1, 0.1])
    sets = dominant_tokens(torch.log_softmax(logits, -1), top_k=8)
    excluded = excluded_tokens(sets, targets, vocab)[0]
    neg, _ = sample_negatives(
        logits, targets, k=1, sets=sets, unigram=unigram, unigram_share=share, temperature=2.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    proposal = unigram if share == 1.0 else torch.softmax(logits[0] / 2.0, -1)
    expected = proposal.masked_fill(excluded, 0)
    expected = expected / expected.sum()
    observed = torch.bincount(neg[:, 0], minlength=vocab).float() / n
    assert torch.allclose(observed, expected, atol=0.015)


def test_unigram_distribution_zeroes_padding():
    dist = unigram_distribution([[1, 1, 2], [0, 0, 2]], vocab_size=4, pad_id=0)
    assert torch.allclose(dist, torch.tensor([0.0, 0.5, 0.5, 0.0]))


# -- loss -----------------------------------------------------------------------------------------
def _head_layer(vocab=20, hidden=4, offset="none"):
    from peft import get_peft_model

    from sighead_eval import SigmoidHeadConfig

    model = build_model("llama", vocab=vocab)
    peft = get_peft_model(model, SigmoidHeadConfig(init_from_lm_head=False, offset=offset))
    return peft.get_base_model().get_output_embeddings()


def test_loss_by_hand_and_sparse_rows():
    torch.manual_seed(0)
    layer = _head_layer(vocab=320)
    head = layer.sigmoid_head_embedding["default"]
    hidden = torch.randn(3, head.weight.shape[1])
    targets = torch.tensor([1, 2, 3])
    negatives = torch.tensor([[4, 5], [6, 7], [8, 9]])
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    logits = layer.head_logits(hidden, torch.cat([targets.unsqueeze(1), negatives], 1))
    loss = sigmoid_head_loss(logits, valid)
    w = head.weight.detach()
    terms = []
    for i in range(3):
        terms.append(-F.logsigmoid(w[targets[i]] @ hidden[i]))
        for j in range(2):
            if valid[i, j]:
                terms.append(-F.logsigmoid(-(w[negatives[i, j]] @ hidden[i])))
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)
    loss.backward()
    grad = head.weight.grad.coalesce()
    assert grad.is_sparse
    touched = set(grad.indices()[0].tolist())
    assert touched == {1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_offset_shifts_every_logit_of_a_position_by_minus_the_log_sum_exp():
    torch.manual_seed(0)
    plain, shifted = _head_layer(vocab=320), _head_layer(vocab=320, offset="log_softmax")
    with torch.no_grad():
        shifted.sigmoid_head_embedding["default"].weight.copy_(plain.sigmoid_head_embedding["default"].weight)
    hidden, ids = torch.randn(2, plain.active_head().shape[1]), torch.tensor([[1, 4, 5], [2, 6, 7]])
    base = torch.randn(2, 320)
    diff = shifted.head_logits(hidden, ids, base_logits=base) - plain.head_logits(hidden, ids)
    assert torch.allclose(diff, -torch.logsumexp(base, -1, keepdim=True).expand(2, 3), atol=1e-5)
    # the same rule on the full-vocabulary path and the one-token path
    full = shifted.head_logits(hidden, None, base_logits=base) - plain.head_logits(hidden, None)
    assert torch.allclose(full, -torch.logsumexp(base, -1, keepdim=True).expand(2, 320), atol=1e-5)
    one = shifted.head_logits(hidden, ids[:, 0], base_logits=base)
    assert torch.allclose(one, shifted.head_logits(hidden, ids, base_logits=base)[:, 0])
    with pytest.raises(ValueError, match="offset='log_softmax': pass the LM's logits"):
        shifted.head_logits(hidden, ids)


def test_full_vocab_loss_by_hand():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5), torch.tensor([0, 4])
    labels = torch.zeros(2, 5)
    labels[0, 0] = labels[1, 4] = 1
    expected = F.binary_cross_entropy_with_logits(logits, labels)
    assert full_vocab_loss(logits, targets).item() == pytest.approx(expected.item())


# -- data -----------------------------------------------------------------------------------------
def test_unknown_shape_lists_columns_found_and_accepted():
    with pytest.raises(ValueError, match=r"columns \['answer', 'question'\]; accepted shapes: `messages`;"):
        detect_shape(["question", "answer"])


def test_a_row_of_another_shape_is_named(tokenizer):
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}, {"text": "e"}]
    with pytest.raises(ValueError, match=r"training row 2 has keys \['text'\] .* 'prompt/response'.* lacks"):
        encode_examples(build_model("llama"), tokenizer, rows, max_length=32, chat_template=None)


def test_a_mistyped_local_data_path_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    import datasets

    from sighead_eval.training import load_records

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was asked"))
    for typo in (str(tmp_path / "train.jsonl"), "./data/train.jsonl", "data/sft.parquet"):
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            load_records(typo)


def test_masking_trains_response_tokens_only(tokenizer):
    model = build_model("llama")
    rows = [{"prompt": "Say something.", "response": "Water boils."}]
    (example,) = encode_examples(model, tokenizer, rows, max_length=512, chat_template=None)
    response = tokenizer("Water boils.", add_special_tokens=False)["input_ids"]
    assert example.ids[example.start :] == response
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say something."}], tokenize=False, add_generation_prompt=True
    )
    assert example.ids[: example.start] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_plain_text_trains_every_token_after_the_first(plain_tokenizer):
    (example,) = encode_examples(build_model("gpt2"), plain_tokenizer, [{"text": "Water boils."}], 512, None)
    assert example.start == 1 and plain_tokenizer.decode(example.ids[1:]) == "Water boils."


def test_chat_data_without_chat_template(plain_tokenizer):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    with pytest.raises(ValueError, match="chat-shaped \\(messages\\) but the tokenizer has no chat template"):
        encode_examples(build_model("gpt2"), plain_tokenizer, rows, 512, None)


def test_every_assistant_turn_is_trained_with_its_end_of_turn_token(tokenizer):
    """train_turns='all' (the authors' current code): each assistant turn's content and the template's
    closing tokens, end-of-turn first, and nothing of the user turns or the generation prompts;
    'last' keeps the last response's content alone."""
    model = build_model("llama")
    turns = [("user", "Say thing one."), ("assistant", "Water boils."), ("user", "And?")]
    turns.append(("assistant", "The capital of France is Paris."))
    rows = [{"messages": [{"role": r, "content": c} for r, c in turns]}]
    (every,) = encode_examples(model, tokenizer, rows, 512, None, train_turns="all")
    whole = tokenizer.apply_chat_template(rows[0]["messages"], tokenize=False)
    assert tokenizer.decode(every.ids) == whole
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trained = tokenizer.decode(every.targets)
    assert trained == "Water boils.<|im_end|>\nThe capital of France is Paris.<|im_end|>\n"
    assert every.targets.count(eot) == 2 and every.n_targets == len(every.positions)
    (last,) = encode_examples(model, tokenizer, rows, 512, None, train_turns="last")
    assert tokenizer.decode(last.targets) == "The capital of France is Paris." and eot not in last.targets
    # a conversation cut by max_length keeps the turns inside it
    (cut,) = encode_examples(model, tokenizer, rows, every.positions[3], None, train_turns="all")
    assert cut.positions == every.positions[:3]


def test_the_frozen_pass_scores_the_given_positions_only(tokenizer):
    from sighead_eval.frozen import frozen_pass

    model = build_model("llama").eval()
    seqs = [[5, 9, 14, 20, 33, 40], [7, 8, 9]]
    whole = frozen_pass(model, seqs, [1, 1], pad=0)
    picked = frozen_pass(model, seqs, [1, 1], pad=0, positions=[(2, 4), None])
    # rows of `whole`: (0, 2) and (0, 4), then every position of the second sequence
    assert picked.counts == [2, 2] and picked.targets.tolist() == [14, 33, 8, 9]
    assert torch.allclose(picked.logits, whole.logits[[1, 3, 5, 6]], atol=1e-5)
    assert torch.allclose(picked.hidden, whole.hidden[[1, 3, 5, 6]], atol=1e-5)


def test_empty_after_masking(tokenizer):
    rows = [{"prompt": "A long prompt " * 20, "response": "x"}]
    with pytest.raises(ValueError, match="no response token is left to train on after masking"):
        encode_examples(build_model("llama"), tokenizer, rows, max_length=10, chat_template=None)


# -- the trainer ----------------------------------------------------------------------------------
RECORDS = [{"prompt": f"Say thing {i}.", "response": CORPUS[i % 6]} for i in range(40)]


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    defaults = {
        "output_dir": str(tmp_path / name), "lr": 1e-2, "epochs": 2, "batch_size": 4, "grad_accum": 2,
        "eval_every": 2, "dev_fraction": 0.2, "patience": 10,
    }  # fmt: skip
    return TrainConfig(**{**defaults, **kw})


def _run(config, tokenizer, model=None):
    return train(
        config, model=model or build_model("llama"), tokenizer=tokenizer, records=RECORDS, progress=False
    )


def _head(path) -> torch.Tensor:
    return next(iter(load_file(str(Path(path) / "adapter_model.safetensors")).values()))


def test_training_lowers_dev_bce_and_writes_adapter_and_card(tmp_path, tokenizer):
    info = _run(_config(tmp_path), tokenizer)
    out = tmp_path / "run"
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    assert info["steps"] == 8 and info["tokens"] > 0
    card = (out / "README.md").read_text()
    for needle in (
        "base_model:",
        "dev_bce",
        "Trained response tokens",
        "Wall time",
        "`num_negatives` | `10`",
    ):
        assert needle in card
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 2, 4, 6, 8]
    assert not (out / "checkpoint.safetensors").exists()
    from peft import PeftModel

    PeftModel.from_pretrained(build_model("llama"), out)  # loads back


def test_separate_dev_data(tmp_path, tokenizer):
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"text": c}) + "\n" for c in CORPUS[:5]))
    info = _run(_config(tmp_path, dev_data=str(dev), epochs=1), tokenizer)
    assert info["n_dev"] == 5 and info["n_train"] == len(RECORDS)


def test_same_seed_same_adapter(tmp_path, tokenizer):
    _run(_config(tmp_path, "a"), tokenizer)
    _run(_config(tmp_path, "b"), tokenizer)
    _run(_config(tmp_path, "c", seed=1), tokenizer)
    assert torch.equal(_head(tmp_path / "a"), _head(tmp_path / "b"))
    assert not torch.equal(_head(tmp_path / "a"), _head(tmp_path / "c"))


def test_only_touched_rows_change(tmp_path, tokenizer):
    model = build_model("llama")
    initial = model.get_output_embeddings().weight.detach().clone()
    _run(_config(tmp_path, max_steps=1, eval_every=None, epochs=1), tokenizer, model=build_model("llama"))
    changed = (_head(tmp_path / "run") != initial).any(-1)
    assert 0 < changed.sum() < initial.shape[0]


@pytest.mark.parametrize("ranking", [0.0, 1.0], ids=["bce", "with-ranking-loss"])
@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_resumed_run_ends_with_the_same_adapter(tmp_path, tokenizer, monkeypatch, cached, ranking):
    """Interrupted and resumed (the cache rebuilt in memory, or read back from its directory):
    the same adapter as one uninterrupted run; with the authors' ranking loss too."""
    extra = {"ranking_loss_weight": ranking, **({"cache_hidden": True} if cached else {})}
    _run(_config(tmp_path, "whole", **extra), tokenizer)
    if cached:
        extra = {"ranking_loss_weight": ranking, "cache_dir": str(tmp_path / "cache")}
    real_step = Trainer._optimizer_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated interruption")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path, "split", **extra), tokenizer)
    assert (tmp_path / "split" / "checkpoint.safetensors").is_file()
    monkeypatch.setattr(Trainer, "_optimizer_step", real_step)
    _run(_config(tmp_path, "split", resume=True, **extra), tokenizer)
    assert torch.equal(_head(tmp_path / "whole"), _head(tmp_path / "split"))


def test_existing_adapter_is_not_overwritten_unless_asked(tmp_path, tokenizer):
    _run(_config(tmp_path, max_steps=1, eval_every=None), tokenizer)
    before = _head(tmp_path / "run")
    with pytest.raises(ValueError, match="already holds an adapter .* `overwrite=True`"):
        _run(_config(tmp_path, max_steps=1, eval_every=None, seed=5), tokenizer)
    assert torch.equal(_head(tmp_path / "run"), before)
    _run(_config(tmp_path, max_steps=1, eval_every=None, seed=5, overwrite=True), tokenizer)
    assert not torch.equal(_head(tmp_path / "run"), before)


def test_resume_without_checkpoint_or_with_other_settings(tmp_path, tokenizer, monkeypatch):
    with pytest.raises(ValueError, match="holds no checkpoint to resume from"):
        _run(_config(tmp_path, resume=True), tokenizer)
    monkeypatch.setattr(Trainer, "_optimizer_step", _raise_on_call(3))
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path), tokenizer)
    with pytest.raises(ValueError, match=r"made with other settings: \['lr'\]"):
        _run(_config(tmp_path, resume=True, lr=0.5), tokenizer)


def _raise_on_call(n):
    real = Trainer._optimizer_step
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return step


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer, monkeypatch):
    real = Trainer._batch_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, tokens = real(*args, **kwargs)
        return (loss * math.nan if calls["n"] > 9 else loss), tokens

    monkeypatch.setattr(Trainer, "_batch_loss", poisoned)
    with pytest.raises(TrainingError, match="non-finite training loss .* the checkpoint of step 4 is kept"):
        _run(_config(tmp_path), tokenizer)
    state = read_checkpoint_meta(tmp_path / "run")["state"]
    assert state["step"] == 4
    assert torch.isfinite(load_file(str(tmp_path / "run" / "checkpoint.safetensors"))["head"]).all()


def test_a_non_finite_loss_before_any_checkpoint_says_none_was_kept(tmp_path, tokenizer, monkeypatch):
    """No checkpoint exists before the first evaluation: the message says so, and does not advise
    `--resume` (which refuses a changed lr)."""
    real = Trainer._batch_loss

    def poisoned(*args, **kwargs):
        loss, tokens = real(*args, **kwargs)
        return loss * math.nan, tokens

    monkeypatch.setattr(Trainer, "_batch_loss", poisoned)
    with pytest.raises(TrainingError) as caught:
        _run(_config(tmp_path), tokenizer)
    message = str(caught.value)
    assert "no checkpoint was written yet (the first comes with the first evaluation, at step 2" in message
    assert "checkpoint is kept" not in message and "and resume" not in message
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_a_crash_while_checkpointing_keeps_the_last_checkpoint_whole(tmp_path, tokenizer, monkeypatch):
    """The checkpoint is replaced by a rename: a crash after writing the new file and before the
    rename leaves the old checkpoint intact, and a resumed run ends as an uninterrupted one."""
    from sighead_eval import files

    _run(_config(tmp_path, "whole"), tokenizer)
    real_replace, saves = os.replace, {"n": 0}

    def crash_on_second_checkpoint(src, dst):
        if str(dst).endswith("checkpoint.safetensors"):
            saves["n"] += 1
            if saves["n"] == 2:
                assert Path(src).stat().st_size > 0  # the new checkpoint was written completely
                raise KeyboardInterrupt("power cut between the write and the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path, "split"), tokenizer)
    monkeypatch.setattr(files.os, "replace", real_replace)
    out = tmp_path / "split"
    assert read_checkpoint_meta(out)["state"]["step"] == 2  # the first checkpoint, whole
    assert not list(out.glob(".checkpoint.safetensors.*"))  # the half-done one was cleaned up
    _run(_config(tmp_path, "split", resume=True), tokenizer)
    assert torch.equal(_head(tmp_path / "whole"), _head(out))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"negatives": "hard"},
            r"`negatives` should be one of \('dominant', 'mixed', 'random', 'full'\), got 'hard'",
        ),
        ({"num_negatives": 0}, "`num_negatives` should be an integer >= 1, got 0"),
        ({"dtype": "int8"}, "`dtype` should be float32, bfloat16 or float16, got 'int8'"),
        ({"offset": "softmax"}, r"`offset` should be one of \('none', 'log_softmax'\), got 'softmax'"),
        ({"max_steps": 0}, "`max_steps` should be an integer >= 1 or None, got 0"),
        ({"dev_max": 0}, "`dev_max` should be an integer >= 1 or None, got 0"),
        ({"eval_every": 0}, "`eval_every` should be an integer >= 1 or None, got 0"),
        ({"eval_every": -2}, "`eval_every` should be an integer >= 1 or None, got -2"),
        ({"softmax_temperature": 0}, "`softmax_temperature` should be a finite number > 0, got 0"),
        ({"lr": math.inf}, "`lr` should be a finite number > 0, got inf"),
        ({"lr": math.nan}, "`lr` should be a finite number > 0, got nan"),
        ({"epsilon": 0}, "`epsilon` = 0 has no exact top-k bound"),
        ({"negative_top_p": 1.5}, r"`negative_top_p` should be in \[0, 1\], got 1.5"),
        ({"recipe": "tower"}, r"`recipe` should be one of \('paper', 'authors-2026'\), got 'tower'"),
        ({"train_turns": "first"}, r"`train_turns` should be one of \('last', 'all'\), got 'first'"),
        ({"frozen_autocast": "int8"}, "`frozen_autocast` should be None \\(off\\), 'bfloat16' or 'float16'"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_the_authors_recipe_is_a_preset_every_field_of_which_can_be_overridden(tmp_path):
    from sighead_eval.cli import build_parser, train_config

    authors = TrainConfig.from_recipe("authors-2026")
    assert (authors.dominant_mode, authors.eval_every, authors.dev_max) == ("first", 600, 5000)
    assert (authors.train_turns, authors.frozen_autocast, authors.patience) == ("all", "bfloat16", 3)
    assert authors.recipe == "authors-2026" and authors.settings()["recipe"] == "authors-2026"
    paper = TrainConfig.from_recipe("paper")
    assert paper == TrainConfig() and paper.dominant_mode == "last" and paper.train_turns == "last"
    ns = build_parser().parse_args(
        ["train", "--recipe", "authors-2026", "--dominant-mode", "last", "--lr", "0.5"]
    )
    config = train_config(ns)
    assert (config.recipe, config.dominant_mode, config.lr, config.eval_every) == (
        "authors-2026",
        "last",
        0.5,
        600,
    )
    assert train_config(build_parser().parse_args(["train"])) == TrainConfig()
    with pytest.raises(ValueError, match="unknown recipe 'tower'; known: paper, authors-2026"):
        TrainConfig.from_recipe("tower")


def test_early_stopping_fires_mid_epoch_and_keeps_the_best_head(tmp_path, tokenizer, monkeypatch):
    """The default cadence is step-based (4 evaluations an epoch here); dev BCE scripted to improve
    once, then worsen: with patience 2 the run stops halfway through its first epoch, and the adapter
    it writes is the head of the best evaluation (its snapshot), not the last one."""
    from sighead_eval.training import trainer as t

    scripted = iter([1.0, 0.9, 0.95, 0.96, 0.97, 0.98])
    real = t.DevSet.evaluate

    def evaluate(self):
        return {**real(self), "dev_bce": next(scripted, 0.5)}

    monkeypatch.setattr(t.DevSet, "evaluate", evaluate)
    records = [{"prompt": f"Say thing {i}.", "response": CORPUS[i % 6]} for i in range(80)]
    config = _config(tmp_path, eval_every=None, patience=2, epochs=3, grad_accum=1, snapshots=True)
    trainer = Trainer(config, build_model("llama"), tokenizer, records, progress=False)
    steps_per_epoch = math.ceil(len(trainer.train_set) / 4)
    assert trainer.eval_every == math.ceil(steps_per_epoch / 4) < steps_per_epoch
    info = trainer.train()
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert info["stopped_early"] and [e["dev_bce"] for e in log] == [1.0, 0.9, 0.95, 0.96]
    assert info["steps"] == 3 * trainer.eval_every < steps_per_epoch and info["epochs_run"] < 1
    best = log[1]
    snapshot = tmp_path / "run" / "snapshots" / f"tokens-{best['tokens']:010d}"
    assert torch.equal(_head(tmp_path / "run").half(), _head(snapshot))
    last = tmp_path / "run" / "snapshots" / f"tokens-{log[-1]['tokens']:010d}"
    assert not torch.equal(_head(tmp_path / "run").half(), _head(last))


def test_the_frozen_pass_under_bf16_autocast(tmp_path, tokenizer):
    """frozen_autocast='bfloat16' (the authors' frozen pass): the logits come out in bf16, equal to
    the fp32 ones at bf16's resolution; the head and its loss stay fp32 and training runs."""
    plain = Trainer(_config(tmp_path, "fp32"), build_model("llama"), tokenizer, RECORDS, progress=False)
    config = _config(tmp_path, "bf16", frozen_autocast="bfloat16")
    bf16 = Trainer(config, build_model("llama"), tokenizer, RECORDS, progress=False)
    batch = plain.train_set[:4]
    exact, rounded = plain.frozen(batch), bf16.frozen(batch)
    assert exact.logits.dtype == torch.float32 and rounded.logits.dtype == torch.bfloat16
    torch.testing.assert_close(rounded.logits.float(), exact.logits, atol=0.05, rtol=0.02)
    assert torch.equal(rounded.targets, exact.targets)
    assert bf16.head.weight.dtype == torch.float32
    info = bf16.train()
    assert math.isfinite(info["dev_after"]["dev_bce"])
    assert "| `frozen_autocast` | `bfloat16` |" in (tmp_path / "bf16" / "README.md").read_text()


def test_log_softmax_offset_head_starts_at_the_softmax_and_trains(tmp_path, tokenizer):
    from peft import PeftModel

    from sighead_eval.scoring import score

    info = _run(_config(tmp_path, offset="log_softmax", epochs=1), tokenizer)
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["offset"] == "log_softmax"
    model = PeftModel.from_pretrained(build_model("llama"), tmp_path / "run")
    [r] = score(
        model, tokenizer, [{"prompt": "The capital", "response": "of France is Paris."}], progress=False
    )
    assert np.isfinite(r.log_scores["sigmoid"]).all()


def test_cached_hidden_states_skip_the_forward_pass_after_the_first_epoch(tmp_path, tokenizer, monkeypatch):
    seen = _count_frozen_passes(monkeypatch)
    info = _run(_config(tmp_path, cache_hidden=True, epochs=3, eval_every=None), tokenizer)
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    assert sum(seen) == info["n_dev"] + info["n_train"]  # three epochs, one forward pass per example
    seen.clear()
    _run(_config(tmp_path, name="uncached", epochs=3, eval_every=None), tokenizer)
    assert sum(seen) == info["n_dev"] + 3 * info["n_train"]
    _run(_config(tmp_path, name="again", cache_hidden=True, epochs=3, eval_every=None), tokenizer)
    assert torch.equal(_head(tmp_path / "run"), _head(tmp_path / "again"))  # seeded, cache or not


def _count_frozen_passes(monkeypatch) -> list[int]:
    from sighead_eval.training import trainer as t

    seen = []  # examples each frozen pass ran the model on (the cache's passes go through Trainer.frozen too)
    real = t.frozen_pass
    monkeypatch.setattr(t, "frozen_pass", lambda *a, **k: seen.append(len(a[1])) or real(*a, **k))
    return seen


def test_the_cache_directory_is_resumed_reused_and_guarded(tmp_path, tokenizer, monkeypatch):
    """Written shard by shard; a missing shard (an interrupted pass) is the only one recomputed; a
    run with another learning rate and offset reuses everything, dev set included; runs whose
    negatives would differ, or that plan more epochs than it holds, are refused."""
    from sighead_eval.training import cache as c

    monkeypatch.setattr(c, "SHARD", 8)
    seen = _count_frozen_passes(monkeypatch)
    cache = tmp_path / "cache"
    info = _run(_config(tmp_path, cache_dir=str(cache), epochs=2, eval_every=None), tokenizer)
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    shards = sorted(cache.glob("shard-*.safetensors"))
    assert len(shards) == math.ceil(info["n_train"] / 8) and (cache / "dev.safetensors").is_file()
    assert sum(seen) == info["n_dev"] + info["n_train"]
    shards[1].unlink()  # as if the pass had stopped there
    seen.clear()
    again = _config(tmp_path, name="again", cache_dir=str(cache), epochs=2, lr=3e-2, offset="log_softmax")
    _run(again, tokenizer)
    assert sum(seen) == 8  # the one missing shard
    seen.clear()
    _run(_config(tmp_path, name="third", cache_dir=str(cache), epochs=1, lr=3e-2), tokenizer)
    assert seen == []
    with pytest.raises(c.CacheError, match=r"differs in \['num_negatives'\]"):
        _run(_config(tmp_path, name="other", cache_dir=str(cache), num_negatives=4), tokenizer)
    with pytest.raises(c.CacheError, match="holds negatives for 2 epochs and this run plans 3"):
        _run(_config(tmp_path, name="longer", cache_dir=str(cache), epochs=3), tokenizer)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(c.CacheError, match="not empty and holds no cache.json"):
        _run(_config(tmp_path, name="junk-run", cache_dir=str(tmp_path / "junk")), tokenizer)


def test_cached_negatives_are_drawn_from_the_full_distribution_per_epoch(tmp_path, tokenizer):
    """Each epoch's cached negatives avoid the reference and the dominant set computed from the
    position's full softmax, are distinct within each half, and differ between epochs."""
    from sighead_eval.frozen import frozen_pass
    from sighead_eval.training.negatives import excluded_tokens

    trainer = Trainer(
        _config(tmp_path, cache_hidden=True, epochs=2),
        build_model("llama"),
        tokenizer,
        RECORDS,
        progress=False,
    )
    trainer.build_cache()
    cache, examples = trainer.cache, trainer.train_set[:3]
    frozen = frozen_pass(trainer.model, [e.ids for e in examples], [e.start for e in examples], trainer.pad)
    sets = dominant_tokens(torch.log_softmax(frozen.logits.float(), -1))
    excluded = excluded_tokens(sets, frozen.targets, frozen.logits.shape[1])
    rows = cache.rows([0, 1, 2])
    assert torch.equal(cache.targets[rows], frozen.targets)
    torch.testing.assert_close(cache.hidden[rows].float(), frozen.hidden.float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cache.log_normalizers[rows], torch.logsumexp(frozen.logits.float(), -1))
    for epoch in range(2):
        negatives = cache.negatives[epoch][rows].long()
        assert not excluded.gather(1, negatives).any()
        assert all(len(set(r[:5].tolist())) == 5 for r in negatives)
    assert not torch.equal(cache.negatives[0], cache.negatives[1])
    loss, positions = cache.loss([0, 1, 2], epoch=1)
    assert positions == rows.numel() and torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["random", "full"])
def test_ablations_train(tmp_path, tokenizer, mode):
    info = _run(_config(tmp_path, negatives=mode, epochs=1), tokenizer)
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]


def test_data_parallel_matches_one_process(tmp_path, tokenizer):
    """`accelerate launch` with 2 CPU processes (gloo) gives the dev loss of one process."""
    build_model("llama").save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    common = ["train", "--model", str(tmp_path / "base"), "--data", str(data), "--lr", "0.01",
              "--epochs", "1", "--batch-size", "4", "--grad-accum", "2", "--dev-fraction", "0.2",
              "--eval-every", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    single = [sys.executable, "-m", "sighead_eval.cli", *common, "--output-dir", str(tmp_path / "one")]
    subprocess.run(single, check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "sighead_eval.cli", *common, "--output-dir", str(tmp_path / "two")]  # fmt: skip
    result = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "trainer_state.json").read_text())
    two = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert two["world"] == 2 and one["world"] == 1
    assert two["tokens"] == one["tokens"]
    assert two["dev_after"]["dev_bce"] == pytest.approx(one["dev_after"]["dev_bce"], abs=1e-4)


def test_training_on_an_explicit_device_and_the_option_on_the_command_line(tmp_path, tokenizer):
    from sighead_eval.cli import build_parser

    info = _run(_config(tmp_path, device="cpu", max_steps=2, epochs=1), tokenizer)
    assert info["device"] == "cpu" and info["steps"] == 2
    ns = build_parser().parse_args(["train", "--device", "cpu", "--dtype", "float32"])
    assert ns.device == "cpu" and ns.dtype == "float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
def test_training_on_a_gpu_keeps_the_head_in_fp32_on_the_output_layers_device(tmp_path, tokenizer):
    info = _run(_config(tmp_path, device="cuda", dtype="bfloat16", epochs=1), tokenizer)
    assert info["device"].startswith("cuda")
    assert info["dev_after"]["dev_bce"] < info["dev_before"]["dev_bce"]
    assert _head(tmp_path / "run").dtype == torch.float32


def test_a_training_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    from sighead_eval.training.data import load_records

    path = tmp_path / "rows.csv"
    path.write_bytes(b"prompt,response\nHi,there\nSalut,caf\xe9\n")
    with pytest.raises(ValueError, match=r"rows.csv, line 3: not UTF-8 text \(byte 0xe9"):
        load_records(str(path))
