"""The two ways in: `score` force-decodes given responses (one forward pass per batch),
`generate` lets the model write them and records the same scores during generation
(`StepScores`), with no second pass."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from ..frozen import HeadInputs, frozen_pass, right_pad, unwrap
from .inputs import _pad_id, encode_records, eos_ids
from .options import GenerationOptions, ScoringOptions
from .results import ScoredText, build_result, scores_to_host
from .tokens import active_head_layer, chunk_rows, host_reads_are_free, token_scores


def _device(model) -> torch.device:
    from ..frozen import input_device

    return input_device(model)


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def score(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    options: ScoringOptions | None = None,
    progress: bool = True,
) -> list[ScoredText]:
    """Force-decodes each record's response and scores every response token.

    `records`: dicts with `prompt` and `response`, or `messages` whose last turn is the assistant's
    response. Other keys are carried into the results. `model` may be a PeftModel with a Sigmoid
    Head, a transformers model with one loaded, or a plain model (then the softmax baselines only).
    Returns one `ScoredText` per record, in order.
    """
    from tqdm.auto import tqdm

    options = options or ScoringOptions()
    base = unwrap(model)
    if getattr(base.config, "is_encoder_decoder", False):
        return _score_seq2seq(model, tokenizer, records, options, progress)
    items = encode_records(base, tokenizer, records, options, need_response=True)
    head = active_head_layer(model)
    pad = _pad_id(tokenizer, eos_ids(base, tokenizer))
    auto = options.batch_size == "auto"
    size = auto_batch_start(_device(model)) if auto else options.batch_size
    # Batches of similar length waste less on padding; results go back in input order. With `auto`
    # the longest come first, so that a batch too large for the device fails at once.
    order = sorted(items, key=lambda it: len(it.prompt_ids) + len(it.response_ids), reverse=auto)
    results: list[ScoredText | None] = [None] * len(items)
    total = sum(len(it.response_ids) for it in items)
    bar = tqdm(total=total, desc="scoring", unit="tok", unit_scale=True, disable=not progress)
    start = 0
    while start < len(order):
        batch = order[start : start + size]
        try:
            frozen = frozen_pass(
                model,
                [it.prompt_ids + it.response_ids for it in batch],
                [len(it.prompt_ids) for it in batch],
                pad,
            )
            scores = token_scores(
                frozen.logits,
                frozen.targets,
                frozen.hidden if head is not None else None,
                head,
                options,
            )
            host = scores_to_host(scores)
        except torch.OutOfMemoryError:
            if not auto or size == 1:
                raise
            frozen = scores = None
            size //= 2  # HFLM's `batch_size=auto` halves too; the size that fits is kept
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        offset = 0
        for it, r in zip(batch, frozen.counts):
            results[it.index] = build_result(it, tokenizer, it.response_ids, host, slice(offset, offset + r))
            offset += r
        start += len(batch)
        bar.update(sum(frozen.counts))
    bar.close()
    return results  # type: ignore[return-value]


#: Records in the first batch of `batch_size='auto'` off the CPU; halved until a batch fits.
AUTO_BATCH_START = 512
#: On a CPU, batches past 8 records only add padding: the matrix products are as fast per token.
CPU_AUTO_BATCH = 8


def _fixed(options: ScoringOptions) -> int:
    if options.batch_size == "auto":
        raise ValueError(
            "`batch_size='auto'` is for force-decoding decoder-only models (`score`); give generation "
            "and encoder-decoder models a number of records, e.g. batch_size=8"
        )
    return options.batch_size


def auto_batch_start(device: torch.device) -> int:
    """The first batch size `batch_size='auto'` tries on `device`."""
    return CPU_AUTO_BATCH if device.type == "cpu" else AUTO_BATCH_START


def _score_seq2seq(model, tokenizer, records, options, progress) -> list[ScoredText]:
    from tqdm.auto import tqdm

    base = unwrap(model)
    opts = ScoringOptions(**{f.name: getattr(options, f.name) for f in fields(options)})
    opts.chat_template = False  # the prompt is the encoder's input, as the model was trained
    items = encode_records(base, tokenizer, records, opts, need_response=True)
    head = active_head_layer(model)
    device = _device(model)
    pad = _pad_id(tokenizer, eos_ids(base, tokenizer))
    results: list[ScoredText | None] = [None] * len(items)
    for batch in tqdm(list(_batches(items, _fixed(options))), desc="scoring", disable=not progress):
        enc = right_pad([it.prompt_ids for it in batch], pad)
        labels = right_pad([it.response_ids for it in batch], -100)[0]
        with HeadInputs(model) as capture:
            logits = base(
                input_ids=enc[0].to(device), attention_mask=enc[1].to(device), labels=labels.to(device)
            ).logits  # (B, L, V): position t predicts label t
        hidden = capture.captured[-1]
        for b, it in enumerate(batch):
            r = len(it.response_ids)
            scores = token_scores(
                logits[b, :r],
                torch.tensor(it.response_ids, device=device),
                hidden[b, :r],
                head,
                options,
            )
            results[it.index] = build_result(
                it, tokenizer, it.response_ids, scores_to_host(scores), slice(0, r)
            )
    return results  # type: ignore[return-value]


def first_end(tokens: np.ndarray, eos: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For generated `tokens` (B, S): whether each row holds an end-of-turn id of `eos`, and the
    index of its first one (S where there is none), for the whole batch at once."""
    hit = np.isin(tokens, np.asarray(list(eos), dtype=tokens.dtype))  # (B, S)
    stopped = hit.any(1)
    return stopped, np.where(stopped, hit.argmax(1), tokens.shape[1])


