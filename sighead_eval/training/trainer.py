"""Training a Sigmoid Head on a frozen model (the paper's procedure, with its defaults).

Per batch: frozen pass (hidden states, logits at response positions) -> dominant sets ->
negatives -> BCE on the positive and sampled pairs -> a sparse step that touches only the rows
looked up. Only the head is trained; the base model runs without gradients.

Reproducible and resumable: data order and negatives depend only on (seed, epoch, batch), so a
run resumed from its last checkpoint ends with the same adapter as an uninterrupted one.
Checkpoints (head, optimizer moments, early-stopping state) are safetensors + JSON, written to a
temporary directory and renamed into place. Data-parallel under `accelerate launch` or
`torchrun`: each process takes every `world`-th batch of an optimizer step and the sparse
gradients are averaged (DDP, gloo on CPU).

Recipe notes (SmolLM2-135M-Instruct, `sighead:wiki`, macro ROC-AUC on the dev halves of the offline
tasks geo_qa / arith / wiki_facts, head's best aggregation; full table in the shipped adapter's card):
- The paper's recipe, lr 1e-3, 160 steps: 0.68 / 0.35 / 0.59. It is worse than the untrained
  offset head everywhere, and inverted on arithmetic.
- The paper's recipe at its own lr, 1e-4, 60 steps: 0.72 / 0.75 / 0.61.
- `head_offset='log_softmax'`, untrained: 0.81 / 0.89 / 0.71, level with the softmax's best
  (0.80 / 0.87 / 0.71). This lever is what made the head competitive.
- The offset at lr 1e-3, 100 steps: 0.75 / 0.84 / 0.68. A high learning rate undoes the start.
- The offset at lr 1e-4, 60 steps (the shipped head): 0.83 / 0.88 / 0.71. Small gains on two tasks.
- The offset at lr 1e-3 with `cache_hidden`, 3 epochs (fresh negatives each epoch): 0.71 / 0.90 /
  0.69. It helps arithmetic and hurts geography.
- `negative_top_p` is built and tested but was not run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..dominant import check_rule, dominant_tokens
from ..frozen import frozen_pass, unwrap
from .data import Example, encode_examples, load_records, split_dev
from .loss import full_vocab_loss, sigmoid_head_loss
from .negatives import MODES, sample_negatives, unigram_distribution

CHECKPOINT = "checkpoint"
LOG = "training_log.jsonl"


@dataclass
class TrainConfig:
    """Settings of a Sigmoid Head training run; the defaults are the paper's."""

    data: str = field(
        default="sighead:wiki",
        metadata={
            "help": "Training data: a Hugging Face dataset id, a local json/jsonl/parquet/csv file or "
            "dataset directory, or 'sighead:wiki' (the offline Wikipedia summaries of the default head). "
            "Rows with `messages`, `prompt`+`response`, or `text`."
        },
    )
    output_dir: str = field(
        default="sighead-adapter", metadata={"help": "Where the adapter and its card go."}
    )
    model: str | None = field(
        default=None, metadata={"help": "Base model: hub id or local path (default: embedded SmolLM2)."}
    )
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
            "help": "Keep each training example's head inputs in memory (fp16, about 1.2 KB per token for a "
            "576-wide model) after its first forward pass: later epochs recompute logits, dominant sets and "
            "fresh negatives from the cache instead of running the frozen model again."
        },
    )
    dev_fraction: float = field(default=0.05, metadata={"help": "Share of examples held out for dev."})
    dev_max: int | None = field(default=300, metadata={"help": "At most this many dev examples."})
    negatives: str = field(
        default="dominant",
        metadata={
            "help": "Negatives: 'dominant' (paper: exclude dominant tokens), 'random' (ablation: uniform, "
            "no exclusion), 'full' (ablation: full-vocabulary BCE)."
        },
    )
    head_offset: str = field(
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
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    eval_every: int = field(
        default=0, metadata={"help": "Evaluate (and checkpoint) every N steps; 0 = at each epoch end only."}
    )
    patience: int = field(
        default=3, metadata={"help": "Early stopping: evaluations without dev improvement."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the dev split, data order and negatives."})
    base_dtype: str = field(default="float32", metadata={"help": "Frozen model dtype: float32 or bfloat16."})
    init_from_lm_head: bool = field(
        default=True, metadata={"help": "Start the head as a copy of the LM head."}
    )
    storage_dtype: str = field(default="float32", metadata={"help": "Dtype of the saved weights file."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an adapter already in output_dir."})

    def __post_init__(self):
        for name in ("num_negatives", "epochs", "batch_size", "grad_accum", "max_length", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` should be a positive integer, got {value!r}")
        if self.negatives not in MODES:
            raise ValueError(f"`negatives` should be one of {MODES}, got {self.negatives!r}")
        if not 0.0 <= self.negative_top_p <= 1.0:
            raise ValueError(f"`negative_top_p` should be in [0, 1], got {self.negative_top_p!r}")
        if self.head_offset not in ("none", "log_softmax"):
            raise ValueError(f"`head_offset` should be 'none' or 'log_softmax', got {self.head_offset!r}")
        if not self.lr > 0:
            raise ValueError(f"`lr` should be > 0, got {self.lr!r}")
        if self.base_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`base_dtype` should be 'float32' or 'bfloat16', got {self.base_dtype!r}")
        if self.storage_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(
                f"`storage_dtype` should be float32, float16 or bfloat16, got {self.storage_dtype!r}"
            )
        check_rule(self.p_jump, self.epsilon, self.dominant_mode, None)

    def recipe(self) -> dict:
        """The settings that define the trained head (not where it goes or how the run is resumed)."""
        skip = {"output_dir", "resume", "overwrite", "storage_dtype"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    tokens: int = 0
    best_dev: float = math.inf
    bad_evals: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)


class TrainingError(RuntimeError):
    pass


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    return rank, world


def _generator(seed: int, *parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + sum(p * 7919**i for i, p in enumerate(parts, 1))) % (2**63))
    return g


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _check_output_dir(config: TrainConfig) -> Path:
    out = Path(config.output_dir)
    has_adapter = (out / "adapter_config.json").is_file()
    has_checkpoint = (out / CHECKPOINT / "state.json").is_file()
    if config.resume:
        if not has_checkpoint:
            raise ValueError(f"`resume` was asked but {str(out)!r} holds no checkpoint to resume from")
        saved = json.loads((out / CHECKPOINT / "state.json").read_text())["recipe"]
        changed = sorted(
            k for k in set(saved) | set(config.recipe()) if saved.get(k) != config.recipe().get(k)
        )
        if changed:
            raise ValueError(f"the checkpoint in {str(out)!r} was made with other settings: {changed}")
    elif (has_adapter or has_checkpoint) and not config.overwrite:
        raise ValueError(
            f"{str(out)!r} already holds an adapter or a checkpoint; pass `overwrite=True` (--overwrite) to "
            "replace it, or `resume=True` (--resume) to continue its run"
        )
    return out


class _DevSet:
    """Dev positions computed once: head inputs, references and fixed negatives."""

    def __init__(self, model, examples: list[Example], config: TrainConfig, unigram, pad: int):
        hidden, targets, negatives, valid, offsets = [], [], [], [], []
        for i in range(0, len(examples), config.batch_size):
            batch = examples[i : i + config.batch_size]
            frozen = frozen_pass(model, [e.ids for e in batch], [e.start for e in batch], pad)
            # Always the paper's negatives, whatever the training mode: dev BCE stays comparable.
            neg, ok = _negatives(frozen, config, unigram, _generator(config.seed, 99991, i), "dominant")
            hidden.append(frozen.hidden.float())
            offsets.append(_offset(frozen, config))
            targets.append(frozen.targets)
            negatives.append(neg)
            valid.append(ok)
        self.hidden = torch.cat(hidden)
        self.targets = torch.cat(targets)
        self.negatives = torch.cat(negatives)
        self.valid = torch.cat(valid)
        self.offsets = torch.cat(offsets)

    @torch.no_grad()
    def evaluate(self, head: torch.nn.Module) -> dict:
        """Dev BCE on the paper's sampled pairs, and ROC-AUC of references against negatives."""
        from ..metrics import roc_auc

        losses, weights, pos, neg = [], [], [], []
        for i in range(0, self.hidden.shape[0], 4096):
            s = slice(i, i + 4096)
            loss, logits = sigmoid_head_loss(
                head, self.hidden[s], self.targets[s], self.negatives[s], self.valid[s], self.offsets[s]
            )
            n = self.valid[s].sum().item() + self.targets[s].shape[0]
            losses.append(loss.item() * n)
            weights.append(n)
            pos.append(logits[:, 0])
            neg.append(logits[:, 1:][self.valid[s]])
        pos, neg = torch.cat(pos), torch.cat(neg)
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return {
            "dev_bce": sum(losses) / sum(weights),
            "dev_auroc": roc_auc(torch.cat([pos, neg]).numpy(), labels.numpy()),
            "dev_mean_sigmoid_reference": float(torch.sigmoid(pos).mean()),
            "dev_mean_sigmoid_negative": float(torch.sigmoid(neg).mean()),
            "dev_positions": int(pos.shape[0]),
        }


def _save_checkpoint(out: Path, head, optimizer, best_head, state: _State, config: TrainConfig) -> None:
    from safetensors.torch import save_file

    tensors = {"head": head.weight.detach().contiguous(), "best_head": best_head.contiguous()}
    opt_state = optimizer.state_dict()["state"].get(0, {})
    scalars = {}
    for key, value in opt_state.items():
        if torch.is_tensor(value) and value.dim() > 0:
            tensors[f"opt.{key}"] = value.contiguous()
        else:
            scalars[key] = float(value)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=out))
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(
        json.dumps(
            {"state": dataclasses.asdict(state), "optimizer_scalars": scalars, "recipe": config.recipe()}
        )
    )
    final, old = out / CHECKPOINT, out / f"{CHECKPOINT}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out: Path, head, optimizer) -> tuple[_State, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(out / CHECKPOINT / "state.safetensors"))
    meta = json.loads((out / CHECKPOINT / "state.json").read_text())
    with torch.no_grad():
        head.weight.copy_(tensors["head"])
    opt_state = {k.removeprefix("opt."): v for k, v in tensors.items() if k.startswith("opt.")}
    for key, value in meta["optimizer_scalars"].items():
        opt_state[key] = (
            torch.tensor(value) if key == "step" and isinstance(optimizer, torch.optim.Adam) else value
        )
    if opt_state:
        state_dict = optimizer.state_dict()
        state_dict["state"] = {0: opt_state}
        optimizer.load_state_dict(state_dict)
    return _State(**meta["state"]), tensors["best_head"]


def _write_card(out: Path, config: TrainConfig, base_name: str, info: dict) -> None:
    before, after = info["dev_before"], info["dev_after"]
    rows = "\n".join(
        f"| {k} | {before[k]:.4f} | {after[k]:.4f} |"
        for k in ("dev_bce", "dev_auroc", "dev_mean_sigmoid_reference")
    )
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in config.recipe().items())
    stopped = ", stopped early" if info["stopped_early"] else ""
    data = f"`{info['data']}`: {info['n_train']} training and {info['n_dev']} dev examples"
    card = f"""---
library_name: peft
base_model: {base_name}
tags: [sigmoid-head, quality-estimation, sighead-eval]
---

# Sigmoid Head for {base_name}

A Sigmoid Head (Dinh & Niehues, arXiv:2601.00680) trained with `sighead-eval` on a frozen
`{base_name}`. Load it with `sighead_eval.models.load_model(adapter=<this directory>)` or
`PeftModel.from_pretrained(model, <this directory>)` after `import sighead_eval`.

## Training

- Data: {data} (dev held out by seed {config.seed})
- Trained response tokens: {info["tokens"]:,} ({info["steps"]} steps, {info["epochs_run"]} epoch(s){stopped})
- Wall time: {info["wall_time_s"] / 60:.1f} min on {info["device"]} ({info["world"]} process(es))
- Weights stored as {config.storage_dtype}; the head computes in float32.

## Dev metrics (before = the untrained copy of the LM head; after = the best head by dev BCE)

| metric | before | after |
|---|---|---|
{rows}

`dev_bce`: binary cross-entropy over each dev position's reference and its sampled negatives
(dominant tokens excluded). `dev_auroc`: how well the head's logit separates references from
those negatives. Neither measures quality estimation on model outputs; see the evaluation tasks.

## Settings

| setting | value |
|---|---|
{settings}
"""
    if info.get("recipe_command"):
        card += f"\n## Reproduce\n\n```bash\n{info['recipe_command']}\n```\n"
    (out / "README.md").write_text(card)


def train(config: TrainConfig, model=None, tokenizer=None, records=None, progress: bool = True) -> dict:
    """Trains a Sigmoid Head and writes the adapter + card to `config.output_dir`; returns the run info.

    `model`/`tokenizer` default to loading `config.model`; `records` to loading `config.data`.
    """
    from peft import get_peft_model
    from tqdm.auto import tqdm

    from ..adapter import SigmoidHeadConfig
    from ..models import load_model, save_adapter
    from ..scoring import _eos_ids, _pad_id

    started = time.time()
    rank, world = _distributed()
    out = _check_output_dir(config)
    torch.manual_seed(config.seed)
    rows = load_records(records if records is not None else config.data, config.data_split)
    if model is None:
        model, tokenizer = load_model(config.model, dtype=config.base_dtype)
    elif config.base_dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.eval().requires_grad_(False)
    base_name = getattr(model.config, "name_or_path", None) or config.model or "model"
    examples = encode_examples(model, tokenizer, rows, config.max_length, config.chat_template)
    if config.max_examples is not None:
        examples = examples[: config.max_examples]
    if config.dev_data is None:
        train_set, dev_set = split_dev(examples, config.dev_fraction, config.dev_max, config.seed)
    else:
        train_set = examples
        dev_rows = load_records(config.dev_data, config.data_split)
        dev_set = encode_examples(model, tokenizer, dev_rows, config.max_length, config.chat_template)
        dev_set = dev_set[: config.dev_max] if config.dev_max is not None else dev_set
    pad = _pad_id(tokenizer, _eos_ids(model, tokenizer))

    peft_model = get_peft_model(
        model, SigmoidHeadConfig(init_from_lm_head=config.init_from_lm_head, offset=config.head_offset)
    )
    layer = peft_model.get_base_model().get_output_embeddings()
    head = layer.sigmoid_head_embedding["default"]  # nn.Embedding(V, H, sparse=True), fp32
    vocab = head.weight.shape[0]
    unigram = unigram_distribution((e.ids[e.start :] for e in train_set), vocab, tokenizer.pad_token_id)
    dev = _DevSet(peft_model, dev_set, config, unigram, pad)

    dense = config.negatives == "full"
    optimizer = (torch.optim.Adam if dense else torch.optim.SparseAdam)([head.weight], lr=config.lr)
    if dense:
        head.sparse = False
    trainer_head = head
    if world > 1:
        trainer_head = torch.nn.parallel.DistributedDataParallel(head)

    n_batches = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = math.ceil(n_batches / config.grad_accum)
    total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)

    if config.resume:
        state, best_head = _load_checkpoint(out, head, optimizer)
    else:
        if out.exists() and config.overwrite and rank == 0:
            for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", LOG, CHECKPOINT):
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        state = _State()
        first = {"step": 0, "epoch": 0, "tokens": 0, **dev.evaluate(head)}
        state.history.append(first)
        state.best_dev = first["dev_bce"]
        best_head = head.weight.detach().clone()
    dev_before = state.history[0]

    def log(entry: dict) -> None:
        if rank == 0:
            with open(out / LOG, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def evaluate_and_checkpoint() -> bool:
        """Returns True when early stopping says stop."""
        nonlocal best_head
        entry = {"step": state.step, "epoch": state.epoch, "tokens": state.tokens, **dev.evaluate(head)}
        state.history.append(entry)
        log(entry)
        if entry["dev_bce"] < state.best_dev:
            state.best_dev, state.bad_evals = entry["dev_bce"], 0
            best_head = head.weight.detach().clone()
        else:
            state.bad_evals += 1
        state.stopped_early = state.bad_evals >= config.patience
        if rank == 0:
            _save_checkpoint(out, head, optimizer, best_head, state, config)
        if progress and rank == 0:
            tqdm.write(
                f"step {state.step}: dev BCE {entry['dev_bce']:.4f}, dev AUROC {entry['dev_auroc']:.4f}"
                + (" (early stop)" if state.stopped_early else "")
            )
        return state.stopped_early

    if not config.resume:
        log(dev_before)
    cache = HiddenCache(peft_model) if config.cache_hidden else None
    bar = tqdm(total=total_steps, initial=state.step, desc="training", disable=not progress or rank != 0)
    tick, tick_tokens = time.time(), 0
    done = state.stopped_early or state.step >= total_steps
    while not done and state.epoch < config.epochs:
        batches = _epoch_batches(train_set, config, state.epoch)
        for group_start in range(state.next_batch, len(batches), config.grad_accum):
            group = list(range(group_start, min(group_start + config.grad_accum, len(batches))))
            step_loss, tokens = _optimizer_step(
                peft_model, trainer_head, head, optimizer, train_set, batches, group, config, unigram, pad,
                state, total_steps, rank, world, dense, out, cache,
            )  # fmt: skip
            bar.update(1)
            tick_tokens += tokens
            now = time.time()
            bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tick_tokens / max(now - tick, 1e-9):.0f}")
            if now - tick > 30:
                tick, tick_tokens = now, 0
            last_in_epoch = group_start + config.grad_accum >= len(batches)
            if last_in_epoch:
                state.epoch, state.next_batch = state.epoch + 1, 0
            else:
                state.next_batch = group_start + config.grad_accum
            due = last_in_epoch or state.step >= total_steps
            due = due or (config.eval_every and state.step % config.eval_every == 0)
            if due and evaluate_and_checkpoint():
                done = True
            done = done or state.step >= total_steps
            if done or last_in_epoch:
                break
        else:  # no batch left in this epoch
            state.epoch, state.next_batch = state.epoch + 1, 0
    bar.close()

    with torch.no_grad():
        head.weight.copy_(best_head)
    dev_after = dev.evaluate(head)
    info = {
        "data": config.data if records is None else "records given in code",
        "n_train": len(train_set),
        "n_dev": len(dev_set),
        "tokens": state.tokens,
        "steps": state.step,
        "epochs_run": round(state.epoch + state.next_batch / max(n_batches, 1), 2),
        "stopped_early": state.stopped_early,
        "wall_time_s": time.time() - started,
        "device": str(next(peft_model.parameters()).device),
        "world": world,
        "dev_before": dev_before,
        "dev_after": dev_after,
        "recipe_command": os.environ.get("SIGHEAD_RECIPE_COMMAND"),
    }
    if rank == 0:
        peft_model.peft_config["default"].base_model_name_or_path = base_name
        save_adapter(
            peft_model, out, storage_dtype=None if config.storage_dtype == "float32" else config.storage_dtype
        )
        _write_card(out, config, base_name, info)
        (out / "trainer_state.json").write_text(json.dumps({**info, "history": state.history}, indent=1))
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return info


def _epoch_batches(train_set: list[Example], config: TrainConfig, epoch: int) -> list[list[int]]:
    """A seeded shuffle; within each optimizer step's window, batches of similar length (less padding)."""
    order = torch.randperm(len(train_set), generator=_generator(config.seed, epoch)).tolist()
    window = config.batch_size * config.grad_accum
    order = [
        i
        for w in range(0, len(order), window)
        for i in sorted(order[w : w + window], key=lambda j: (len(train_set[j].ids), j))
    ]
    return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def _optimizer_step(
    model, trainer_head, head, optimizer, train_set, batches, group, config, unigram, pad, state, total_steps,
    rank, world, dense, out, cache=None,
) -> tuple[float, int]:  # fmt: skip
    """One optimizer step over the batches in `group`; this process takes every `world`-th one."""
    mine = [bi for i, bi in enumerate(group) if i % world == rank] or [None]
    step_loss, step_tokens = 0.0, 0
    for n, bi in enumerate(mine):
        sync = n == len(mine) - 1
        ctx = trainer_head.no_sync() if (world > 1 and not sync) else _nullcontext()
        with ctx:
            if bi is None:  # no batch for this process in a short last group: join the gradient sync
                loss, tokens = trainer_head(torch.zeros(1, dtype=torch.long)).sum() * 0.0, 0
            else:
                examples = [train_set[i] for i in batches[bi]]
                loss, tokens = _batch_loss(
                    model, trainer_head, head, examples, config, unigram, pad, state.epoch, bi, dense,
                    cache, batches[bi],
                )  # fmt: skip
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite training loss ({loss.item()}) at step {state.step}, epoch {state.epoch}; "
                    f"the last good checkpoint in {str(out / CHECKPOINT)!r} is kept. Lower `lr` and resume."
                )
            # Each process scales by world / group size; DDP averages over processes: the gradient is
            # the mean over the group's batches, as in one process.
            (loss * world / len(group)).backward()
        step_loss += loss.item() / len(mine)
        step_tokens += tokens
    for g in optimizer.param_groups:
        g["lr"] = config.lr * _cosine(state.step, total_steps)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    if world > 1:
        import torch.distributed as dist

        count = torch.tensor([step_tokens], dtype=torch.long)
        dist.all_reduce(count)
        step_tokens = int(count.item())
    state.tokens += step_tokens
    return step_loss, step_tokens


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class HiddenCache:
    """Per-example head inputs (fp16) and targets, kept after an example's first frozen pass. Logits
    are recomputed from them with the frozen LM head, so later epochs skip the model's forward pass.
    Every batch, first pass included, is built from the fp16-rounded states: a resumed run (whose
    cache starts empty) trains exactly as an uninterrupted one."""

    def __init__(self, model) -> None:
        self.model = model
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def frozen(self, indices: list[int], batch: list[Example], pad: int):
        from ..frozen import FrozenOutputs, base_head

        missing = [j for j, i in enumerate(indices) if i not in self.store]
        if missing:
            part = [batch[j] for j in missing]
            fresh = frozen_pass(self.model, [e.ids for e in part], [e.start for e in part], pad)
            if getattr(unwrap(self.model), "_sighead_fast_logits_ok", None) is not True:
                raise TrainingError(
                    "`cache_hidden` needs a model whose logits are a linear map of the head input; this one "
                    "has a logits bias or soft-capping. Train without --cache-hidden."
                )
            offset = 0
            for j, n in zip(missing, fresh.counts):
                h = fresh.hidden[offset : offset + n].to(torch.float16)
                self.store[indices[j]] = (h, fresh.targets[offset : offset + n])
                offset += n
        hidden = torch.cat([self.store[i][0] for i in indices]).float()
        targets = torch.cat([self.store[i][1] for i in indices])
        logits = F.linear(hidden, base_head(self.model).weight)
        counts = [self.store[i][1].shape[0] for i in indices]
        return FrozenOutputs(hidden=hidden, logits=logits, targets=targets, counts=counts)


def _batch_loss(
    model,
    trainer_head,
    head,
    batch: list[Example],
    config,
    unigram,
    pad,
    epoch,
    bi,
    dense,
    cache=None,
    idx=None,
):
    """(loss, trained tokens) of one batch: the frozen pass (or the cache), then the head step."""
    if cache is not None:
        frozen = cache.frozen(idx, batch, pad)
    else:
        frozen = frozen_pass(model, [e.ids for e in batch], [e.start for e in batch], pad)
    return _head_step(trainer_head, head, frozen, config, unigram, epoch, bi, dense), frozen.targets.shape[0]


def _negatives(frozen, config, unigram, generator, mode: str, top_p: float = 0.0):
    """(negatives, valid) for one batch's frozen outputs; dominant sets only when the mode excludes them."""
    sets = None
    if mode == "dominant":
        logp = torch.log_softmax(frozen.logits.float(), -1)  # (N, V)
        sets = dominant_tokens(logp, p_jump=config.p_jump, epsilon=config.epsilon, mode=config.dominant_mode)
    return sample_negatives(
        frozen.logits,
        frozen.targets,
        k=config.num_negatives,
        mode=mode,
        sets=sets,
        unigram=unigram,
        unigram_share=config.unigram_share,
        temperature=config.softmax_temperature,
        generator=generator,
        exclude_top_p=top_p,
    )


def _offset(frozen, config) -> torch.Tensor:
    """(N,) per-position offset of the head's logit: 0, or minus the LM's log-sum-exp."""
    if config.head_offset == "log_softmax":
        return -torch.logsumexp(frozen.logits.float(), dim=-1)
    return torch.zeros(frozen.targets.shape[0])


def _head_step(trainer_head, head, frozen, config, unigram, epoch, bi, dense) -> torch.Tensor:
    """The loss on one batch's frozen outputs: dominant sets, negatives, BCE (or full-vocabulary BCE)."""
    hidden = frozen.hidden.float()  # (N, H)
    offset = _offset(frozen, config)
    if dense:
        return full_vocab_loss(head.weight, hidden, frozen.targets, offset)
    generator = _generator(config.seed, epoch + 1, bi + 1)
    negatives, valid = _negatives(frozen, config, unigram, generator, config.negatives, config.negative_top_p)
    loss, _ = sigmoid_head_loss(trainer_head, hidden, frozen.targets, negatives, valid, offset)
    return loss
