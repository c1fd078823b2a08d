"""`sighead-eval curves`: many heads scored on one frozen pass: quality against tokens trained.

The frozen model's hidden states and log-sum-exps on a run's saved task outputs do not depend on
the head. This pass computes them once per output, over one half of the saved samples. Each head,
a trained adapter or each snapshot a `train --snapshots` run kept, then costs one dot product per
token: `sigmoid(h . w_y + offset)`, then the usual aggregations, and the same times the token's
ceiling (the `hybrid`, whose ceiling the frozen pass computes once). The softmax and BoostedProb rows are
the saved run's own (the same outputs and the same frozen model). Each task reports its macro
ROC-AUC and PRR over question types, as `compare` does (`protocol.per_type`).

Writes `curves.json`, `curves.md` and `curves.png`: for each task, the best head aggregation of
each run against the tokens it was trained on, with the rivals as flat lines.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .estimators import HEAD_CONFIDENCES, HYBRID_CONFIDENCES, RIVAL_CONFIDENCES, aggregate
from .files import check_output_dir, write_atomic
from .protocol import METRICS, TaskSamples, per_type, subset
from .report.samples import task_samples
from .runs import saved_records

SNAPSHOT = re.compile(r"tokens-(\d+)$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Head:
    run: str  # the run directory's name
    tokens: int | None  # tokens trained (None: the run's final adapter)
    path: Path


def find_heads(runs: list[str]) -> list[Head]:
    """Every head of each run directory: its snapshots (`snapshots/tokens-N`) and its final adapter,
    or the directory itself when it is one adapter."""
    heads = []
    for run in runs:
        root = Path(run)
        if not root.is_dir():
            raise FileNotFoundError(f"head {run!r}: no such directory (give adapter or run directories)")
        snaps = sorted((root / "snapshots").glob("tokens-*")) if (root / "snapshots").is_dir() else []
        for snap in snaps:
            if (snap / ADAPTER_WEIGHTS).exists():
                heads.append(Head(root.name, int(SNAPSHOT.search(snap.name).group(1)), snap))
        if (root / ADAPTER_WEIGHTS).exists():
            state = root / "trainer_state.json"
            tokens = json.loads(state.read_text()).get("tokens") if state.exists() else None
            heads.append(Head(root.name, None if snaps else tokens, root))
        elif not snaps:
            raise FileNotFoundError(f"{run!r} holds neither {ADAPTER_WEIGHTS} nor snapshots/tokens-*/")
    return heads


def load_head(path: Path, lm_head: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(weight (V, H) float32, offset mode) of one adapter directory (full or compact), checked
    against the model's output layer `lm_head`."""
    from safetensors.torch import load_file

    from .adapter import compact

    config = json.loads((path / "adapter_config.json").read_text())
    tensors = {k.rpartition(".")[2]: v for k, v in load_file(str(path / ADAPTER_WEIGHTS)).items()}
    if compact.VOCAB in tensors:
        weight = compact.expand(tensors, lm_head, lm_head.float())  # `like`: its shape, dtype, device
    else:
        weight = tensors["weight"].float()
        if tuple(weight.shape) != tuple(lm_head.shape):
            raise ValueError(
                f"head {str(path)!r} is {tuple(weight.shape)}, the model's output layer is "
                f"{tuple(lm_head.shape)}"
            )
    return weight, config.get("offset", "none")


@dataclass
class FrozenOutputsOf:
    """One task half's frozen pass: per output, the head inputs and the scored tokens."""

    samples: TaskSamples
    hidden: list[torch.Tensor]  # per output, (n_i, H)
    targets: list[torch.Tensor]  # per output, (n_i,)
    log_normalizers: list[torch.Tensor]  # per output, (n_i,)
    ceilings: list[torch.Tensor]  # per output, (n_i,): the ceiling's log score of each token


