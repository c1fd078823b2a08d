"""PNG plots of a run (matplotlib, headless): rejection curves, reliability diagrams, a bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics as core
from ..estimators import colours, split_confidence
from ..files import atomic_path
from .samples import TaskSamples

#: Each estimator's colour (from the registry), the entropy's and the length's.
FAMILY_COLOURS = colours()
STYLES = {"mean": "-", "prod": "--", "min": ":", "max": "-."}
FAMILIES = tuple(FAMILY_COLOURS)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Writes beside the target and renames: an interrupted run never leaves half a PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def family(estimator: str) -> tuple[str, str]:
    """`sigmoid_mean` -> (`sigmoid`, `mean`); `length` -> (`length`, ``)."""
    return split_confidence(estimator)


def rejection_figure(ts: TaskSamples):
    """Mean quality of the outputs kept against the share rejected, for every estimator; the legend
    beside the axes, off the curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 5))
    q = ts.quality
    rates = np.arange(q.size) / q.size
    for est in ts.estimators:
        fam, agg = family(est)
        curve = core.rejection_curve(ts.confidence[est], q)
        ax.plot(rates, curve["estimator"], STYLES.get(agg, "-"), color=FAMILY_COLOURS[fam], lw=1.4, label=est)
    oracle = core.rejection_curve(q, q)
    ax.plot(rates, oracle["estimator"], color="black", lw=1, label="oracle")
    ax.axhline(q.mean(), color="#bbbbbb", ls="--", lw=1, label="random")
    ax.set_xlabel("share of outputs rejected (least confident first)")
    ax.set_ylabel("accuracy of the outputs kept" if ts.binary else "mean human score of the outputs kept")
    ax.set_title(f"{ts.task}: rejection curves ({q.size} samples)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def rejection_plot(ts: TaskSamples, path: Path) -> Path:
    return _write(rejection_figure(ts), path)


def reliability_figure(ts: TaskSamples, bins: int = 10):
    """Reliability diagrams of the raw Sigmoid Head and softmax scores: accuracy per confidence bin,
    before any calibration (a product or minimum of token probabilities is not calibrated). Each
    legend sits below its axes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8), sharey=True)
    for ax, fam, title in zip(axes, ("sigmoid", "softmax"), ("Sigmoid Head", "softmax probability")):
        ax.plot([0, 1], [0, 1], color="#bbbbbb", ls="--", lw=1, label="perfect calibration")
        drawn = False
        for agg in ("mean", "prod", "min"):
            est = f"{fam}_{agg}"
            if est not in ts.confidence or not ts.binary:
                continue
            rel = core.reliability(ts.confidence[est], ts.quality, bins=bins)
            x = np.array(rel["bin_confidence"], dtype=float)
            y = np.array(rel["bin_accuracy"], dtype=float)
            keep = ~np.isnan(x)
            ece = core.ece(ts.confidence[est], ts.quality)
            ax.plot(
                x[keep],
                y[keep],
                STYLES[agg],
                marker="o",
                color=FAMILY_COLOURS[fam],
                label=f"{agg} (raw ECE {ece:.3f})",
            )
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("raw confidence (uncalibrated)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle(f"{ts.task}: reliability of the raw scores ({ts.quality.size} samples)")
    return fig


def reliability_plot(ts: TaskSamples, path: Path, bins: int = 10) -> Path:
    return _write(reliability_figure(ts, bins), path)


def _write(fig, path: Path) -> Path:
    out = _save(fig, path)
    _pyplot().close(fig)
    return out


def best_by_family(results: dict, task: str, metric: str) -> dict[str, tuple[str, float]]:
    """For each estimator family, its best aggregation on `metric`: `{family: (estimator, value)}`."""
    out: dict[str, tuple[str, float]] = {}
    for key, value in results[task].items():
        name, _, est = key.partition(",")
        if name != metric or not isinstance(value, (int, float)) or np.isnan(value):
            continue
        fam, _ = family(est)
        if fam in FAMILY_COLOURS and (fam not in out or value > out[fam][1]):
            out[fam] = (est, float(value))
    return out


def bar_figure(results: dict, tasks: list[str], metrics=("auroc", "prr")):
    """ROC-AUC and PRR per task, for each family's best aggregation; one legend below both axes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.6))
    axes = np.atleast_1d(axes)
    width = 0.8 / len(FAMILIES)
    for ax, metric in zip(axes, metrics):
        name = "ROC-AUC" if metric == "auroc" else metric.upper()
        for i, fam in enumerate(FAMILIES):
            xs, ys = [], []
            for t, task in enumerate(tasks):
                best = best_by_family(results, task, metric).get(fam)
                if best is not None:
                    xs.append(t + (i - (len(FAMILIES) - 1) / 2) * width)
                    ys.append(best[1])
            ax.bar(xs, ys, width, color=FAMILY_COLOURS[fam], label=fam)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels([t.removeprefix("sighead_") for t in tasks], rotation=15)
        ax.set_title(f"{name} (best aggregation per estimator)")
        ax.set_ylabel(f"{name}, pooled over the task's samples")
        ax.set_xlabel("task")
        ax.axhline(0.5 if metric == "auroc" else 0.0, color="#999999", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()  # below the tick labels, saved by bbox "tight"
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(FAMILIES))
    return fig


def bar_plot(results: dict, tasks: list[str], path: Path, metrics=("auroc", "prr")) -> Path:
    return _write(bar_figure(results, tasks, metrics), path)
