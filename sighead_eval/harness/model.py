"""The `sighead` model for lm-eval: HFLM plus a Sigmoid Head, recording every estimator's scores.

What lm-eval computes from the outputs is stock: every value this model returns to lm-eval is the
one HFLM returns for the same model and request, so accuracy, perplexity and exact match do not
change when confidence is added. The scores ride along as attributes.

- `generate_until`: HFLM generates as usual (stop sequences, `max_gen_toks`, chat template,
  batching) and returns its texts; the scores are recorded during that same generation, from the
  logits and head inputs of each step (`StepScores`): one model pass. Each text's scores are
  those of exactly the generated tokens that decode to it after lm-eval's cut at a stop
  sequence. Where no prefix of the tokens decodes to the kept text (a cut inside a token) or the
  text is empty, that output alone is force-decoded. Outputs come back as `ScoredStr`.
- `loglikelihood`: HFLM's own log-likelihood and greedy flag, and the confidence from the same
  model pass: HFLM's batches are scored as they run (`onepass.LoglikelihoodPass`), over HFLM's own
  continuation tokens less those wholly inside the whitespace it moved there from the context.
  Two cases take a pass of the scoring engine's own: seq2seq models, and a continuation longer
  than the model's window (which HFLM refuses). Outputs come back as `ScoredLoglikelihood`.
- `loglikelihood_rolling`: HFLM's, untouched.

The adapter is attached by this class's own `adapter=` argument, after HFLM has loaded the model
(HFLM's `peft=` would resize the token embeddings of padded-vocabulary models and break a
vocabulary-sized head). Without an adapter the softmax baselines still run; asking for a
Sigmoid Head estimator without one is an error.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..adapter.io import check_adapter_dir, load_adapter
from ..dominant import check_rule
from ..estimators import REGISTRY, check_estimators, check_running_confidence
from ..frozen import unwrap, wrapped_method
from ..models import resolve_model
from ..scoring import (
    Encoded,
    GenerationOptions,
    ScoringOptions,
    StepScores,
    active_head,
    build_result,
    eos_ids,
    first_end,
    fit_response,
    score,
)
from .confidence import ScoredLoglikelihood, ScoredStr
from .launch import launched_world_size
from .onepass import AnswerHook, LoglikelihoodPass, Tagged


def _parse_estimators(value) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    try:
        return check_estimators(value)
    except ValueError as err:
        raise ValueError(f"`estimators`: {err}") from None


@register_model("sighead")
class SigheadLM(HFLM):
    """HFLM with a Sigmoid Head. `--model_args` keys of its own:

    - `pretrained`: hub id or local path; default: the embedded SmolLM2-135M-Instruct.
    - `adapter`: a Sigmoid Head directory (e.g. `adapters/smollm2-135m-instruct-wiki`).
    - `estimators`: probability estimators to record, `|`-separated (default: all available).
    - `scoring_batch_size`: records per scoring pass (default: the HFLM batch size, at least 8), or
      `auto`: as many as the device holds (from 512 down, halved on running out of memory).
    - `p_jump`, `epsilon`, `dominant_mode` (`last` or `first`): the BoostedProb dominant-token
      rule, which the ceiling and the hybrid use too (a head trained with `--recipe authors-2026`
      was trained with `first`).
    Every other key is HFLM's (`dtype` defaults to float32, `device` to cuda when available).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        adapter: str | None = None,
        estimators: str | None = None,
        scoring_batch_size: int | None = None,
        p_jump: float = 0.3,
        epsilon: float = 0.005,
        dominant_mode: str = "last",
        abstain_below: float | None = None,
        abstain_confidence: str = "sigmoid_min",
        **kwargs,
    ) -> None:
        wanted = _parse_estimators(estimators)
        check_rule(float(p_jump), float(epsilon), str(dominant_mode), None)  # before the model loads
        abstain_below = None if abstain_below in (None, "", "None") else float(abstain_below)
        watched, _ = check_running_confidence(abstain_confidence)  # before the model loads
        if abstain_below is not None:
            GenerationOptions(abstain_below=abstain_below)  # checks it is a probability
            if REGISTRY[watched].needs_head and adapter is None:
                raise ValueError(
                    f"abstain_confidence={abstain_confidence} needs a Sigmoid Head: pass `adapter=DIR`, or "
                    "abstain on a softmax confidence (abstain_confidence=softmax_min)"
                )
        if adapter is None and wanted and any(REGISTRY[n].needs_head for n in wanted):
            raise ValueError(
                f"estimator(s) {[n for n in wanted if REGISTRY[n].needs_head]} need a Sigmoid Head: pass "
                "`adapter=DIR` in --model_args (e.g. adapter=adapters/smollm2-135m-instruct-wiki); without "
                "one, leave them out and the softmax baselines (softmax, boostedprob, entropy) still run"
            )
        if adapter is not None:
            check_adapter_dir(adapter)  # a bad directory fails here, before the model loads
        kwargs.setdefault("dtype", "float32")  # bf16 matmuls are ~70x slower than fp32 on most CPUs
        if kwargs.get("device") is None or (
            str(kwargs["device"]).startswith("cuda") and not torch.cuda.is_available()
        ):  # lm-eval's command line asks for cuda:0 by default; HFLM falls back to the CPU as well
            kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        if launched_world_size() > 1 and kwargs["device"] == "cpu":
            from accelerate import PartialState

            PartialState(cpu=True)  # a gloo process group, so that HFLM's Accelerator sees every process
        super().__init__(pretrained=resolve_model(pretrained), **kwargs)
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self.world_size == 1:
            # HFLM turns data parallelism on only when it counts more than one GPU: on CPUs every
            # process would run every request. Take rank and world from accelerate; lm-eval then
            # splits the requests and gathers the results through it.
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes
        if adapter is not None:
            # A head that does not fit the model fails here, naming both shapes, before any sample.
            self._model = load_adapter(self._model, adapter).eval()
        elif (wanted is None or "sigmoid" in wanted) and self.rank == 0:
            warnings.warn(
                "no `adapter` given: the Sigmoid Head estimators are skipped; the softmax baselines "
                "(softmax, boostedprob, entropy, length) still run",
                stacklevel=2,
            )
        self.adapter = adapter
        self.estimators = wanted
        self.abstain_below, self.abstain_confidence = abstain_below, abstain_confidence
        self._generated: list | None = None  # `GeneratedBatch`es, while `generate_until` runs
        self._scored_ll: list | None = None  # `ScoredText`s, while `loglikelihood` runs
        self._onepass: LoglikelihoodPass | None = None  # while HFLM's log-likelihood batches run
        self.redone_outputs = 0
        batch = self.batch_size if isinstance(self.batch_size, int) else 8
        self.scoring = ScoringOptions(
            chat_template=False,  # contexts arrive already templated by lm-eval
            batch_size="auto" if scoring_batch_size == "auto" else int(scoring_batch_size or max(8, batch)),
            max_length=self.max_length,
            truncation="left",
            p_jump=float(p_jump),
            epsilon=float(epsilon),
            dominant_mode=str(dominant_mode),
            estimators=wanted,
        )
        if active_head(self.model) is None and adapter is not None:
            raise RuntimeError(f"the adapter at {adapter} loaded but no Sigmoid Head is active")

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["sighead_adapter"] = self.adapter
        return info

    # -- scoring -----------------------------------------------------------------------------
    def _summaries(self, results) -> list[dict]:
        return [r.summary() for r in results]  # the estimators computed: `estimators`, else the defaults

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if getattr(self, "_generated", None) is None:  # not inside `generate_until`
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        rule = None
        if self.abstain_below is not None:
            from ..scoring.abstain import AbstainBelow

            rule = AbstainBelow(self.model, self.abstain_below, self.abstain_confidence, self.scoring)
        try:
            with StepScores(self.model, self.scoring) as steps, _extra_stopping(self.model, rule):
                cont = super()._model_generate(context, max_length, stop, **generation_kwargs)
        finally:
            if rule is not None:
                rule.close()
        width = context.shape[1]
        mask = generation_kwargs.get("attention_mask")
        self._generated.append(
            GeneratedBatch(
                context=context.cpu().numpy(),
                mask=None if mask is None else mask.bool().cpu().numpy(),
                tokens=cont[:, width:].cpu().numpy(),
                host=steps.finish(cont[:, width:]),
                abstained_at=None if rule is None else rule.abstained_at.cpu().numpy(),
            )
        )
        return cont

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[ScoredStr]:
        recorder = _KeptTexts(self.cache_hook)
        self._generated, self.cache_hook = [], recorder
        try:
            texts = super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            generated, self._generated, self.cache_hook = self._generated, None, recorder.hook
        rows = [row for batch in generated for row in batch.rows()]
        eos = eos_ids(unwrap(self.model), self.tokenizer)
        by_text: dict[tuple[str, str], list[int]] = {}
        if len(rows) == len(recorder.kept):  # row k is the k-th text HFLM kept
            for k, key in enumerate(recorder.kept):
                by_text.setdefault(key, []).append(k)
        results: list = [None] * len(requests)  # a ScoredText each, from generation or redone
        rows_of: dict[int, GeneratedRow] = {}  # request index -> its generated row
        redo: dict[int, dict] = {}  # request index -> the record to force-decode
        for i, (req, text) in enumerate(zip(requests, map(str, texts))):
            candidates = by_text.get((req.args[0], text))
            row = rows[candidates.pop(0)] if candidates else None
            if row is not None:
                rows_of[i] = row
            kept = None if row is None else kept_tokens(self.tokenizer, row.tokens, text, eos)
            if kept is None:
                prompt = row.prompt_ids if row is not None else self.tok_encode(req.args[0])
                redo[i] = {"prompt_token_ids": prompt or [self.prefix_token_id], "response": text}
                continue
            item = Encoded(i, {}, row.prompt_ids, [], response=text)
            results[i] = build_result(
                item, self.tokenizer, row.tokens[:kept].tolist(), row.host, row.scores(kept)
            )
            rows_of[i] = row
        if redo:
            redone = score(self.model, self.tokenizer, list(redo.values()), self.scoring, progress=False)
            for i, result in zip(redo, redone):
                results[i] = result
        if self.abstain_below is not None:  # where the confidence fell below the threshold, if it did
            for i, result in enumerate(results):
                at = rows_of[i].abstained_at if i in rows_of else None
                result.abstained, result.abstained_at = at is not None, at
        out = []
        for i, (text, summary) in enumerate(zip(texts, self._summaries(results))):
            summary["scored_by"] = "force-decoding" if i in redo else "generation"
            out.append(ScoredStr(str(text), summary))
        self.redone_outputs = len(redo)  # outputs scored by a second pass (see the module doc)
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("generate_until", req.args, result)
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[ScoredLoglikelihood]:
        """HFLM's log-likelihoods, with the continuation's confidence scores attached, from HFLM's
        own model pass (`onepass`; the module doc says which tokens are scored)."""
        self._scored_ll = []
        try:
            values = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            results, self._scored_ll = self._scored_ll, None
        out = [
            ScoredLoglikelihood(logprob, greedy, summary)
            for (logprob, greedy), summary in zip(values, self._summaries(results))
        ]
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """HFLM's, scoring each request's continuation from the same batches (`LoglikelihoodPass`),
        when called from `loglikelihood` (not from `loglikelihood_rolling`).

        A continuation longer than the model's window is one HFLM refuses (an assertion): for those
        alone the value is the scoring engine's, over the continuation's last `max_length - 1`
        tokens, with a warning."""
        if getattr(self, "_scored_ll", None) is None:  # `loglikelihood_rolling`: HFLM's alone
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        fits = [len(cont) <= self.max_length for _, _, cont in requests]
        kept = [r for r, ok in zip(requests, fits) if ok]
        tagged = [(Tagged(i, req), ctx, cont) for i, (req, ctx, cont) in enumerate(kept)]
        # seq2seq models: HFLM's values, and the scoring engine's own pass for the confidence
        scoring = LoglikelihoodPass(self, tagged, self.scoring) if self.backend == "causal" else None
        hook, self.cache_hook, self._onepass = self.cache_hook, AnswerHook(scoring), scoring
        try:
            stock = iter(super()._loglikelihood_tokens(tagged, disable_tqdm, override_bs))
            if scoring is not None:
                scoring.close()
        finally:
            self.cache_hook, self._onepass = hook, None
        if scoring is not None:
            scored = iter(scoring.results)
        else:
            scored = iter(self._score_apart(kept))
        apart = iter(self._score_apart([r for r, ok in zip(requests, fits) if not ok]))
        values = []
        for ok in fits:
            if ok:
                values.append(next(stock))
                self._scored_ll.append(next(scored))
            else:
                result = next(apart)
                greedy = bool(result.greedy.all()) if result.greedy is not None else False
                values.append((float(result.log_scores["softmax"].sum()), greedy))
                self._scored_ll.append(result)
        return values

    def _score_apart(self, requests) -> list:
        """The scoring engine's own pass over `(request, context tokens, continuation tokens)`."""
        records = []
        for (_, continuation), ctx, cont in requests:
            ctx, cont = fit_response(list(ctx), list(cont), self.max_length)
            records.append({"prompt_token_ids": ctx, "response": continuation, "response_token_ids": cont})
        if not records:
            return []
        options = self.scoring
        if options.batch_size == "auto" and self.backend != "causal":  # seq2seq scoring takes a number
            options = replace(options, batch_size=self.batch_size if isinstance(self.batch_size, int) else 8)
        if options.estimators is not None and "softmax" not in options.estimators:
            options = replace(options, estimators=(*options.estimators, "softmax"))  # for the value
        return score(self.model, self.tokenizer, records, options, progress=False)

    def _model_call(self, inps, attn_mask=None, labels=None):
        if getattr(self, "_onepass", None) is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        return self._onepass.model_call(super()._model_call, inps)

    def _select_cont_toks(self, logits, contlen=None, inplen=None):
        if getattr(self, "_onepass", None) is not None:
            self._onepass.selected(inplen)
        return super()._select_cont_toks(logits, contlen=contlen, inplen=inplen)


