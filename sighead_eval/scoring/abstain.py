"""Confidence while decoding: abstain once it falls below a threshold (`AbstainBelow`, a
`StoppingCriteria` for `model.generate` and the stopping rule `scoring.generate` takes), or read
every token's scores as they are generated (`TokenScoreStreamer`, a streamer for `model.generate`).

Both read each step from the model itself: a forward hook keeps the step's logits and the head's
input, and when the step's token is chosen they score it with every estimator (`token_scores`,
the engine's own). Neither changes what the model generates; `AbstainBelow` only stops a row early.
The engine never builds one: its callers do (`abstention_rule`, from `GenerationOptions`).
"""

from __future__ import annotations

import queue
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..estimators import REGISTRY, check_running_confidence
from ..frozen import HeadInputs, unwrap
from .options import GenerationOptions, ScoringOptions
from .tokens import active_head_layer, token_scores


class StepTap:
    """Keeps the newest step's logits (B, V) and head input (B, H) during `generate`, and scores a
    chosen token per row with every estimator: `{estimator: (B,) log score}` on the device."""

    def __init__(self, model, options: ScoringOptions | None = None):
        self.base = unwrap(model)
        self.head = active_head_layer(model)
        self.options = options or ScoringOptions()
        self._inputs = HeadInputs(model, last_only=True)
        self._last: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._handle = None

    def _after(self, module, args, kwargs, output):
        self._last = self._inputs.step(output)

    def attach(self) -> StepTap:
        if self._handle is None:
            self._inputs.__enter__()
            self._handle = self.base.register_forward_hook(self._after, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._inputs.__exit__(None, None, None)
            self._handle, self._last = None, None

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    @torch.no_grad()
    def score(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._last is None:
            raise RuntimeError("no step was recorded: attach the tap before `generate` runs")
        logits, hidden = self._last
        return token_scores(logits, tokens.to(logits.device), hidden, self.head, self.options)


class AbstainBelow(StoppingCriteria):
    """A `StoppingCriteria`: stops a row of `model.generate(...)` as soon as its running confidence
    falls below `threshold`, and records where.

    `confidence` is `{estimator}_{aggregation}`: a token estimator (`sigmoid`, `hybrid`, `softmax`,
    `boostedprob`, `ceiling`) and a running aggregation over the tokens generated so far (`min`,
    the default: the least sure token; `mean`; `prod`). After `generate`, `abstained` (B,) says
    which rows stopped for it and `abstained_at` (B,) the index of the generated token at which the
    confidence fell below (-1 for the others). The token that crossed the threshold is kept in the
    output, so the caller sees where it happened.

        rule = AbstainBelow(model, threshold=0.2)
        out = model.generate(**inputs, stopping_criteria=StoppingCriteriaList([rule]))
        rule.abstained, rule.abstained_at
    """

    def __init__(
        self,
        model,
        threshold: float,
        confidence: str = "sigmoid_min",
        options: ScoringOptions | None = None,
    ):
        estimator, aggregation = check_running_confidence(confidence)
        if not 0 <= float(threshold) <= 1:
            raise ValueError(f"the threshold is a probability in [0, 1], got {threshold!r}")
        self.tap = StepTap(model, options).attach()
        if REGISTRY[estimator].needs_head and self.tap.head is None:
            self.tap.detach()
            raise ValueError(f"{confidence!r} needs a Sigmoid Head adapter on the model; none is active")
        self.threshold, self.estimator, self.aggregation = float(threshold), estimator, aggregation
        self.reset()

    def reset(self) -> None:
        """Forget the previous `generate` call's rows (a new call starts afresh)."""
        self.steps = 0
        self._sum = self._min = None
        self.abstained = self.abstained_at = None

    def running(self) -> torch.Tensor:
        """(B,) the running confidence of each row, as a probability."""
        if self.aggregation == "min":
            return self._min.exp()
        if self.aggregation == "prod":
            return self._sum.exp()
        return self._mean_prob

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        log = self.tap.score(input_ids[:, -1])[self.estimator].double()  # (B,)
        if self._sum is None or self._sum.shape != log.shape:
            self._sum, self._min, self._mean_prob = log.clone(), log.clone(), log.exp()
            self.abstained = torch.zeros(log.shape, dtype=torch.bool, device=log.device)
            self.abstained_at = torch.full(log.shape, -1, dtype=torch.long, device=log.device)
            self.steps = 0
        else:
            self._sum += log
            self._min = torch.minimum(self._min, log)
            self._mean_prob = (self._mean_prob * self.steps + log.exp()) / (self.steps + 1)
        self.steps += 1
        below = (self.running() < self.threshold) & ~self.abstained
        self.abstained_at = torch.where(
            below, torch.full_like(self.abstained_at, self.steps - 1), self.abstained_at
        )
        self.abstained |= below
        return self.abstained.clone()

    def as_list(self):
        """This rule as a `StoppingCriteriaList`, for `generate(stopping_criteria=...)`."""
        from transformers import StoppingCriteriaList

        return StoppingCriteriaList([self])

    def close(self) -> None:
        """Remove the hooks (the rule is done with this model)."""
        self.tap.detach()

    def __enter__(self) -> AbstainBelow:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstention_rule(
    model, generation: GenerationOptions, options: ScoringOptions | None = None
) -> AbstainBelow | None:
    """The stopping rule `generation`'s abstain options ask for (`abstain_below`, watching
    `abstain_confidence`), for `scoring.generate(..., stopping=...)`; None when they ask for none."""
    if generation.abstain_below is None:
        return None
    return AbstainBelow(model, generation.abstain_below, generation.abstain_confidence, options)


class TokenScoreStreamer(BaseStreamer):
    """A streamer for `model.generate(..., streamer=...)` that yields, token by token as they are
    generated, `{"token": text, "id": id, "sigmoid": p, "softmax": p, ...}` (probabilities). One
    row at a time, as transformers' streamers; run `generate` in a thread and iterate:

        streamer = TokenScoreStreamer(model, tokenizer)
        Thread(target=model.generate, kwargs={**inputs, "streamer": streamer}).start()
        for item in streamer:
            print(item["token"], item["sigmoid"])

    or call `generate` first and iterate after: the items wait in a queue.
    """

    def __init__(self, model, tokenizer, options: ScoringOptions | None = None, timeout: float | None = None):
        self.tap = StepTap(model, options).attach()
        self.tokenizer = tokenizer
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        ids = value.reshape(-1) if value.dim() > 1 and value.shape[0] == 1 else value
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError(
                "TokenScoreStreamer streams one row at a time (batch size 1), as transformers' do"
            )
        if not self._prompt_seen:  # the first put is the prompt
            self._prompt_seen = True
            return
        scores = self.tap.score(ids[-1:])
        item: dict[str, Any] = {"id": int(ids[-1]), "token": self.tokenizer.decode([int(ids[-1])])}
        for name, values in scores.items():
            value_ = float(values[0])
            item[name] = (
                value_
                if name in ("entropy", "dominant_size", "dominant_mass", "greedy")
                else float(np.exp(value_))
            )
        self._queue.put(item)

    def end(self) -> None:
        self.tap.detach()
        self._queue.put(None)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        item = self._queue.get(timeout=self.timeout)
        if item is None:
            raise StopIteration
        return item
