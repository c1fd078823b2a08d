"""Training a Sigmoid Head on a frozen model (the paper's procedure, with its defaults).

Per batch: frozen pass (hidden states, logits at response positions) -> dominant sets ->
negatives -> BCE on the positive and sampled pairs -> a sparse step that touches only the rows
looked up. Only the head is trained; the base model runs without gradients.

Reproducible and resumable: data order and negatives depend only on (seed, epoch, batch), so a
run resumed from its last checkpoint ends with the same adapter as an uninterrupted one.
Checkpoints (head, optimizer moments, early-stopping state) are one safetensors file, written
atomically (`checkpoint.py`). Data-parallel under `accelerate launch` or
`torchrun`: each process takes every `world`-th batch of an optimizer step and the sparse
gradients are averaged (DDP, gloo on CPU).
With `cache_hidden`, one frozen pass keeps what every epoch needs, its negatives included, and
epochs run over that cache without the model (`cache.py`).

Recipes tried and their figures are in the shipped adapter's card and docs/research.md, not here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..files import staged_dir
from ..frozen import frozen_pass
from . import checkpoint as ckpt
from .config import AUTO_EVAL_MAX, AUTO_EVALS_PER_EPOCH, RECIPES, TrainConfig
from .data import Example, check_error_rows, encode_examples, error_flags, load_records, split_dev
from .dev import DevSet
from .loss import full_vocab_loss, ranking_loss, sigmoid_head_loss
from .negatives import _generator, dominant_pairs, dominant_sets, draw_negatives, unigram_distribution

__all__ = ["RECIPES", "DevSet", "TrainConfig", "Trainer", "TrainingError", "TrainingInterrupted", "train"]


def _selected(entry: dict) -> float:
    """What early stopping and the best head go by: the dev objective the run trains (`dev_loss`, the
    BCE plus the weighted ranking loss, where the ranking loss is on; else the dev BCE)."""
    return entry.get("dev_loss", entry["dev_bce"])


class TrainingError(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run (a `KeyboardInterrupt`); its message says what was kept and how to go on."""


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world, device) under `accelerate launch` or `torchrun`. accelerate sets up the process
    group: NCCL with each process on its own GPU (`cuda:LOCAL_RANK`), gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    return state.process_index, state.num_processes, state.device if device.type != "cpu" else device


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class Trainer:
    """One training run: the frozen model with its head, the data, the optimizer and the loop state.

    `Trainer(config, ...).train()` trains and writes the adapter; `train()` below does just that.
    """

    def __init__(self, config: TrainConfig, model=None, tokenizer=None, records=None, progress: bool = True):
        self.config = config
        self.progress = progress
        self.records = records
        from ..models import resolve_device

        requested = resolve_device(config.device)
        # 'auto' spreads the frozen model over the GPUs (device_map='auto'); the head follows the
        # output layer, whose device is known once the model is loaded.
        self.device = torch.device("cuda" if requested == "auto" else requested)
        self.rank, self.world, self.device = _distributed(self.device)
        if requested == "auto" and self.world > 1:
            raise ValueError("device 'auto' (one model over several GPUs) runs in one process, not under DDP")
        self.out = ckpt.check_output_dir(
            Path(config.output_dir), config.settings(), config.resume, config.overwrite
        )
        torch.manual_seed(config.seed)
        self._load(model, tokenizer, records)
        self._attach_head()
        self.state = ckpt.LoopState()
        self.best_head: torch.Tensor | None = None
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, once one is
        self.bar = None  # the progress bar, while training
        self.cache = None  # the cached frozen pass, built when training starts (`build_cache`)

    # -- setting up ------------------------------------------------------------------------------
    def _load(self, model, tokenizer, records) -> None:
        from ..models import load_model, resolve_device
        from ..scoring import padding_id

        config = self.config
        rows = load_records(records if records is not None else config.data, config.data_split)
        dev_rows = load_records(config.dev_data, config.data_split) if config.dev_data is not None else None
        if config.error_spans:  # before the model loads: a bad span is one line, at once
            check_error_rows(rows)
            check_error_rows(dev_rows or [])
        if model is None:
            auto = resolve_device(config.device) == "auto"
            model, tokenizer = load_model(
                config.model, dtype=config.dtype, device="auto" if auto else str(self.device)
            )
            if auto:
                self.device = model.get_output_embeddings().weight.device
        else:
            model = model.to(device=self.device, dtype=getattr(torch, config.dtype))
        model.eval().requires_grad_(False)
        self.base_name = getattr(model.config, "name_or_path", None) or config.model or "model"
        encode = dict(
            max_length=config.max_length,
            chat_template=config.chat_template,
            train_turns=config.train_turns,
            with_errors=config.error_spans,
        )
        examples = encode_examples(model, tokenizer, rows, **encode)
        if config.max_examples is not None:
            examples = examples[: config.max_examples]
        if config.dev_data is None:
            self.train_set, self.dev_examples = split_dev(
                examples, config.dev_fraction, config.dev_max, config.seed
            )
        else:
            self.train_set = examples
            dev = encode_examples(model, tokenizer, dev_rows, **encode)
            self.dev_examples = dev[: config.dev_max] if config.dev_max is not None else dev
        self.model, self.tokenizer = model, tokenizer
        self.pad = padding_id(model, tokenizer)

    def _attach_head(self) -> None:
        from peft import get_peft_model

        from ..adapter import SigmoidHeadConfig

        config = self.config
        head_config = SigmoidHeadConfig(init_from_lm_head=config.init_from_lm_head, offset=config.offset)
        self.peft_model = get_peft_model(self.model, head_config)
        self.model = self.peft_model
        self.layer = self.peft_model.get_base_model().get_output_embeddings()
        self.head = self.layer.sigmoid_head_embedding["default"]  # nn.Embedding(V, H, sparse=True), fp32
        vocab = self.head.weight.shape[0]
        targets = (e.targets for e in self.train_set)
        self.unigram = unigram_distribution(targets, vocab, self.tokenizer.pad_token_id)
        self.cache_epochs = None  # epochs a cache directory's negatives cover
        if config.cache_dir:
            from .cache import cache_key, claim

            self.cache_epochs = claim(Path(config.cache_dir), cache_key(self), config.epochs, self.rank)
            if self.world > 1:
                import torch.distributed as dist

                dist.barrier()
        self.dev = DevSet(self, self.dev_examples)
        self.dense = config.negatives == "full"
        optimizer = torch.optim.Adam if self.dense else torch.optim.SparseAdam
        self.optimizer = optimizer([self.head.weight], lr=config.lr)
        if self.dense:
            self.head.sparse = False
        # Under DDP the rows are looked up through the wrapper, so that their gradients are averaged.
        self.rows = self.head
        if self.world > 1:
            self.rows = torch.nn.parallel.DistributedDataParallel(self.head)
        self.n_batches = math.ceil(len(self.train_set) / config.batch_size)
        steps_per_epoch = math.ceil(self.n_batches / config.grad_accum)
        self.total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
        self.eval_every = config.eval_every or min(
            AUTO_EVAL_MAX, max(1, math.ceil(steps_per_epoch / AUTO_EVALS_PER_EPOCH))
        )

    def frozen(self, batch: list[Example]):
        """The frozen pass over a batch of examples (their trained tokens), under the configured autocast."""
        autocast = nullcontext()
        if self.config.frozen_autocast:
            autocast = torch.autocast(self.device.type, dtype=getattr(torch, self.config.frozen_autocast))
        with autocast:
            return frozen_pass(
                self.model,
                [e.ids for e in batch],
                [e.start for e in batch],
                self.pad,
                [e.positions for e in batch],
            )

    def build_cache(self) -> None:
        """The frozen pass over the training examples, once (see `cache.py`); a no-op without
        `cache_hidden`/`cache_dir` or when it is built already."""
        from .cache import FrozenCache

        config = self.config
        if self.cache is None and config.cache_hidden:
            self.cache = FrozenCache(self, self.train_set, config.cache_dir, self.progress)

    def _start_or_resume(self) -> None:
        if self.config.resume:
            self.state, self.best_head = ckpt.load_checkpoint(self.out, self.head.weight, self.optimizer)
            self.checkpoint_step = self.state.step
            return
        # With `overwrite`, the previous adapter stays whole until the new one replaces it (`_finish`).
        self.out.mkdir(parents=True, exist_ok=True)
        first = {"step": 0, "epoch": 0, "tokens": 0, **self.dev.evaluate()}
        self.state.history.append(first)
        self.state.best_dev = _selected(first)
        self.best_head = self.head.weight.detach().clone()
        self._log(first)

    # -- the loop --------------------------------------------------------------------------------
    def train(self, recipe_command: str | None = None) -> dict:
        """Trains, writes the adapter, its card and its log to `output_dir`; returns the run info.
        `recipe_command`: the command line that reproduces the run, for the card. Interrupted
        (Ctrl-C), it raises `TrainingInterrupted`, saying what was kept and how to go on."""
        try:
            return self._train(recipe_command)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise TrainingInterrupted(self.interrupted()) from None
        finally:
            if self.bar is not None:
                self.bar.close()  # before any message about the stop

    def interrupted(self) -> str:
        """What an interruption now leaves, and how to go on, in one line."""
        state = self.state
        if self.checkpoint_step is not None:
            go_on = "add --resume to the same command to go on from it"
        else:
            go_on = "nothing to resume: run the same command again to start over"
        previous = (self.out / "adapter_config.json").is_file()
        return f"stopped at step {state.step} of {self.total_steps}; {self.kept()}: {go_on}" + (
            "; the previous adapter in the folder is untouched" if previous else ""
        )

    def _train(self, recipe_command: str | None) -> dict:
        from tqdm.auto import tqdm

        started = time.time()
        config = self.config
        self.build_cache()
        self._start_or_resume()
        state = self.state
        self.bar = bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="training",
            disable=not self.progress or self.rank != 0,
        )
        tick, tick_tokens = time.time(), 0
        done = state.stopped_early or state.step >= self.total_steps
        while not done and state.epoch < config.epochs:
            batches = self._epoch_batches(state.epoch)
            for group_start in range(state.next_batch, len(batches), config.grad_accum):
                group = list(range(group_start, min(group_start + config.grad_accum, len(batches))))
                step_loss, tokens = self._optimizer_step(batches, group)
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
                due = last_in_epoch or state.step >= self.total_steps
                due = due or state.step % self.eval_every == 0
                if due and self._evaluate_and_checkpoint(bar):
                    done = True
                done = done or state.step >= self.total_steps
                if done or last_in_epoch:
                    break
            else:  # no batch left in this epoch
                state.epoch, state.next_batch = state.epoch + 1, 0
        bar.close()
        return self._finish(started, recipe_command)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """A seeded shuffle; within each optimizer step's window, batches of similar length (less padding)."""
        config, train_set = self.config, self.train_set
        order = torch.randperm(len(train_set), generator=_generator(config.seed, epoch)).tolist()
        window = config.batch_size * config.grad_accum
        order = [
            i
            for w in range(0, len(order), window)
            for i in sorted(order[w : w + window], key=lambda j: (len(train_set[j].ids), j))
        ]
        return [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]

    def _optimizer_step(self, batches: list[list[int]], group: list[int]) -> tuple[float, int]:
        """One optimizer step over the batches in `group`; this process takes every `world`-th one."""
        state, world = self.state, self.world
        mine = [bi for i, bi in enumerate(group) if i % world == self.rank] or [None]
        step_loss, step_tokens = 0.0, 0
        for n, bi in enumerate(mine):
            sync = n == len(mine) - 1
            with self.rows.no_sync() if (world > 1 and not sync) else nullcontext():
                if bi is None:  # no batch for this process in a short last group: join the gradient sync
                    nothing = torch.zeros(1, dtype=torch.long, device=self.device)
                    loss, tokens = self.rows(nothing).sum() * 0.0, 0
                else:
                    loss, tokens = self._batch_loss(bi, batches[bi])
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"non-finite training loss ({loss.item()}) at step {state.step}, epoch "
                        f"{state.epoch}; {self.kept()}. Start again with a lower `lr` (--overwrite where a "
                        "checkpoint was kept: --resume keeps the checkpoint's settings, lr among them)"
                    )
                # Each process scales by world / group size; DDP averages over processes: the gradient
                # is the mean over the group's batches, as in one process.
                (loss * world / len(group)).backward()
            step_loss += loss.item() / len(mine)
            step_tokens += tokens
        for g in self.optimizer.param_groups:
            g["lr"] = self.config.lr * _cosine(state.step, self.total_steps)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if world > 1:
            import torch.distributed as dist

            count = torch.tensor([step_tokens], dtype=torch.long, device=self.device)
            dist.all_reduce(count)
            step_tokens = int(count.item())
        state.tokens += step_tokens
        return step_loss, step_tokens

    def _batch_loss(self, bi: int, indices: list[int]) -> tuple[torch.Tensor, int]:
        """(loss, trained tokens) of batch `bi`: the frozen pass (or the cache), then the head's loss."""
        if self.cache is not None:
            return self.cache.loss(indices, self.state.epoch, self.rows)
        batch = [self.train_set[i] for i in indices]
        frozen = self.frozen(batch)
        errors = error_flags(batch, frozen.targets.device)
        return self.head_loss(frozen, self.state.epoch, bi, errors), frozen.targets.shape[0]

    def head_loss(self, frozen, epoch: int, bi: int, errors=None) -> torch.Tensor:
        """The loss on one batch's frozen outputs: dominant sets, negatives, BCE (or, for the `full`
        ablation, BCE over the whole vocabulary). Negatives depend only on (seed, epoch, batch).
        `errors`: (N,) bool, the positions inside error spans (`error_flags`), or None."""
        config = self.config
        hidden = frozen.hidden.float()  # (N, H)
        if self.dense:
            logits = self.layer.head_logits(hidden, None, base_logits=frozen.logits)  # (N, V)
            return full_vocab_loss(logits, frozen.targets)
        generator = _generator(config.seed, epoch + 1, bi + 1, device=frozen.logits.device)
        sets = dominant_sets(frozen, config) if config.ranking or config.negatives == "dominant" else None
        negatives, valid = draw_negatives(
            frozen, config, self.unigram, generator, config.negatives, config.negative_top_p, sets=sets
        )
        pairs = dominant_pairs(sets, frozen.targets) if config.ranking else None
        return self.pair_loss(
            hidden, frozen.targets, negatives, valid, pairs, errors=errors, base_logits=frozen.logits
        )

    def pair_loss(
        self, hidden, targets, negatives, valid, pairs=None, rows=None, errors=None, **offset
    ) -> torch.Tensor:
        """BCE over the reference and its negatives, plus, with `pairs` (the dominant tokens other
        than the reference, `dominant_pairs`), the ranking loss: one head lookup for all of them.
        `errors`: the positions inside error spans, where the reference is the one negative
        (`sigmoid_head_loss`) and nothing is ranked. `offset`: `base_logits=` or `offset=`, as
        `head_logits` takes them."""
        config = self.config
        if errors is not None and pairs is not None:
            pairs = (pairs[0], pairs[1] & ~errors.unsqueeze(1))
        parts = [targets.unsqueeze(1), negatives] + ([pairs[0]] if pairs is not None else [])
        logits = self.layer.head_logits(
            hidden, torch.cat(parts, dim=1), rows=self.rows if rows is None else rows, **offset
        )  # (N, 1+K[+D])
        k = negatives.shape[1]
        loss = sigmoid_head_loss(logits[:, : 1 + k], valid, errors, config.error_span_weight)
        if pairs is not None:
            ranked = ranking_loss(logits[:, 0], logits[:, 1 + k :], pairs[1], config.ranking_loss_margin)
            loss = loss + config.ranking_loss_weight * ranked
        return loss

    def _log(self, entry: dict) -> None:
        if self.rank == 0:
            ckpt.write_log(self.out, self.state.history)
            if self.config.snapshots:
                from ..models import save_adapter

                self.peft_model.peft_config["default"].base_model_name_or_path = self.base_name
                snapshot = self.out / "snapshots" / f"tokens-{entry['tokens']:010d}"
                save_adapter(self.peft_model, snapshot, storage=self.config.storage)

    def _evaluate_and_checkpoint(self, bar) -> bool:
        """Evaluates on dev, keeps the best head, checkpoints; True when early stopping says stop."""
        state = self.state
        entry = {"step": state.step, "epoch": state.epoch, "tokens": state.tokens, **self.dev.evaluate()}
        state.history.append(entry)
        self._log(entry)
        if _selected(entry) < state.best_dev:
            state.best_dev, state.bad_evals = _selected(entry), 0
            self.best_head = self.head.weight.detach().clone()
        else:
            state.bad_evals += 1
        state.stopped_early = state.bad_evals >= self.config.patience
        if self.rank == 0:
            meta = {"state": dataclasses.asdict(state), "recipe": self.config.settings()}
            ckpt.save_checkpoint(self.out, self.head.weight, self.best_head, self.optimizer, meta)
            self.checkpoint_step = state.step
            if self.progress:
                bar.write(
                    f"step {state.step}: dev BCE {entry['dev_bce']:.4f}, dev AUROC {entry['dev_auroc']:.4f}"
                    + (f", dev loss {entry['dev_loss']:.4f}" if "dev_loss" in entry else "")
                    + (" (early stop)" if state.stopped_early else "")
                )
        return state.stopped_early

    def kept(self) -> str:
        """What a run stopped now leaves to go on from, in words."""
        if self.checkpoint_step is not None:
            where = str(self.out / ckpt.CHECKPOINT)
            return f"the checkpoint of step {self.checkpoint_step} is kept in {where!r}"
        return (
            "no checkpoint was written yet (the first comes with the first evaluation, at step "
            f"{self.eval_every} or the end of the first epoch)"
        )

    def _finish(self, started: float, recipe_command: str | None) -> dict:
        from ..models import save_adapter

        config, state = self.config, self.state
        with torch.no_grad():
            self.head.weight.copy_(self.best_head)
        info = {
            "data": config.data if self.records is None else "records given in code",
            "n_train": len(self.train_set),
            "n_dev": len(self.dev_examples),
            "tokens": state.tokens,
            "steps": state.step,
            "epochs_run": round(state.epoch + state.next_batch / max(self.n_batches, 1), 2),
            "stopped_early": state.stopped_early,
            "wall_time_s": time.time() - started,
            "device": str(next(self.peft_model.parameters()).device),
            "world": self.world,
            "storage_dtype": config.storage_dtype,
            "dev_before": state.history[0],
            "dev_after": self.dev.evaluate(),
            "recipe_command": recipe_command,
        }
        if self.rank == 0:
            self.peft_model.peft_config["default"].base_model_name_or_path = self.base_name
            storage = None if config.storage_dtype == "float32" else config.storage_dtype
            with staged_dir(self.out) as tmp:  # written beside, then renamed over the previous adapter
                save_adapter(self.peft_model, tmp, storage_dtype=storage, storage=config.storage)
                ckpt.write_card(tmp, config.settings(), self.base_name, info)
                ckpt.write_state(tmp, info, state)
            ckpt.finish_output_dir(self.out)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return info


def train(
    config: TrainConfig,
    model=None,
    tokenizer=None,
    records=None,
    progress: bool = True,
    recipe_command: str | None = None,
) -> dict:
    """Trains a Sigmoid Head and writes the adapter + card to `config.output_dir`; returns the run info.

    `model`/`tokenizer` default to loading `config.model`; `records` to loading `config.data`;
    `recipe_command` is the command line that reproduces the run, written into the card.
    """
    return Trainer(config, model, tokenizer, records, progress).train(recipe_command)