class _KeptTexts:
    """lm-eval's cache hook, seen by HFLM during `generate_until`: HFLM reports each text it keeps
    here, in the order of the rows it generated, right after cutting it at the stop sequences."""

    def __init__(self, hook):
        self.hook = hook
        self.kept: list[tuple[str, str]] = []  # (context, kept text), in row order

    def add_partial(self, attr, req, res):
        if attr == "generate_until":
            self.kept.append((req[0], str(res)))
        self.hook.add_partial(attr, req, res)


@dataclass
class GeneratedRow:
    prompt_ids: list[int]
    tokens: np.ndarray  # (S,) generated ids
    host: dict  # the batch's scores, estimator -> (B * S,)
    start: int  # this row's first score in `host`
    abstained_at: int | None = None  # with `abstain_below`: the token where the confidence fell below

    def scores(self, kept: int) -> slice:
        """Where this row's first `kept` scores lie in `host`."""
        return slice(self.start, self.start + kept)


@dataclass
class GeneratedBatch:
    """One `generate` call inside HFLM's `generate_until`, with its scores."""

    context: np.ndarray  # (B, W) left-padded context ids
    mask: np.ndarray | None  # (B, W) True at real context tokens
    tokens: np.ndarray  # (B, S) generated ids
    host: dict  # estimator -> (B * S,), row-major (`StepScores.finish`)
    abstained_at: np.ndarray | None = None  # (B,) with `abstain_below`: the token index, -1 if none

    def rows(self) -> list[GeneratedRow]:
        steps = self.tokens.shape[1]
        out = []
        for b in range(self.tokens.shape[0]):
            prompt = self.context[b] if self.mask is None else self.context[b][self.mask[b]]
            at = None if self.abstained_at is None or self.abstained_at[b] < 0 else int(self.abstained_at[b])
            out.append(GeneratedRow(prompt.tolist(), self.tokens[b], self.host, b * steps, at))
        return out