class StepScores:
    """Scores every generated token from the step that produced it, while `generate` runs.

    A forward hook on the model keeps each step's logits (B, V) and the head's input (B, H); the
    next step's forward pre-hook reads the tokens just chosen (its input ids). On an accelerator,
    steps whose tokens are known are scored together once they fill a chunk (`chunk_rows`, chosen
    by device), so the estimators run as a few large passes, not a series of small ones per step;
    on a CPU each step is scored at once (`_due`). At most a chunk of logits is held, never
    (B, S, V). Rows past a sequence's end are scored too and never read, so
    the host never has to look at the tokens while generating; `finish` scores what is left and
    copies the whole batch to the host at once.

        with StepScores(model, options) as steps:
            sequences = model.generate(...)
        host = steps.finish(sequences[:, width:])  # estimator -> (B * S,), row-major
    """

    def __init__(self, model, options: ScoringOptions | None = None):
        self.base = unwrap(model)
        self.head = active_head_layer(model)
        self.options = options or ScoringOptions()
        self.scored: list[dict[str, torch.Tensor]] = []  # chunks of steps, step-major (k * B,)
        self.n_steps = 0
        self._inputs = HeadInputs(model, last_only=True)
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the newest step
        self._known: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []  # its tokens known

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if self._pending is not None and ids is not None:
            self._chosen(ids[:, -1])

    def _after(self, module, args, kwargs, output):
        logits, hidden = self._inputs.step(output)  # (B, V), (B, H)
        if self.head is not None and hidden is None:
            raise RuntimeError("the model's generate loop did not call the output head at this step")
        self._pending = (logits, hidden)

    def _chosen(self, tokens: torch.Tensor) -> None:
        logits, hidden = self._pending
        self._pending = None
        self._known.append((logits, hidden, tokens.to(logits.device)))
        if self._due(logits):
            self._flush()

    def _due(self, logits: torch.Tensor) -> bool:
        """Whether the steps whose tokens are known are scored now. On a CPU at every step: holding
        several steps' logits costs fresh memory pages, more than the kernels it would save (+4.1 %
        against +2.6 % of generation time, measured with `bench/bench_scoring.py`). Elsewhere once
        they fill a chunk."""
        if self.options.chunk_rows is None and host_reads_are_free(logits.device):
            return True
        rows = chunk_rows(logits.device, logits.shape[-1], self.options.chunk_rows)
        return len(self._known) * logits.shape[0] >= rows

    @torch.no_grad()
    def _flush(self) -> None:
        if not self._known:
            return
        logits, hidden, tokens = zip(*self._known)
        self.n_steps += len(self._known)
        self._known = []
        self.scored.append(
            token_scores(
                torch.cat(logits),  # (k * B, V), step-major
                torch.cat(tokens),
                None if self.head is None else torch.cat(hidden),
                self.head,
                self.options,
            )
        )

    def __enter__(self):
        self._inputs.__enter__()
        self._handles = [
            self.base.register_forward_pre_hook(self._before, with_kwargs=True),
            self.base.register_forward_hook(self._after, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._inputs.__exit__(*exc)

    def finish(self, generated: torch.Tensor) -> dict[str, np.ndarray]:
        """The batch's scores on the host, from the generated tokens `generated` (B, S):
        `{estimator: (B * S,)}`, row `b`'s step `s` at `b * S + s`."""
        if self._pending is not None:
            self._chosen(generated[:, -1])
        self._flush()
        batch, steps = generated.shape
        if self.n_steps != steps:
            raise RuntimeError(
                f"scored {self.n_steps} steps for {steps} generated tokens; the model's generate loop "
                "calls the model an unexpected number of times"
            )
        if not self.scored:
            return {}
        flat = {  # step-major (S * B,) -> row-major (B * S,)
            k: torch.cat([part[k] for part in self.scored]).view(steps, batch).t().reshape(-1)
            for k in self.scored[0]
        }
        return scores_to_host(flat)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    records: Sequence[Mapping[str, Any]],
    options: ScoringOptions | None = None,
    generation: GenerationOptions | None = None,
    progress: bool = True,
    stopping=None,
) -> list[ScoredText]:
    """Generates a response to each record and scores its tokens as they are generated.

    The scores come from the same logits and head inputs that produced the tokens: no second
    forward pass. `softmax` is the model's raw distribution (before temperature or top-p).
    `records`: dicts with `prompt`, or `messages` (the conversation so far).

    `stopping`: a ready-made stopping rule that ends a row early, built by the caller (such as
    `scoring.abstain.AbstainBelow`, which `generation`'s abstain options describe): a transformers
    `StoppingCriteria` with `reset()` (called before each batch), `as_list()`, and after each
    batch `abstained` and `abstained_at` per row. A row it stops ends after the token where it
    stopped and is marked `abstained`. The caller removes it when done (`close()`).
    """
    from tqdm.auto import tqdm

    options = options or ScoringOptions()
    generation = generation or GenerationOptions()
    if generation.abstain_below is not None and stopping is None:
        raise ValueError(
            f"`abstain_below` ({generation.abstain_below}) needs its stopping rule: pass "
            "`stopping=abstention_rule(model, generation, options)` (sighead_eval.scoring.abstain), or "
            "call `sighead_eval.scoring.generate`, which builds it"
        )
    base = unwrap(model)
    if getattr(base.config, "is_encoder_decoder", False):
        raise ValueError("`generate` supports decoder-only models; use `score` for encoder-decoder models")
    eos = eos_ids(base, tokenizer)
    pad = _pad_id(tokenizer, eos)
    items = encode_records(base, tokenizer, records, options, need_response=False)
    device = _device(model)
    results: list[ScoredText] = []
    for n, batch in enumerate(
        tqdm(list(_batches(items, _fixed(options))), desc="generating", disable=not progress)
    ):
        width = max(len(it.prompt_ids) for it in batch)
        # Left padding: every prompt ends at the same column, where generation continues.
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, it in enumerate(batch):
            input_ids[b, width - len(it.prompt_ids) :] = torch.tensor(it.prompt_ids)
            mask[b, width - len(it.prompt_ids) :] = 1
        sampling = (
            {"do_sample": True, "temperature": generation.temperature, "top_p": generation.top_p}
            if generation.do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        torch.manual_seed(generation.seed + n)
        if stopping is not None:
            stopping.reset()  # this batch's rows start afresh
        with StepScores(model, options) as steps:
            out = base.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=generation.max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos or None,
                return_dict_in_generate=True,
                **({"stopping_criteria": stopping.as_list()} if stopping is not None else {}),
                **sampling,
            )
        generated = out.sequences[:, width:]  # (B, S)
        host = steps.finish(generated)
        tokens = generated.cpu().numpy()  # (B, S)
        stopped, ends = first_end(tokens, eos)
        if stopping is not None:
            abstained, at = stopping.abstained.cpu().numpy(), stopping.abstained_at.cpu().numpy()
        for b, it in enumerate(batch):
            end, stop = int(ends[b]), bool(stopped[b])
            if stopping is not None and abstained[b] and at[b] < end:  # stopped by the rule: cut after it
                end, stop = int(at[b]) + 1, False
            keep = end + 1 if (stop and (options.include_eos or end == 0)) else end
            it.empty_response = end == 0
            start = b * tokens.shape[1]
            result = build_result(
                it,
                tokenizer,
                tokens[b, :keep].tolist(),
                host,
                slice(start, start + keep),
                response=tokenizer.decode(tokens[b, :end].tolist(), skip_special_tokens=True),
                finished=stop,
            )
            if stopping is not None:
                result.abstained = bool(abstained[b] and at[b] < keep)
                result.abstained_at = int(at[b]) if result.abstained else None
            results.append(result)
    return results
