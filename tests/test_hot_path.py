"""The scoring path's host cost: transfers, syncs and Python calls per batch do not grow with the
number of tokens, the accelerator's branches give the CPU's values, and token texts are decoded
only when read, from one table per tokenizer."""

from __future__ import annotations

import collections
import sys

import numpy as np
import pytest
import torch
from conftest import build_model, build_tokenizer
from peft import get_peft_model
from torch.overrides import TorchFunctionMode

from sighead_eval import SigmoidHeadConfig
from sighead_eval import scoring as S
from sighead_eval.pieces import token_pieces
from sighead_eval.scoring import engine as E
from sighead_eval.scoring import results as R
from sighead_eval.scoring import tokens as T

#: Tensor methods that copy to the host or wait for the device.
READS = {"cpu", "tolist", "item", "numpy", "__bool__", "__int__", "__float__", "nonzero"}


class TensorCalls(TorchFunctionMode):
    """Counts torch calls by name while active."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def _model():
    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    return model.eval()


def _records(repeats: int, n: int = 8):
    sentence = "The capital of France is Paris."
    return [{"prompt": f"Question {i}?", "response": " ".join([sentence] * repeats)} for i in range(n)]


def _python_calls(fn) -> int:
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_python_calls_and_host_reads_per_batch_do_not_grow_with_the_tokens(tokenizer):
    """Four times the tokens, the same batches: exactly as many Python calls and host reads. A
    `decode` per token, a copy per output, or a loop over positions would make them differ."""
    model = _model()
    options = S.ScoringOptions(batch_size=4, chunk_rows=4096)  # one chunk a batch at both lengths

    def run(repeats):
        records = _records(repeats)
        S.score(model, tokenizer, records, options, progress=False)  # warm: the fast-logits check
        with TensorCalls() as mode:
            calls = _python_calls(lambda: S.score(model, tokenizer, records, options, progress=False))
        out = S.score(model, tokenizer, records, options, progress=False)
        return calls, {k: mode.calls[k] for k in READS}, sum(len(r.token_ids) for r in out)

    short_calls, short_reads, short_tokens = run(1)
    long_calls, long_reads, long_tokens = run(4)
    assert long_tokens > 3 * short_tokens
    assert long_calls == short_calls
    assert long_reads == short_reads
    assert short_reads["cpu"] == 2  # one device-to-host copy per batch, 2 batches


def test_off_the_cpu_the_estimators_never_read_back_and_give_the_cpus_values(monkeypatch, tokenizer):
    """The accelerator's branches (one sort to the exact bound, 0 log 0 in place), run here on the
    CPU: no host read inside `token_scores`, and the CPU branches' values on peaked, flat and
    masked rows."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(96, 3000, generator=g) * 2
    z[:20, :3] += 8.0
    z[20:40] = torch.randn(20, 3000, generator=g) * 0.05
    z[20:40, :60] += 4.0  # flat: needs more than the short top-k
    z[40:44, 100:] = -torch.inf  # masked tokens: 0 log 0
    targets = torch.randint(0, 100, (96,), generator=g)
    layer = S.active_head_layer(_model())
    hidden = torch.randn(96, layer.base_layer.weight.shape[1], generator=g)
    with torch.no_grad():
        cpu = S.token_scores(z[:, :300], targets, hidden, layer)
        monkeypatch.setattr(T, "host_reads_are_free", lambda device: False)
        with TensorCalls() as mode:
            device = S.token_scores(z[:, :300], targets, hidden, layer, S.ScoringOptions(chunk_rows=32))
    assert not {k: mode.calls[k] for k in READS if mode.calls[k]}
    assert cpu.keys() == device.keys()
    for key in cpu:
        torch.testing.assert_close(device[key], cpu[key], rtol=0, atol=1e-5, msg=key)


def test_chunk_rows_are_chosen_by_device():
    assert S.chunk_rows("cpu", 49152) == S.CPU_CHUNK_ROWS
    assert S.chunk_rows("cuda", 49152) == S.DEVICE_CHUNK_BYTES // (4 * 49152) > 1000
    assert S.chunk_rows("cuda", 10**9) == S.CPU_CHUNK_ROWS  # never fewer than on a CPU
    assert S.chunk_rows("cuda", 49152, rows=7) == 7
    with pytest.raises(ValueError, match="`chunk_rows` should be a positive integer or None, got 0"):
        S.ScoringOptions(chunk_rows=0)


@pytest.mark.parametrize("chat", [True, False])
def test_token_pieces_equal_one_decode_per_token(chat):
    tok = build_tokenizer(chat=chat)
    ids = list(range(len(tok))) + [5, 5, 0]
    assert token_pieces(tok, ids) == [tok.decode([t]) for t in ids]
    assert token_pieces(tok, []) == []