@torch.no_grad()
def frozen_outputs(saved: dict, name: str, split: str, model, tokenizer, batch_size: int = 8):
    from .frozen import frozen_pass
    from .scoring import ScoringOptions, encode_records, padding_id, token_scores

    every = task_samples(name, saved["samples"][name])
    keep = [split == "all" or d.get("split") == split for d in every.docs]
    records = [r for r, k in zip(saved_records(saved, name, model, tokenizer), keep) if k]
    items = encode_records(
        model, tokenizer, records, ScoringOptions(chat_template=False, truncation="left"), need_response=True
    )
    pad = padding_id(model, tokenizer)
    hidden, targets, lse, ceilings = [], [], [], []
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        out = frozen_pass(
            model, [b.prompt_ids + b.response_ids for b in batch], [len(b.prompt_ids) for b in batch], pad
        )
        norm = torch.logsumexp(out.logits.float(), -1)
        ceiling = token_scores(out.logits, out.targets)["ceiling"]
        for part in zip(
            out.hidden.float().split(out.counts),
            out.targets.split(out.counts),
            norm.split(out.counts),
            ceiling.split(out.counts),
        ):
            hidden.append(part[0])
            targets.append(part[1])
            lse.append(part[2])
            ceilings.append(part[3])
    return FrozenOutputsOf(subset(every, split), hidden, targets, lse, ceilings)


def head_confidences(frozen: FrozenOutputsOf, weight: torch.Tensor, offset: str) -> dict[str, np.ndarray]:
    """`sigmoid_{aggregation}` and `hybrid_{aggregation}` of every output under one head."""
    rows: dict[str, list[float]] = {}
    for h, y, lse, ceiling in zip(frozen.hidden, frozen.targets, frozen.log_normalizers, frozen.ceilings):
        z = (weight.index_select(0, y) * h).sum(-1)
        if offset == "log_softmax":
            z = z - lse
        log_sigmoid = torch.nn.functional.logsigmoid(z)
        for name, logs in (("sigmoid", log_sigmoid), ("hybrid", log_sigmoid + ceiling)):
            for agg, value in aggregate(logs.double().numpy()).items():
                rows.setdefault(f"{name}_{agg}", []).append(value)
    return {k: np.asarray(v) for k, v in rows.items()}


def macro(ts: TaskSamples, estimators) -> dict[str, dict[str, float]]:
    return {m: {e: per_type(ts, e, m)["macro"] for e in estimators if e in ts.confidence} for m in METRICS}


def run_curves(
    outputs: str,
    runs: list[str],
    split: str = "dev",
    tasks: list[str] | None = None,
    model: str | None = None,
    output: str | None = None,
    batch_size: int = 8,
) -> dict:
    """Scores every head of `runs` on the `split` half of the saved `outputs`; writes and returns
    the curves (see the module docstring)."""
    from .models import ModelOptions

    if split not in ("dev", "test", "all"):
        raise ValueError(f"--split should be dev, test or all, got {split!r}")
    path = Path(outputs)
    if not path.is_file():
        raise FileNotFoundError(
            f"--outputs {outputs!r} does not exist; pass an lm_eval_results.json of a run"
        )
    saved = json.loads(path.read_text())
    names = tasks or sorted(saved.get("samples", {}))
    missing = [t for t in names if t not in saved.get("samples", {})]
    if missing:
        raise ValueError(
            f"{outputs} holds no samples of {missing}; it has {sorted(saved.get('samples', {}))}"
        )
    heads = find_heads(runs)
    out_dir = check_output_dir(output or f"results/curves/{split}")
    started = time.time()
    lm, tokenizer = ModelOptions(model=model).load()
    out_layer = lm.get_output_embeddings().weight
    from .adapter.io import adapter_head_shape

    for head in heads:  # a head that does not fit fails here, before the frozen pass
        if adapter_head_shape(head.path) != tuple(out_layer.shape):
            raise ValueError(
                f"head {str(head.path)!r} is {adapter_head_shape(head.path)}, the model's output layer is "
                f"{tuple(out_layer.shape)}"
            )
    report = {"outputs": str(path), "split": split, "model": model or "default", "tasks": {}}
    # One frozen pass a task, kept; then each head is read once and scores every task.
    frozen = {name: frozen_outputs(saved, name, split, lm, tokenizer, batch_size) for name in names}
    rival = {"run": "(rivals: the saved run's)", "tokens": None}
    rows = {name: [{**rival, **macro(f.samples, RIVAL_CONFIDENCES)}] for name, f in frozen.items()}
    for head in heads:
        weight, offset = load_head(head.path, out_layer)
        for name, f in frozen.items():
            ts = f.samples
            scored = TaskSamples(ts.task, ts.docs, ts.quality, head_confidences(f, weight, offset), [])
            rows[name].append(
                {
                    "run": head.run,
                    "tokens": head.tokens,
                    "path": str(head.path),
                    **macro(scored, HEAD_CONFIDENCES + HYBRID_CONFIDENCES),
                }
            )
    for name, f in frozen.items():
        report["tasks"][name] = {"n": int(f.samples.quality.size), "rows": rows[name]}
    report["seconds"] = round(time.time() - started, 1)
    write_atomic(out_dir / "curves.json", json.dumps(report, indent=1))
    write_atomic(out_dir / "curves.md", markdown(report))
    plot(report, out_dir / "curves.png")
    print(markdown(report))
    print(f"wrote {out_dir}/curves.md, curves.json, curves.png")
    return report


