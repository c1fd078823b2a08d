"""The scoring engine: model + texts -> per-token, per-word and per-sequence confidence.

One frozen pass gives, at every response position, the head's input `h_t` and the softmax logits.
From them `token_scores` computes every token estimator of the registry
(`sighead_eval.estimators.REGISTRY`: the Sigmoid Head, the softmax, BoostedProb, ...), the
softmax entropy in nats (higher = less sure), and the dominant set's size and mass.

Two ways in: `score` force-decodes given responses (one forward pass per batch), `generate` lets
the model write the responses and records the same scores during generation, with no second pass.

Conventions: prompt and chat-template tokens are never scored; the end-of-turn/EOS token is left
out unless `include_eos=True`. An empty response is scored as the end-of-turn token the model
emitted in its place (so every aggregate is a finite number, never NaN); such results carry
`empty_response=True`.

The package's files, each small enough to read at once: `options` (what a run is asked for),
`inputs` (records to token ids), `tokens` (the per-token core over chunks of rows), `results`
(`ScoredText`), `engine` (`score`, `generate`, `StepScores`), `abstain` (confidence while
decoding: the stopping rule `AbstainBelow`, `TokenScoreStreamer`).
"""

from __future__ import annotations

from ..frozen import unwrap
from . import engine
from .abstain import AbstainBelow, TokenScoreStreamer, abstention_rule
from .engine import (
    AUTO_BATCH_START,
    CPU_AUTO_BATCH,
    StepScores,
    auto_batch_start,
    first_end,
    score,
)
from .inputs import (
    Encoded,
    encode_records,
    eos_ids,
    fit_response,
    hflm_context_ids,
    model_context_length,
    padding_id,
)
from .options import TRUNCATION, GenerationOptions, ScoringOptions
from .results import ScoredText, build_result, scores_to_host, word_spans
from .tokens import (
    CPU_CHUNK_ROWS,
    DEVICE_CHUNK_BYTES,
    SHORT_TOP_K,
    TOKEN_STATS,
    Chunk,
    active_head,
    active_head_layer,
    chunk_rows,
    host_reads_are_free,
    token_scores,
    top_log_probs,
    wanted_estimators,
)


def generate(model, tokenizer, records, options=None, generation=None, progress=True, stopping=None):
    """`engine.generate` (the arguments are its own), with the stopping rule `generation`'s abstain
    options ask for (`abstain_below`) built here when the caller passes none, and removed after. A
    caller that builds its own (`AbstainBelow`, or any rule of that shape) passes it as
    `stopping`."""
    rule = stopping
    if rule is None and generation is not None:
        rule = abstention_rule(model, generation, options)
    try:
        return engine.generate(model, tokenizer, records, options, generation, progress, stopping=rule)
    finally:
        if stopping is None and rule is not None:
            rule.close()


__all__ = [
    "AUTO_BATCH_START",
    "AbstainBelow",
    "CPU_AUTO_BATCH",
    "CPU_CHUNK_ROWS",
    "DEVICE_CHUNK_BYTES",
    "SHORT_TOP_K",
    "TOKEN_STATS",
    "TRUNCATION",
    "Chunk",
    "Encoded",
    "GenerationOptions",
    "ScoredText",
    "ScoringOptions",
    "StepScores",
    "TokenScoreStreamer",
    "abstention_rule",
    "active_head",
    "active_head_layer",
    "auto_batch_start",
    "build_result",
    "chunk_rows",
    "encode_records",
    "eos_ids",
    "first_end",
    "fit_response",
    "generate",
    "hflm_context_ids",
    "host_reads_are_free",
    "model_context_length",
    "padding_id",
    "score",
    "scores_to_host",
    "token_scores",
    "unwrap",
    "top_log_probs",
    "wanted_estimators",
    "word_spans",
]