def test_token_texts_are_decoded_only_when_read(tokenizer, monkeypatch):
    model = _model()
    decoded = []
    table = R.token_pieces
    monkeypatch.setattr(R, "token_pieces", lambda tok, ids: decoded.append(len(ids)) or table(tok, ids))
    [result] = S.score(model, tokenizer, _records(1, n=1), progress=False)
    assert decoded == []  # scoring decodes nothing
    assert "".join(result.tokens) == _records(1, n=1)[0]["response"]
    assert result.tokens and decoded == [len(result.token_ids)]  # once, on first read
    words, _ = result.words()
    assert decoded == [len(result.token_ids)] and "".join(words) == result.response


def test_a_scored_text_pickles_with_its_tokens_and_without_its_tokenizer(tokenizer):
    import pickle

    [result] = S.score(_model(), tokenizer, _records(1, n=1), progress=False)
    back = pickle.loads(pickle.dumps(result))
    assert back.tokenizer is None and back.tokens == result.tokens
    np.testing.assert_array_equal(back.log_scores["sigmoid"], result.log_scores["sigmoid"])


def test_generation_copies_each_batch_to_the_host_once(tokenizer):
    model = _model()
    records = [{"prompt": f"Question {i}?"} for i in range(4)]
    gen = S.GenerationOptions(max_new_tokens=6)
    with TensorCalls() as mode:
        out = S.generate(model, tokenizer, records, S.ScoringOptions(batch_size=2), gen, progress=False)
    assert len(out) == 4
    # per batch: the scores (one stacked copy) and the generated ids (one copy); transformers'
    # own loop reads its stopping flag back every step, which is its cost, not the scores'
    assert mode.calls["cpu"] == 2 * 2 and mode.calls["tolist"] == 0


def test_auto_batch_size_halves_on_running_out_of_memory_and_scores_the_same(tokenizer, monkeypatch):
    model = _model()
    records = _records(2, n=10)
    fixed = S.score(model, tokenizer, records, S.ScoringOptions(batch_size=3), progress=False)
    real, sizes = E.frozen_pass, []

    def small_device(model, sequences, starts, pad):  # a device that holds 4 records at most
        sizes.append(len(sequences))
        if len(sequences) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, sequences, starts, pad)

    monkeypatch.setattr(E, "frozen_pass", small_device)
    monkeypatch.setattr(E, "auto_batch_start", lambda device: 16)
    auto = S.score(model, tokenizer, records, S.ScoringOptions(batch_size="auto"), progress=False)
    assert sizes == [10, 8, 4, 4, 2]  # 16 (all 10), 8 out of memory; then 4 at a time
    for a, b in zip(auto, fixed):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.log_scores["sigmoid"], b.log_scores["sigmoid"], atol=1e-5)
    with pytest.raises(ValueError, match="`batch_size='auto'` is for force-decoding"):
        S.generate(model, tokenizer, [{"prompt": "Hi"}], S.ScoringOptions(batch_size="auto"), progress=False)
    with pytest.raises(ValueError, match="`batch_size` should be a positive integer or 'auto', got 'big'"):
        S.ScoringOptions(batch_size="big")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (
            [1, 2, 5000],
            ValueError,
            r"`prompt_token_ids` holds ids outside the model's vocabulary \[0, 300\): \[5000\]",
        ),
        ([1, -3], ValueError, r"outside the model's vocabulary \[0, 300\): \[-3\]"),
        ([1.0, 2.0], TypeError, "`prompt_token_ids` should be a list of integer token ids"),
        ([[1, 2]], TypeError, "should be a list of integer token ids"),
        ("12", TypeError, "should be a list of integer token ids"),
        ([True], TypeError, "should be a list of integer token ids"),
    ],
)
def test_given_token_ids_are_checked_as_arrays(tokenizer, ids, error, message):
    record = {"prompt_token_ids": ids, "response": "Paris."}
    with pytest.raises(error, match=message):
        S.score(_model(), tokenizer, [record], progress=False)


def test_generation_scores_do_not_depend_on_how_steps_are_chunked(tokenizer):
    """Steps scored together (a chunk of steps at once) or one chunk row at a time: the same
    scores, the same tokens; and they equal force-decoding the generated tokens."""
    model = _model()
    records = [{"prompt": f"Question {i}?"} for i in range(3)]
    gen = S.GenerationOptions(max_new_tokens=7)
    runs = [
        S.generate(
            model, tokenizer, records, S.ScoringOptions(batch_size=3, chunk_rows=rows), gen, progress=False
        )
        for rows in (1, 4, 10_000)
    ]
    for outs in zip(*runs):
        for other in outs[1:]:
            assert other.token_ids == outs[0].token_ids
            np.testing.assert_allclose(other.log_scores["sigmoid"], outs[0].log_scores["sigmoid"], atol=1e-6)
            np.testing.assert_allclose(other.entropy, outs[0].entropy, atol=1e-5)
    for record, out in zip(records, runs[1]):
        [forced] = S.score(
            model,
            tokenizer,
            [{**record, "response": out.response, "response_token_ids": out.token_ids}],
            progress=False,
        )
        np.testing.assert_allclose(forced.log_scores["softmax"], out.log_scores["softmax"], atol=1e-5)
