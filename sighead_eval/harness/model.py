"""The `sighead` model for lm-eval: HFLM plus a Sigmoid Head, recording every estimator's scores.

- `generate_until`: HFLM generates as usual (stop sequences, `max_gen_toks`, chat template,
  batching); each output is then force-decoded once after its context to score its tokens with
  every estimator (one batched forward pass; scores equal the generation-time ones, see
  `tests/test_scoring.py`). Outputs come back as `ScoredStr`.
- `loglikelihood`: the continuation is scored by the scoring engine in the same pass that gives
  lm-eval its log-likelihood; outputs come back as `ScoredLoglikelihood`.

The adapter is attached by this class's own `adapter=` argument, after HFLM has loaded the model
(HFLM's `peft=` would resize the token embeddings of padded-vocabulary models and break a
vocabulary-sized head). Without an adapter the softmax baselines still run; asking for a
Sigmoid Head estimator without one is an error.
"""

from __future__ import annotations

import os
import warnings

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from ..estimators import TOKEN_ESTIMATORS
from ..models import check_adapter_dir, load_adapter, resolve_model
from ..scoring import ScoringOptions, active_head, fit_response, score
from .confidence import ScoredLoglikelihood, ScoredStr


def _parse_estimators(value) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    names = tuple(x for x in (value.split("|") if isinstance(value, str) else value) if x)
    unknown = [x for x in names if x not in TOKEN_ESTIMATORS]
    if unknown:
        raise ValueError(
            f"unknown estimator(s) {unknown} in `estimators`; known: {', '.join(TOKEN_ESTIMATORS)} "
            "(separate several with '|', e.g. estimators=sigmoid|softmax)"
        )
    return names


@register_model("sighead")
class SigheadLM(HFLM):
    """HFLM with a Sigmoid Head. `--model_args` keys of its own:

    - `pretrained`: hub id or local path; default: the embedded SmolLM2-135M-Instruct.
    - `adapter`: a Sigmoid Head directory (e.g. `adapters/smollm2-135m-instruct-wiki`).
    - `estimators`: probability estimators to record, `|`-separated (default: all available).
    - `scoring_batch_size`: records per scoring pass (default: the HFLM batch size, at least 8).
    - `p_jump`, `epsilon`: the BoostedProb dominant-token rule.
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
        **kwargs,
    ) -> None:
        wanted = _parse_estimators(estimators)
        if adapter is None and wanted and "sigmoid" in wanted:
            raise ValueError(
                "estimator 'sigmoid' needs a Sigmoid Head: pass `adapter=DIR` in --model_args (e.g. "
                "adapter=adapters/smollm2-135m-instruct-wiki); without one, leave `sigmoid` out and the "
                "softmax baselines (softmax, boostedprob, entropy) still run"
            )
        if adapter is not None:
            check_adapter_dir(adapter)  # a bad directory fails here, before the model loads
        kwargs.setdefault("dtype", "float32")  # bf16 matmuls are ~70x slower than fp32 on most CPUs
        if kwargs.get("device") is None or (
            str(kwargs["device"]).startswith("cuda") and not torch.cuda.is_available()
        ):  # lm-eval's command line asks for cuda:0 by default; HFLM falls back to the CPU as well
            kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and kwargs["device"] == "cpu":
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
        batch = self.batch_size if isinstance(self.batch_size, int) else 8
        self.scoring = ScoringOptions(
            chat_template=False,  # contexts arrive already templated by lm-eval
            batch_size=int(scoring_batch_size or max(8, batch)),
            max_length=self.max_length,
            truncation="left",
            p_jump=float(p_jump),
            epsilon=float(epsilon),
        )
        if active_head(self.model) is None and adapter is not None:
            raise RuntimeError(f"the adapter at {adapter} loaded but no Sigmoid Head is active")

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["sighead_adapter"] = self.adapter
        return info

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, records: list[dict]) -> list[tuple]:
        results = score(self.model, self.tokenizer, records, self.scoring, progress=False)
        out = []
        for r in results:
            s = r.summary()
            if self.estimators is not None:
                s["sequence"] = {
                    k: v for k, v in s["sequence"].items() if k.split("_")[0] in (*self.estimators, "entropy")
                }
            out.append((r, s))
        return out

    def _chunks(self, records: list[dict], disable_tqdm: bool, desc: str):
        size = self.scoring.batch_size * 8
        for start in tqdm(
            range(0, len(records), size), desc=desc, disable=disable_tqdm or self.rank != 0, unit="chunk"
        ):
            yield records[start : start + size]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[ScoredStr]:
        texts = super().generate_until(requests, disable_tqdm=disable_tqdm)
        records = [
            {"prompt_token_ids": self.tok_encode(req.args[0]) or [self.prefix_token_id], "response": text}
            for req, text in zip(requests, texts)
        ]
        out: list[ScoredStr] = []
        for chunk in self._chunks(records, disable_tqdm, "sighead: scoring outputs"):
            out.extend(ScoredStr(rec["response"], s) for rec, (_, s) in zip(chunk, self._score(chunk)))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[ScoredLoglikelihood]:
        """Like HFLM's, but context and continuation are tokenised apart, as the scoring engine
        does: lm-eval would move the context's trailing whitespace (the chat template's newline
        after the assistant tag) into the continuation and score it as part of the response."""
        encoded = []
        for req in requests:
            context, continuation = req.args
            cont = self.tok_encode(continuation, add_special_tokens=False)
            ctx = self.tok_encode(context) if context else [self.prefix_token_id]
            encoded.append(((context, continuation), ctx, cont))
        return self._loglikelihood_tokens(encoded, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        records = []
        for pair, ctx, cont in requests:
            ctx, cont = fit_response(list(ctx), list(cont), self.max_length)
            records.append(
                {
                    "prompt_token_ids": ctx,
                    "response": pair[1] if pair else self.tok_decode(cont),
                    "response_token_ids": cont,
                }
            )
        out: list[ScoredLoglikelihood] = []
        for chunk in self._chunks(records, disable_tqdm, "sighead: scoring continuations"):
            for r, s in self._score(chunk):
                greedy = bool(r.greedy.all()) if r.greedy is not None else False
                out.append(ScoredLoglikelihood(float(r.log_scores["softmax"].sum()), greedy, s))
        for (pair, _, _), result in zip(requests, out):
            if pair:
                self.cache_hook.add_partial("loglikelihood", pair, result)
        return out
