"""What a training run writes: its checkpoint, its log, and the adapter's card.

A checkpoint is one safetensors file, `checkpoint.safetensors`: the head, the best head so far and
the optimizer's moments as tensors; the loop state, the optimizer's scalars and the recipe as JSON
in its metadata. It is written to a temporary file and renamed over the last one, so there is never
a moment without a complete checkpoint on disk.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import atomic_path, write_atomic

CHECKPOINT = "checkpoint.safetensors"
LOG = "training_log.jsonl"
STATE = "trainer_state.json"
CARD = "README.md"


@dataclass
class LoopState:
    """Where a run stands: enough, with the head and the optimizer, to resume it exactly."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    tokens: int = 0
    best_dev: float = math.inf
    bad_evals: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)


def check_output_dir(out: Path, recipe: dict, resume: bool, overwrite: bool) -> Path:
    """Refuses, before any model loads, to clobber an adapter or checkpoint unless asked, to write
    into a folder holding files a run did not write (a user's README) unless asked, to resume from
    no checkpoint, a damaged one or one made with other settings (`recipe`), and an output folder
    that cannot be written."""
    from ..files import check_writable

    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} is a file; give a folder for the adapter (new or empty)")
    has_adapter = (out / "adapter_config.json").is_file()
    has_checkpoint = (out / CHECKPOINT).is_file()
    if resume:
        if not has_checkpoint:
            raise ValueError(f"`resume` was asked but {str(out)!r} holds no checkpoint to resume from")
        saved = check_checkpoint(out)["recipe"]
        changed = sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))
        if changed:
            raise ValueError(f"the checkpoint in {str(out)!r} was made with other settings: {changed}")
    elif (has_adapter or has_checkpoint) and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds an adapter or a checkpoint; pass `overwrite=True` (--overwrite) to "
            "replace it, or `resume=True` (--resume) to continue its run"
        )
    elif not overwrite and out.is_dir():
        # a run's own leftovers (a log, snapshots, temporary files) may be written over; nothing else
        others = sorted(
            p.name for p in out.iterdir() if p.name not in (LOG, "snapshots") and p.name[0] != "."
        )
        if others:
            raise ValueError(
                f"{str(out)!r} holds files a training run did not write ({', '.join(others[:4])}); give a "
                "new or empty folder, or pass `overwrite=True` (--overwrite) to write the adapter, its card "
                f"({CARD}) and its log there"
            )
    check_writable(out, f"output_dir {str(out)!r}:")
    return out


#: Files beside an adapter that describe that head (what `compare` and the benches write there):
#: removed when a run replaces the head.
HEAD_REPORTS = "evaluation.*"


def finish_output_dir(out: Path) -> None:
    """Once a run's adapter is in place: the checkpoint goes, and so do the reports of the head the
    new one replaced."""
    for path in out.glob(HEAD_REPORTS):
        path.unlink()
    (out / CHECKPOINT).unlink(missing_ok=True)


def check_checkpoint(out: Path) -> dict:
    """The checkpoint's metadata, once its file is known whole and readable; a truncated or damaged
    one is refused in one line (before any model loads)."""
    import struct

    from safetensors import SafetensorError

    from ..models import _expected_size

    path = out / CHECKPOINT
    try:
        meta = read_checkpoint_meta(out)
        if os.path.getsize(path) < _expected_size(path):
            raise ValueError("the file is shorter than its header says")
        missing = [k for k in ("recipe", "state", "optimizer_scalars") if k not in meta]
        if missing:
            raise ValueError(f"its metadata lacks {missing}")
    except (SafetensorError, ValueError, KeyError, OSError, struct.error) as err:
        raise ValueError(
            f"the checkpoint {str(path)!r} is truncated or damaged ({err}); it cannot be resumed from: start "
            "the run again with --overwrite in place of --resume"
        ) from None
    return meta


def read_checkpoint_meta(out: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(out / CHECKPOINT), framework="pt") as f:
        meta = f.metadata()
    return {k: json.loads(v) for k, v in meta.items() if k != "format"}


