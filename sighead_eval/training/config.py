"""The settings of a training run: `TrainConfig` (the defaults are the paper's) and the named
presets of `--recipe` (`RECIPES`). The command line's `train` options are generated from its
fields and their help."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..adapter.config import OFFSETS
from ..dominant import check_rule
from ..models import model_field
from .data import TRAIN_TURNS
from .negatives import MODES

#: Evaluations per epoch when `eval_every` is not given (at most every `AUTO_EVAL_MAX` steps).
AUTO_EVALS_PER_EPOCH = 4
AUTO_EVAL_MAX = 600

#: Named presets of `TrainConfig` (`--recipe`): the fields each sets; every one can be overridden.
#: `paper` is the paper-era code's recipe, the dataclass defaults. `authors-2026` is the authors'
#: current config (their repository, since 2026-01-19): the dominant rule's `first` cut, evaluation
#: every 600 optimizer steps on a dev set of up to 5,000 rows with patience 3 (the best head kept),
#: every assistant turn trained with its end-of-turn token, and the frozen pass under bf16 autocast.
#: docs/training.md says what each difference changes.
RECIPES: dict[str, dict] = {
    "paper": {},
    "authors-2026": {
        "dominant_mode": "first",
        "eval_every": 600,
        "dev_max": 5000,
        "patience": 3,
        "train_turns": "all",
        "frozen_autocast": "bfloat16",
    },
}


@dataclass
class TrainConfig:
    """Settings of a Sigmoid Head training run; the defaults are the paper's."""

    recipe: str = field(
        default="paper",
        metadata={
            "help": "Preset of the other settings: 'paper' (the paper-era recipe, these defaults) or "
            "'authors-2026' (the authors' current config: dominant_mode first, eval_every 600, dev_max 5000, "
            "train_turns all, frozen_autocast bfloat16). Options given beside it override it."
        },
    )
    data: str = field(
        default="sighead:wiki",
        metadata={
            "help": "Training data: a Hugging Face dataset id, a local json/jsonl/parquet/csv file or "
            "dataset directory, 'sighead:wiki' (the offline Wikipedia summaries of the default head) or "
            "'sighead:wiki-swapped' (the same with one fact swapped in each, labelled: error-span data). "
            "Rows with `messages`, `prompt`+`response`, `text`, or the MQM schema (`src`, `mt`, "
            "`annotations`, `lp`)."
        },
    )
    output_dir: str = field(
        default="sighead-adapter", metadata={"help": "Where the adapter and its card go."}
    )
    model: str | None = model_field("model")
    data_split: str | None = field(
        default=None, metadata={"help": "Split of a hub dataset (default: train)."}
    )
    dev_data: str | None = field(
        default=None,
        metadata={"help": "A separate dev set, in the forms `data` takes. Default: part of `data`, by seed."},
    )
    chat_template: bool | None = field(
        default=None, metadata={"help": "Format chat/prompt data with the chat template (default: yes)."}
    )
    max_length: int = field(default=512, metadata={"help": "Tokens per example; longer responses are cut."})
    max_examples: int | None = field(default=None, metadata={"help": "Use at most this many examples."})
    cache_hidden: bool = field(
        default=False,
        metadata={
            "help": "Run the frozen model once: keep every response position's head input (fp16) and every "
            "planned epoch's negatives, drawn then from the full softmax, in memory (about 1.4 KB a position "
            "for a 576-wide model, 3 epochs); epochs then run over the cache without the model."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also write the cached frozen pass here (implies cache_hidden), shard by shard: an "
            "interrupted pass resumes, and runs with the same model, data and negatives reuse it."
        },
    )
    dev_fraction: float = field(default=0.05, metadata={"help": "Share of examples held out for dev."})
    dev_max: int | None = field(default=300, metadata={"help": "At most this many dev examples."})
    negatives: str = field(
        default="dominant",
        metadata={
            "help": "Negatives: 'dominant' (paper: exclude dominant tokens), 'mixed' (ablation: the paper's "
            "proposals without the dominant exclusion), 'random' (ablation: uniform, no exclusion), 'full' "
            "(ablation: full-vocabulary BCE)."
        },
    )
    offset: str = field(
        default="none",
        metadata={
            "help": "Offset of the head's logit: 'none' (paper) or 'log_softmax' (minus the LM's log-sum-exp "
            "at the position: the untrained head ranks tokens as the softmax does; training refines it)."
        },
    )
    negative_top_p: float = field(
        default=0.0,
        metadata={
            "help": "Also keep the softmax's top-p set (at most 64 tokens) out of the training negatives, "
            "e.g. 0.9: softer negatives for plausible tokens. 0 = off (paper). Dev BCE keeps the paper's."
        },
    )
    num_negatives: int = field(default=10, metadata={"help": "Negatives per position (K)."})
    ranking_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "The authors' ranking loss (2026-03): at each position, for every dominant token other "
            "than the reference, max(0, s_dom - s_ref + margin) on the head's logits, averaged over the "
            "batch's pairs, times this weight, added to the BCE. 0 = off (the paper; the authors' default)."
        },
    )
    ranking_loss_margin: float = field(
        default=0.0, metadata={"help": "The ranking loss's margin (the authors' default: 0)."}
    )
    error_spans: bool = field(
        default=False,
        metadata={
            "help": "Error-span training (the authors' MQM mode; it uses labelled errors, unlike the "
            "paper's head): tokens inside the data's error spans (the MQM schema's `annotations`, or an "
            "`error_spans` column of [start, end] characters of the response) are trained as negatives, "
            "the reference itself the one negative of its position. E.g. --data sighead:wiki-swapped."
        },
    )
    error_span_weight: float = field(
        default=10.0,
        metadata={"help": "Weight of an error-span token's BCE term (the authors use 10)."},
    )
    unigram_share: float = field(default=0.5, metadata={"help": "Share of negatives drawn from the unigram."})
    softmax_temperature: float = field(default=2.0, metadata={"help": "Temperature of the softmax proposal."})
    p_jump: float = field(default=0.3, metadata={"help": "Dominant-token rule: relative drop."})
    epsilon: float = field(default=0.005, metadata={"help": "Dominant-token rule: absolute drop."})
    dominant_mode: str = field(
        default="last", metadata={"help": "Dominant-token rule: 'last' or 'first' cut."}
    )
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (cosine schedule, no warm-up)."})
    epochs: int = field(default=3, metadata={"help": "Most epochs."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    grad_accum: int = field(
        default=9, metadata={"help": "Batches per optimizer step (8 x 9 = 72 sequences)."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (default: no limit)."}
    )
    eval_every: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on dev (and checkpoint) every N optimizer steps, and at each epoch end. "
            f"Default: {AUTO_EVALS_PER_EPOCH} times an epoch, at most every {AUTO_EVAL_MAX} steps, so that "
            "early stopping can act within an epoch."
        },
    )
    patience: int = field(
        default=3, metadata={"help": "Early stopping: evaluations without dev improvement."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the dev split, data order and negatives."})
    train_turns: str = field(
        default="last",
        metadata={
            "help": "Chat rows: 'last' trains the last response's tokens (what `score` scores; the paper's "
            "code); 'all' trains every assistant turn with the template's closing tokens, the end-of-turn "
            "token among them (the authors' current code)."
        },
    )
    frozen_autocast: str | None = field(
        default=None,
        metadata={
            "help": "Run the frozen pass under torch autocast in this dtype ('bfloat16', as the authors' "
            "current code; 'float16'); the head and its loss stay float32. Default: off."
        },
    )
    dtype: str = model_field("dtype")
    device: str | None = model_field("device")
    init_from_lm_head: bool = field(
        default=True, metadata={"help": "Start the head as a copy of the LM head."}
    )
    storage_dtype: str = field(default="float32", metadata={"help": "Dtype of the saved weights file."})
    storage: str = field(
        default="full",
        metadata={
            "help": "'full' (every row) or 'rows': only the rows training changed (the others equal the LM "
            "head, which the base model holds); a small file when training touched few rows."
        },
    )
    snapshots: bool = field(
        default=False,
        metadata={
            "help": "Also keep the head of every evaluation as an adapter (fp16) in "
            "output_dir/snapshots/tokens-N/, for curves of any task against tokens trained."
        },
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an adapter already in output_dir."})

    @classmethod
    def from_recipe(cls, recipe: str = "paper", **overrides) -> TrainConfig:
        """The preset `recipe` (`RECIPES`) with `overrides` on top: what `train --recipe` builds."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**{**RECIPES[recipe], **overrides, "recipe": recipe})

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"`recipe` should be one of {tuple(RECIPES)}, got {self.recipe!r}")
        if self.train_turns not in TRAIN_TURNS:
            raise ValueError(f"`train_turns` should be one of {TRAIN_TURNS}, got {self.train_turns!r}")
        if self.frozen_autocast not in (None, "bfloat16", "float16"):
            raise ValueError(
                "`frozen_autocast` should be None (off), 'bfloat16' or 'float16', "
                f"got {self.frozen_autocast!r}"
            )
        for name in ("num_negatives", "epochs", "batch_size", "grad_accum", "max_length", "patience"):
            _check_int(self, name, minimum=1)
        for name in ("max_steps", "eval_every", "dev_max", "max_examples"):
            _check_int(self, name, minimum=1, optional=True)
        if self.negatives not in MODES:
            raise ValueError(f"`negatives` should be one of {MODES}, got {self.negatives!r}")
        if self.offset not in OFFSETS:
            raise ValueError(f"`offset` should be one of {OFFSETS}, got {self.offset!r}")
        for name, low, high, closed in (
            ("negative_top_p", 0, 1, True),
            ("unigram_share", 0, 1, True),
            ("dev_fraction", 0, 1, False),
        ):
            value = getattr(self, name)
            inside = low <= value <= high if closed else low < value < high
            if not isinstance(value, (int, float)) or not inside:
                bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
                raise ValueError(f"`{name}` should be in {bounds}, got {value!r}")
        for name in ("ranking_loss_weight", "ranking_loss_margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` should be a finite number >= 0, got {value!r}")
        if self.ranking_loss_weight and self.negatives == "full":
            raise ValueError(
                "the ranking loss is for sampled training (`negatives` dominant, mixed or random); the "
                "`full` ablation has no pairs to rank"
            )
        if not (
            isinstance(self.error_span_weight, (int, float))
            and self.error_span_weight > 0
            and math.isfinite(self.error_span_weight)
        ):
            raise ValueError(
                f"`error_span_weight` should be a finite number > 0, got {self.error_span_weight!r}"
            )
        if self.error_spans and self.negatives == "full":
            raise ValueError(
                "error-span training is sampled training: use `negatives` dominant, mixed or random"
            )
        if self.error_spans and self.train_turns != "last":
            raise ValueError(
                "error-span training labels the last response's own tokens (as the authors' MQM mode does): "
                f"pass train_turns='last' (--train-turns last); got {self.train_turns!r}"
            )
        for name in ("lr", "softmax_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` should be a finite number > 0, got {value!r}")
        if self.storage not in ("full", "rows"):  # lowrank is lossy: `sighead-eval compress` after a run
            raise ValueError(f"`storage` should be 'full' or 'rows', got {self.storage!r}")
        if self.storage == "rows" and not self.init_from_lm_head:
            raise ValueError(
                "`storage='rows'` stores the rows that differ from the LM head: it needs init_from_lm_head"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"`dtype` should be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.storage_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(
                f"`storage_dtype` should be float32, float16 or bfloat16, got {self.storage_dtype!r}"
            )
        check_rule(self.p_jump, self.epsilon, self.dominant_mode, None)
        if self.cache_dir:
            self.cache_hidden = True  # a cache directory is a cache: the card says so

    @property
    def ranking(self) -> bool:
        """Whether the ranking loss is on."""
        return self.ranking_loss_weight > 0

    def settings(self) -> dict:
        """The settings that define the trained head (not where it goes or how the run is resumed).
        The ranking loss's and the error spans' settings only when they are on: a run without them
        is the run it always was (its checkpoints resume and its cards read as before)."""
        skip = {"output_dir", "resume", "overwrite", "storage_dtype", "storage", "cache_dir", "snapshots"}
        if not self.ranking:
            skip |= {"ranking_loss_weight", "ranking_loss_margin"}
        if not self.error_spans:
            skip |= {"error_spans", "error_span_weight"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def _check_int(config, name: str, minimum: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"`{name}` should be {accepted}, got {value!r}")