def best(values: dict[str, float], names) -> tuple[str | None, float]:
    scored = [(v, k) for k, v in values.items() if k in names and not math.isnan(v)]
    return (max(scored)[1], max(scored)[0]) if scored else (None, math.nan)


def markdown(report: dict) -> str:
    lines = [f"# Head curves on the {report['split']} halves", ""]
    lines.append(
        "Macro over question types. Each head row: its best aggregation by ROC-AUC (PRR of the same "
        "aggregation), and its best hybrid (the head times its ceiling); the rival row: the best "
        "softmax, BoostedProb or entropy aggregation."
    )
    for name, task in report["tasks"].items():
        lines += [
            "",
            f"## {name} ({task['n']} outputs)",
            "",
            "| run | tokens | best | ROC-AUC | PRR | best hybrid | ROC-AUC | PRR |",
            "|---|---:|---|---:|---:|---|---:|---:|",
        ]
        for row in task["rows"]:
            pool = (
                RIVAL_CONFIDENCES
                if row["tokens"] is None and row["run"].startswith("(")
                else HEAD_CONFIDENCES
            )
            est, auc = best(row["auroc"], pool)
            prr = row["prr"].get(est, math.nan) if est else math.nan
            tokens = "" if row["tokens"] is None else f"{row['tokens']:,}"
            cells = [row["run"], tokens, str(est), f"{auc:.3f}", f"{prr:.3f}"]
            if pool is HEAD_CONFIDENCES:
                h_est, h_auc = best(row["auroc"], HYBRID_CONFIDENCES)
                h_prr = row["prr"].get(h_est, math.nan) if h_est else math.nan
                cells += [str(h_est), f"{h_auc:.3f}", f"{h_prr:.3f}"]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["tasks"])
    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 6.5), squeeze=False)
    for col, name in enumerate(names):
        rows = report["tasks"][name]["rows"]
        rival = rows[0]
        for r, metric in enumerate(METRICS):
            ax = axes[r][col]
            by_run: dict[str, list[tuple[int, float]]] = {}
            for row in rows[1:]:
                if row["tokens"] is not None:
                    est, _ = best(row["auroc"], HEAD_CONFIDENCES)
                    by_run.setdefault(row["run"], []).append((row["tokens"], row[metric][est]))
            for run, points in by_run.items():
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=run)
            for est, style in (("softmax_prod", "--"), ("boostedprob_prod", ":")):
                if est in rival[metric]:
                    ax.axhline(rival[metric][est], color="k", ls=style, lw=1, label=est)
            ax.set_title(f"{name.removeprefix('sighead_')}: {metric}", fontsize=9)
            ax.set_xlabel("tokens trained", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"Best head aggregation against tokens trained ({report['split']} halves)", fontsize=10)
    fig.tight_layout()
    from .files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
