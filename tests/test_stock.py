"""The `sighead` model leaves lm-eval's numbers stock: for every request type and shape, what it
returns to lm-eval equals, bit for bit, what HFLM returns for the same model and requests; the
scores ride along, and a generation's scores are those of exactly the tokens of the kept text."""

from __future__ import annotations

import math

import numpy as np
import pytest

CHAT = [{"role": "user", "content": "What is the capital of Germany?"}]


@pytest.fixture(scope="module")
def models(tiny_dir):
    from lm_eval.models.huggingface import HFLM

    from sighead_eval.harness.model import SigheadLM

    common = {"pretrained": str(tiny_dir / "base"), "batch_size": 3, "device": "cpu", "max_length": 40}
    stock = HFLM(dtype="float32", **common)
    ours = SigheadLM(adapter=str(tiny_dir / "head"), **common)
    return stock, ours


def _requests(kind: str, args: list[tuple]):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def _loglikelihood_args(tokenizer) -> list[tuple[str, str]]:
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    sentence = "Two plus two is four, and three plus three is six."
    repeats = max(n for n in range(1, 20) if len(tokenizer(" ".join([sentence] * n))["input_ids"]) < 40)
    long = " ".join([sentence] * repeats)  # with its context, more than the window: HFLM cuts the context
    return [
        ("The capital of Germany is ", "Berlin"),  # trailing whitespace: HFLM moves it
        ("The capital of Germany is ", "Munich"),
        ("The capital of Germany is", " Berlin"),
        ("Water boils at  ", "one hundred degrees."),  # two trailing spaces
        (chat, "Berlin."),  # chat-templated: ends in the assistant tag's newline
        (chat, "The capital of Germany is Berlin, a large city."),
        ("", "A quick brown fox."),  # empty context: the prefix token
        ("Two plus two is four, and", long),  # continuation longer than the context
    ] + [("Question: which is a city? Answer:", f" {c}") for c in ("Paris", "water", "four", "dog")]


def test_loglikelihood_is_hflms_bit_for_bit(models):
    stock, ours = models
    requests = _requests("loglikelihood", _loglikelihood_args(stock.tokenizer))
    expected = stock.loglikelihood(requests, disable_tqdm=True)
    got = ours.loglikelihood(requests, disable_tqdm=True)
    assert [tuple(g) for g in got] == [tuple(e) for e in expected]  # exactly, floats and greedy flags
    assert all(g.sighead["n_tokens"] >= 1 for g in got)
    # the confidence scores the continuation alone, without the moved whitespace
    berlin = got[0].sighead["tokens"]["text"]
    assert "".join(berlin) == "Berlin"


