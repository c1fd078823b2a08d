"""What a scoring run is asked for: `ScoringOptions` (how texts become token scores) and
`GenerationOptions` (how `generate` samples)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dominant import check_rule
from ..estimators import check_estimators, check_running_confidence

TRUNCATION = ("error", "left")


@dataclass
class ScoringOptions:
    """How texts are turned into token scores."""

    chat_template: bool | None = field(
        default=None,
        metadata={
            "help": "Wrap prompts in the tokenizer's chat template. Default: on when the tokenizer has one."
        },
    )
    include_eos: bool = field(
        default=False, metadata={"help": "Also score the end-of-turn/EOS token that closes the response."}
    )
    batch_size: int | str = field(
        default=8,
        metadata={
            "help": "Records per forward pass, or 'auto' (force-decoding only): as many as the device's "
            "memory holds, from 512 records down, halved on running out of memory; 8 on a CPU."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt+response in tokens. Default: the model's context length."},
    )
    truncation: str = field(
        default="error",
        metadata={
            "help": "What to do with a record longer than `max_length`: 'error', or 'left' (drop prompt "
            "tokens from the left, with a warning; the response is never cut)."
        },
    )
    p_jump: float = field(
        default=0.3, metadata={"help": "Dominant-token rule: relative drop that marks a rank."}
    )
    epsilon: float = field(
        default=0.005, metadata={"help": "Dominant-token rule: absolute drop that marks a rank."}
    )
    dominant_mode: str = field(
        default="last", metadata={"help": "Dominant-token rule: cut at the 'last' (paper) or 'first' mark."}
    )
    dominant_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Probabilities sorted for the dominant rule. Default: the exact bound 1/epsilon + 2."
        },
    )
    chunk_rows: int | None = field(
        default=None,
        metadata={
            "help": "Scored positions per vocabulary-sized pass. Default: by device (64 on a CPU, up to "
            "256 MB of float32 logits on an accelerator)."
        },
    )
    estimators: str | tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Token estimators to compute, '|'-separated (e.g. 'sigmoid|softmax|combined'). Default: "
            "every estimator but the opt-in ones (`combined`); those needing a head only where one is."
        },
    )

    def __post_init__(self):
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"`batch_size` should be a positive integer or 'auto', got {self.batch_size!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"`max_length` should be an integer >= 2 or None, got {self.max_length!r}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"`truncation` should be one of {TRUNCATION}, got {self.truncation!r}")
        check_rule(self.p_jump, self.epsilon, self.dominant_mode, self.dominant_top_k)
        if self.chunk_rows is not None and (not isinstance(self.chunk_rows, int) or self.chunk_rows < 1):
            raise ValueError(f"`chunk_rows` should be a positive integer or None, got {self.chunk_rows!r}")
        if self.estimators is not None:
            self.estimators = check_estimators(self.estimators)


@dataclass
class GenerationOptions:
    """How `generate` samples responses."""

    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per response."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with `do_sample`)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with `do_sample`)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler; batch i uses seed + i."})
    abstain_below: float | None = field(
        default=None,
        metadata={
            "help": "Stop a response as soon as its running confidence (--abstain-confidence) falls below "
            "this probability, and mark it `abstained` (where it happened: `abstained_at`)."
        },
    )
    abstain_confidence: str = field(
        default="sigmoid_min",
        metadata={
            "help": "The running confidence --abstain-below watches: a token estimator (sigmoid, softmax, "
            "boostedprob, ...) and _min, _mean or _prod over the tokens generated so far."
        },
    )

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` should be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` should be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` should be in (0, 1], got {self.top_p!r}")
        if self.abstain_below is not None and not 0 <= self.abstain_below <= 1:
            raise ValueError(f"`abstain_below` is a probability in [0, 1], got {self.abstain_below!r}")
        check_running_confidence(self.abstain_confidence)