def _extra_stopping(model, rule):
    """While HFLM's `_model_generate` runs, `rule` joins the stopping criteria it passes to
    `model.generate` (HFLM builds its own list from the stop sequences; this adds to it)."""
    if rule is None:
        return contextlib.nullcontext()

    def with_rule(generate):
        def call(*args, **kwargs):
            criteria = kwargs.get("stopping_criteria")
            kwargs["stopping_criteria"] = (
                rule.as_list() if criteria is None else type(criteria)([*criteria, rule])
            )
            return generate(*args, **kwargs)

        return call

    return wrapped_method(model, "generate", with_rule)


def kept_tokens(tokenizer, tokens: np.ndarray, text: str, eos: list[int]) -> int | None:
    """How many of the generated `tokens` decode to `text`, the text lm-eval kept (decoded without
    special tokens, cut at a stop sequence); None when no prefix does (a cut inside a token) or the
    text is empty (scored as the end token in its place, by force-decoding).

    One `decode` when the text is the whole output up to its end token; a binary search over
    prefixes (a few decodes) when lm-eval cut it."""
    if not text:
        return None
    end = int(first_end(tokens[None], eos)[1][0])

    def decoded(k: int) -> str:
        return tokenizer.decode(tokens[:k].tolist(), skip_special_tokens=True)

    if decoded(end) == text:
        return end
    lo, hi = 0, end  # the longest prefix whose text is a prefix of `text`
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text.startswith(decoded(mid)):
            lo = mid
        else:
            hi = mid - 1
    return lo if lo > 0 and decoded(lo) == text else None