def save_checkpoint(out: Path, head: torch.Tensor, best_head: torch.Tensor, optimizer, meta: dict) -> None:
    """Head, best head and optimizer moments, with `meta` (the loop state and the recipe), in one
    file written atomically."""
    from safetensors.torch import save_file

    tensors = {"head": head.detach().cpu().contiguous(), "best_head": best_head.cpu().contiguous()}
    scalars = {}
    for key, value in optimizer.state_dict()["state"].get(0, {}).items():
        if torch.is_tensor(value) and value.dim() > 0:
            tensors[f"opt.{key}"] = value.cpu().contiguous()
        else:
            scalars[key] = float(value)
    metadata = {k: json.dumps(v) for k, v in {**meta, "optimizer_scalars": scalars}.items()}
    with atomic_path(out / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})


def load_checkpoint(out: Path, head: torch.Tensor, optimizer) -> tuple[LoopState, torch.Tensor]:
    """Restores the head and the optimizer in place; returns the loop state and the best head."""
    from safetensors.torch import load_file

    tensors = load_file(str(out / CHECKPOINT))
    meta = read_checkpoint_meta(out)
    with torch.no_grad():
        head.copy_(tensors["head"])
    opt_state = {k.removeprefix("opt."): v for k, v in tensors.items() if k.startswith("opt.")}
    for key, value in meta["optimizer_scalars"].items():
        opt_state[key] = (
            torch.tensor(value) if key == "step" and isinstance(optimizer, torch.optim.Adam) else value
        )
    if opt_state:
        state_dict = optimizer.state_dict()
        state_dict["state"] = {0: opt_state}
        optimizer.load_state_dict(state_dict)
    return LoopState(**meta["state"]), tensors["best_head"].to(head.device)


def write_log(out: Path, history: list[dict]) -> None:
    """The run's evaluations so far, one JSON line each, rewritten whole: the log of a fresh run
    starts empty (never after an older run's lines), and a resumed run's is its checkpoint's."""
    write_atomic(out / LOG, "".join(json.dumps(entry) + "\n" for entry in history))


def write_state(out: Path, info: dict, state: LoopState) -> None:
    write_atomic(out / STATE, json.dumps({**info, "history": state.history}, indent=1))


def write_card(out: Path, recipe: dict, base_name: str, info: dict) -> None:
    """The adapter's model card: data, tokens, time, dev metrics before and after, every setting."""
    before, after = info["dev_before"], info["dev_after"]
    shown = ("dev_bce", "dev_auroc", "dev_mean_sigmoid_reference")
    shown += tuple(k for k in ("dev_ranking", "dev_loss", "dev_error_auroc") if k in before)
    rows = "\n".join(f"| {k} | {before[k]:.4f} | {after[k]:.4f} |" for k in shown)
    chosen = "dev loss (BCE plus the weighted ranking loss)" if "dev_loss" in before else "dev BCE"
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in recipe.items())
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

- Data: {data} (dev held out by seed {recipe["seed"]})
- Trained response tokens: {info["tokens"]:,} ({info["steps"]} steps, {info["epochs_run"]} epoch(s){stopped})
- Wall time: {info["wall_time_s"] / 60:.1f} min on {info["device"]} ({info["world"]} process(es))
- Weights stored as {info["storage_dtype"]}; the head computes in float32.

## Dev metrics (before = the untrained copy of the LM head; after = the best head by {chosen})

| metric | before | after |
|---|---|---|
{rows}

`dev_bce`: binary cross-entropy over each dev position's reference and its sampled negatives
(dominant tokens excluded; with error spans, an error's reference is its negative). `dev_auroc`:
how well the head's logit separates references from those negatives. Neither measures quality
estimation on model outputs; see the evaluation tasks.

## Settings

| setting | value |
|---|---|
{settings}
"""
    if info.get("recipe_command"):
        card += f"\n## Reproduce\n\n```bash\n{info['recipe_command']}\n```\n"
    write_atomic(out / CARD, card)