def test_loglikelihood_scores_hflms_tokens_from_hflms_pass(models):
    """The confidence of each request is computed from HFLM's own batch, over HFLM's continuation
    tokens less those wholly inside the whitespace moved from the context: each estimator equals
    the scoring engine's own pass over the same tokens, and the softmax's product is HFLM's
    log-likelihood wherever no whitespace token was dropped."""
    from sighead_eval.harness.onepass import moved_whitespace
    from sighead_eval.scoring import ScoringOptions, score

    stock, ours = models
    args = _loglikelihood_args(stock.tokenizer)
    got = ours.loglikelihood(_requests("loglikelihood", args), disable_tqdm=True)
    dropped = 0
    for (context, continuation), out in zip(args, got):
        ctx, cont = ours._encode_pair(context, continuation) if context else ([ours.prefix_token_id], None)
        if cont is None:
            cont = ours.tok_encode(continuation, add_special_tokens=False)
        ids = out.sighead["tokens"]["id"]
        drop = len(cont) - len(ids)
        assert ids == cont[drop:] and drop >= 0
        if drop:  # only whitespace moved from the context is left out
            dropped += 1
            assert ours.tokenizer.decode(cont[:drop]).strip() == "" and moved_whitespace(context)
        else:
            assert math.log(out.sighead["sequence"]["softmax_prod"]) == pytest.approx(out[0], abs=1e-4)
        [alone] = score(
            ours.model,
            ours.tokenizer,
            [{"prompt_token_ids": ctx + cont[:drop], "response": continuation, "response_token_ids": ids}],
            # HFLM's window: the last max_length + 1 tokens of context and continuation
            ScoringOptions(chat_template=False, max_length=ours.max_length + 1, truncation="left"),
            progress=False,
        )
        for name, value in alone.sequence_scores().items():
            assert out.sighead["sequence"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert dropped >= 2  # the chat template's newline, the two spaces


def test_loglikelihood_runs_as_many_forward_passes_as_hflm(models):
    """One model pass per batch of requests: the confidence rides on HFLM's own forwards."""
    stock, ours = models
    requests = _requests("loglikelihood", _loglikelihood_args(stock.tokenizer)[:-1])
    n_stock = _forwards(stock, lambda: stock.loglikelihood(requests, disable_tqdm=True))
    n_ours = _forwards(ours, lambda: ours.loglikelihood(requests, disable_tqdm=True))
    assert n_ours == n_stock > 1


def test_multiple_choice_accuracy_is_stocks(models):
    """The choice with the highest log-likelihood, as lm-eval's `acc` picks it, is HFLM's."""
    stock, ours = models
    args = _loglikelihood_args(stock.tokenizer)[-4:]
    pick = [
        np.argmax([r[0] for r in lm.loglikelihood(_requests("loglikelihood", args), True)]) for lm in models
    ]
    assert pick[0] == pick[1]


def test_loglikelihood_rolling_is_hflms_bit_for_bit(models):
    stock, ours = models
    texts = [
        ("The capital of France is Paris.",),
        (" ".join(["A quick brown fox jumps over the lazy dog."] * 8),),
    ]
    requests = _requests("loglikelihood_rolling", texts)
    assert ours.loglikelihood_rolling(requests, disable_tqdm=True) == stock.loglikelihood_rolling(
        requests, disable_tqdm=True
    )


def _generation_args(tokenizer) -> list[tuple[str, dict]]:
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    greedy = {"do_sample": False}
    return [
        (chat, {"until": ["<|im_end|>"], "max_gen_toks": 8, **greedy}),
        ("The capital of France is", {"until": ["\n"], "max_gen_toks": 6, **greedy}),
        ("Two plus two is", {"until": ["."], "max_gen_toks": 10, **greedy}),
        ("Water", {"until": [" "], "max_gen_toks": 5, **greedy}),  # cut early, maybe inside a token
        ("Mount Everest", {"until": ["e", "a"], "max_gen_toks": 7, **greedy}),
        ("A quick brown fox", {"max_gen_toks": 4, **greedy}),  # no stop but the end token
        ("The capital of France is", {"until": ["\n"], "max_gen_toks": 6, **greedy}),  # a repeat
    ]


def test_generate_until_is_hflms_and_scores_exactly_the_kept_tokens(models):
    from sighead_eval.scoring import ScoringOptions, score

    stock, ours = models
    requests = _requests("generate_until", _generation_args(stock.tokenizer))
    expected = stock.generate_until(requests, disable_tqdm=True)
    got = ours.generate_until(requests, disable_tqdm=True)
    assert [str(g) for g in got] == expected and all(type(e) is str for e in expected)
    during = 0
    for req, out in zip(requests, got):
        ids = out.sighead["tokens"]["id"]
        if out.sighead["scored_by"] == "generation":
            during += 1
            assert ours.tokenizer.decode(ids, skip_special_tokens=True) == str(out)  # the kept text
        else:  # an empty text, or one cut inside a token: the text itself is force-decoded
            assert out.sighead["scored_by"] == "force-decoding"
            assert ids == (ours.tokenizer(str(out), add_special_tokens=False)["input_ids"] or ids[:1])
        [forced] = score(
            ours.model,
            ours.tokenizer,
            [
                {
                    "prompt_token_ids": ours.tok_encode(req.args[0]),
                    "response": str(out),
                    "response_token_ids": ids,
                }
            ],
            ScoringOptions(chat_template=False),
            progress=False,
        )
        assert out.sighead["n_tokens"] == len(forced.token_ids) == len(ids)
        for name, value in forced.sequence_scores().items():
            assert out.sighead["sequence"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert during >= 4 and ours.redone_outputs == len(got) - during


def _forwards(lm, fn) -> int:
    from sighead_eval.frozen import forward_passes

    return forward_passes(lm.model, fn)


def test_generate_until_runs_as_many_forward_passes_as_hflm(models):
    """Scores recorded while generating: no second pass over the outputs (here every output is
    scored during generation, so none is redone)."""
    stock, ours = models
    requests = _requests("generate_until", _generation_args(stock.tokenizer)[:3])
    n_stock = _forwards(stock, lambda: stock.generate_until(requests, disable_tqdm=True))
    n_ours = _forwards(ours, lambda: ours.generate_until(requests, disable_tqdm=True))
    assert ours.redone_outputs == 0 and n_ours == n_stock > 0


def test_a_continuation_longer_than_the_window_is_scored_where_hflm_refuses_it(models, tiny_dir):
    """HFLM asserts on a continuation longer than the model's window; `sighead` scores its last
    `max_length - 1` tokens with a warning, and leaves the other requests' values HFLM's."""
    stock, ours = models
    too_long = ("Two plus", " ".join(["A quick brown fox jumps over the lazy dog."] * 6))
    fine = ("The capital of Germany is ", "Berlin")
    with pytest.raises(AssertionError):
        stock.loglikelihood(_requests("loglikelihood", [too_long]), disable_tqdm=True)
    with pytest.warns(UserWarning, match="longer than the model's context"):
        got = ours.loglikelihood(_requests("loglikelihood", [too_long, fine]), disable_tqdm=True)
    assert tuple(got[1]) == tuple(
        stock.loglikelihood(_requests("loglikelihood", [fine]), disable_tqdm=True)[0]
    )
    assert got[0].sighead["n_tokens"] == ours.max_length - 1
    assert got[0][0] == pytest.approx(math.log(got[0].sighead["sequence"]["softmax_prod"]), rel=1e-6)
    # also when the softmax is not among the estimators asked for
    from sighead_eval.harness.model import SigheadLM

    only = SigheadLM(adapter=str(tiny_dir / "head"), estimators="sigmoid", pretrained=str(tiny_dir / "base"),
                     batch_size=3, device="cpu", max_length=40)  # fmt: skip
    with pytest.warns(UserWarning, match="longer than the model's context"):
        [value] = only.loglikelihood(_requests("loglikelihood", [too_long]), disable_tqdm=True)
    assert value[0] == pytest.approx(got[0][0], rel=1e-6)


def test_kept_tokens_find_the_generated_prefix_of_the_kept_text(tokenizer):
    """The tokens of the text lm-eval kept: all up to the end token, a prefix where lm-eval cut at
    a token boundary, none where it cut inside a token or kept nothing (those are redone)."""
    from sighead_eval.harness.model import kept_tokens

    ids = tokenizer("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    generated = np.array(ids + eos + eos)  # an end token, then padding
    pieces = [tokenizer.decode([t]) for t in ids]
    assert kept_tokens(tokenizer, generated, "The capital of France is Paris.", eos) == len(ids)
    assert kept_tokens(tokenizer, generated, "".join(pieces[:3]), eos) == 3  # cut at a boundary
    inside = "".join(pieces[:2]) + pieces[2][:2]  # " of" cut after " o"
    assert kept_tokens(tokenizer, generated, inside, eos) is None
    assert kept_tokens(tokenizer, generated, "", eos) is None
    assert kept_tokens(tokenizer, generated, "Something else", eos) is None


def test_generate_until_redoes_an_output_cut_inside_a_token(models):
    """A stop sequence that falls inside a generated token: the kept text is force-decoded, and
    its scores are those of the kept text's own tokens."""
    from sighead_eval.scoring import ScoringOptions, score

    stock, ours = models
    args = ("The capital of France is", {"until": [], "max_gen_toks": 6, "do_sample": False})
    [full] = ours.generate_until(_requests("generate_until", [args]), disable_tqdm=True)
    pieces = [ours.tokenizer.decode([t]) for t in full.sighead["tokens"]["id"]]
    cut = next(i for i, p in enumerate(pieces) if len(p) >= 2 and i > 0)  # a piece of 2+ characters
    stop = pieces[cut][1:]  # cuts that piece after its first character
    request = _requests("generate_until", [(args[0], {**args[1], "until": [stop]})])
    [expected] = stock.generate_until(request, disable_tqdm=True)
    [out] = ours.generate_until(request, disable_tqdm=True)
    assert str(out) == expected and expected.endswith(pieces[cut][0])
    assert out.sighead["scored_by"] == "force-decoding" and ours.redone_outputs == 1
    [forced] = score(
        ours.model,
        ours.tokenizer,
        [{"prompt_token_ids": ours.tok_encode(args[0]), "response": expected}],
        ScoringOptions(chat_template=False),
        progress=False,
    )
    assert out.sighead["tokens"]["id"] == forced.token_ids
    assert out.sighead["sequence"]["softmax_mean"] == pytest.approx(forced.sequence_scores()["softmax_mean"])


def test_contexts_are_encoded_as_hflm_encodes_them(models):
    """`hflm_context_ids` (rescore, compare's saved outputs) is HFLM's own `tok_encode`, BOS rule
    included, and an empty context is one start token."""
    from sighead_eval.scoring import hflm_context_ids

    stock, _ = models
    tokenizer = stock.tokenizer
    chat = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    for context in ("The capital of Germany is", chat, "  two spaces"):
        assert hflm_context_ids(tokenizer, context) == stock.tok_encode(context)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    assert hflm_context_ids(tokenizer, "") == [start]


def test_a_bos_is_added_unless_the_context_starts_with_it():
    """The BOS rule of HFLM's `tok_encode`, on a tokenizer that adds one."""
    from sighead_eval.scoring import hflm_context_ids

    class WithBos:
        bos_token, bos_token_id, eos_token_id = "<s>", 1, 2

        def __call__(self, text, add_special_tokens=True):  # "<s>" in the text is the BOS token
            body = [1] + [ord(c) for c in text[3:]] if text.startswith("<s>") else [ord(c) for c in text]
            return {"input_ids": ([1] if add_special_tokens else []) + body}

    tokenizer = WithBos()
    assert hflm_context_ids(tokenizer, "ab") == [1, 97, 98]
    assert hflm_context_ids(tokenizer, "<s>ab") == [1, 97, 98]  # not twice
