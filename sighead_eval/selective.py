"""Risk-controlled selective generation: a confidence threshold chosen on calibration data so that,
with probability at least 1 - delta over the calibration draw, the selective risk (the error rate
of the outputs kept) on new data from the same distribution is at most alpha.

The method is Learn then Test (Angelopoulos, Bates, Candès, Jordan and Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052, 2021):

- a grid of thresholds fixed before any data is seen (`GRID`: every 0.01 in [0, 1], and 11
  log-spaced values from 1e-12 to 1e-2 for products of probabilities);
- at each threshold, the null hypothesis "the selective risk here exceeds alpha" is tested with a
  valid p-value: given the n calibration outputs kept, their errors are a binomial draw with the
  selective risk as its rate, so p = P(Binomial(n, alpha) <= errors) (exact, for 0/1 losses), or
  Hoeffding's bound exp(-2 n (alpha - mean loss)^2) for losses in [0, 1];
- Bonferroni over the grid: every threshold with p <= delta / |grid| is valid with family-wise
  error at most delta, so the least conservative of them (the lowest threshold, the highest
  coverage) keeps the guarantee. None valid: abstain on everything.

Confidences must be probabilities (in [0, 1]), so that a grid fixed in advance covers them. The
guarantee costs coverage, and more so with few calibration outputs: with a few hundred, a target
risk close to the best achievable one can leave no valid threshold (abstain on everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: The thresholds tried, most conservative first, fixed before any data is seen.
GRID = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.logspace(-12, -2, 11)]))[::-1]


@dataclass(frozen=True)
class Threshold:
    """A chosen threshold: keep an output when its confidence is at least `threshold` (inf: keep
    none). `calibration_coverage` and `calibration_risk` are the calibration data's own figures."""

    threshold: float
    alpha: float
    delta: float
    method: str
    n_calibration: int
    calibration_coverage: float
    calibration_risk: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check(confidence, loss, alpha: float, delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).ravel()
    q = np.asarray(loss, dtype=np.float64).ravel()
    if c.size != q.size or c.size == 0:
        raise ValueError(
            f"confidences and losses should be non-empty and of one length, got {c.size} and {q.size}"
        )
    if not np.isfinite(c).all() or c.min() < 0 or c.max() > 1:
        raise ValueError(
            "risk control needs confidences that are probabilities in [0, 1] (the threshold grid is fixed "
            f"in advance); got values in [{np.nanmin(c):.3g}, {np.nanmax(c):.3g}]"
        )
    if not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
        raise ValueError("losses should be in [0, 1] (1 - correctness for 0/1 outcomes)")
    check_levels(alpha, delta)
    return c, q


def check_levels(alpha: float, delta: float | None = None) -> None:
    """The target risk and the guarantee's failure chance, each in (0, 1)."""
    if not 0 < alpha < 1:
        raise ValueError(f"the target risk alpha should be in (0, 1), got {alpha!r}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"delta should be in (0, 1), got {delta!r}")


def _kept(c: np.ndarray, q: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold of `grid`: how many outputs are kept (confidence >= threshold) and the
    sum of their losses."""
    order = np.argsort(-c, kind="stable")
    sorted_c, losses = c[order], np.concatenate([[0.0], np.cumsum(q[order])])
    n = np.searchsorted(-sorted_c, -grid, side="right")  # count of c >= threshold
    return n, losses[n]


def p_values(n: np.ndarray, loss_sum: np.ndarray, alpha: float, binary: bool) -> np.ndarray:
    """Valid p-values for "the selective risk exceeds alpha", given n kept outputs and their summed
    loss: the exact binomial tail for 0/1 losses, Hoeffding's bound otherwise (1 where none is kept)."""
    from scipy.stats import binom

    n = np.asarray(n)
    if binary:
        p = binom.cdf(np.round(loss_sum), n, alpha)
    else:
        mean = np.divide(loss_sum, n, out=np.ones_like(loss_sum, dtype=float), where=n > 0)
        p = np.where(mean < alpha, np.exp(-2 * n * np.clip(alpha - mean, 0, None) ** 2), 1.0)
    return np.where(n > 0, p, 1.0)


def risk_controlled_threshold(confidence, loss, alpha: float = 0.1, delta: float = 0.1) -> Threshold:
    """The least conservative threshold of `GRID` whose selective risk is at most `alpha` with
    probability at least 1 - `delta` (Learn then Test, Bonferroni over the grid)."""
    c, q = _check(confidence, loss, alpha, delta)
    binary = bool(np.isin(q, (0.0, 1.0)).all())
    n, loss_sum = _kept(c, q, GRID)
    valid = p_values(n, loss_sum, alpha, binary) <= delta / GRID.size
    method = "Learn then Test, " + ("binomial tail" if binary else "Hoeffding bound") + ", Bonferroni"
    threshold = float(GRID[valid].min()) if valid.any() else math.inf
    return _describe(threshold, c, q, alpha, delta, method)


def naive_threshold(confidence, loss, alpha: float = 0.1) -> Threshold:
    """The lowest threshold whose calibration risk is at most `alpha`: matches the calibration data
    and guarantees nothing (a baseline, and what risk control is tested against)."""
    c, q = _check(confidence, loss, alpha)
    n, loss_sum = _kept(c, q, GRID)
    ok = (n > 0) & (loss_sum <= alpha * n)
    threshold = float(GRID[ok].min()) if ok.any() else math.inf
    return _describe(threshold, c, q, alpha, None, "calibration risk only (no guarantee)")


def _describe(threshold, c, q, alpha, delta, method) -> Threshold:
    coverage, risk = selective_risk(c, q, threshold)
    return Threshold(
        threshold, alpha, delta if delta is not None else math.nan, method, c.size, coverage, risk
    )


def selective_risk(confidence, loss, threshold: float) -> tuple[float, float]:
    """(coverage, selective risk) of keeping the outputs whose confidence is at least `threshold`;
    the risk is NaN when nothing is kept."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    q = np.asarray(loss, dtype=np.float64).ravel()
    kept = c >= threshold
    coverage = float(kept.mean()) if c.size else 0.0
    return coverage, float(q[kept].mean()) if kept.any() else math.nan


def evaluate(
    calibration: tuple[Sequence[float], Sequence[float]],
    test: tuple[Sequence[float], Sequence[float]],
    alpha: float,
    delta: float,
) -> dict:
    """The threshold chosen on `calibration` (confidences, losses), and its coverage and realised
    risk on `test`."""
    chosen = risk_controlled_threshold(*calibration, alpha=alpha, delta=delta)
    coverage, risk = selective_risk(*test, chosen.threshold)
    return {**chosen.to_dict(), "n_test": len(test[0]), "test_coverage": coverage, "test_risk": risk}


# -- `sighead-eval selective RUN`: every estimator of a saved run -----------------------------------
#: The target risks of the coverage-against-risk curve, and those the tables quote.
CURVE_RISKS = tuple(round(0.01 * k, 2) for k in range(1, 51))
QUOTED_RISKS = (0.05, 0.1, 0.2)


def task_report(dev, test, alpha: float = 0.1, delta: float = 0.1) -> dict:
    """One task's figures from its dev and test halves (`TaskSamples`): per probability estimator,
    the threshold chosen on dev, its test coverage and realised risk, the naive rule's test risk,
    and the test coverage at each target risk of `CURVE_RISKS` (the same delta)."""
    from .estimators import PROBABILITIES

    if not (np.isin(dev.quality, (0, 1)).all() and np.isin(test.quality, (0, 1)).all()):
        return {"skipped": "graded quality: selective risk needs correct/wrong outcomes"}
    if dev.quality.size == 0 or test.quality.size == 0:
        raise ValueError(
            f"{dev.task}: its samples carry no dev/test `split`; calibrate on one half, test on the other"
        )
    rows = {}
    for est in (e for e in PROBABILITIES if e in dev.confidence):
        cal, new = (dev.confidence[est], 1 - dev.quality), (test.confidence[est], 1 - test.quality)
        values = np.concatenate([cal[0], new[0]])
        if values.size and (values.min() < 0 or values.max() > 1):
            continue  # not a probability here (a test's stand-in): the fixed grid does not cover it
        row = evaluate(cal, new, alpha, delta)
        row["naive_test_risk"] = selective_risk(*new, naive_threshold(*cal, alpha).threshold)[1]
        row["curve"] = [evaluate(cal, new, a, delta)["test_coverage"] for a in CURVE_RISKS]
        rows[est] = row
    return {"n_dev": int(dev.quality.size), "n_test": int(test.quality.size), "rows": rows}


#: The keys `run_report` reads in each logged sample (lm-eval's, with `log_samples`).
SAMPLE_KEYS = ("doc_id", "doc", "filter", "filtered_resps")
RUN_FORMAT = (
    "the lm_eval_results.json of a demo or compare run (a JSON object whose `samples` map each task to "
    "its logged samples)"
)


def read_run_samples(path) -> dict[str, list[dict]]:
    """The logged samples of a saved run, `{task: [sample, ...]}`, each checked for the keys
    `run_report` reads: a file of another shape is refused in one line naming it and what is expected."""
    import json
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise ValueError(f"{path} is empty; expected {RUN_FORMAT}")
    try:
        run = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
        ) from None
    if not isinstance(run, dict):
        raise ValueError(f"{path} holds a JSON {type(run).__name__}; expected {RUN_FORMAT}")
    samples = run.get("samples")
    if not samples:
        raise ValueError(f"{path} holds no samples; run with samples logged (demo and compare do)")
    if not isinstance(samples, dict):
        raise ValueError(f"{path}: `samples` is a JSON {type(samples).__name__}; expected {RUN_FORMAT}")
    for task, rows in samples.items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(
                f"{path}: the samples of {task!r} are not a list of objects; expected {RUN_FORMAT}"
            )
        for j, row in enumerate(rows, 1):
            missing = [k for k in SAMPLE_KEYS if k not in row]
            bad_prr = row.get("prr") is not None and not (
                isinstance(row["prr"], list) and len(row["prr"]) == 2 and all(_number(v) for v in row["prr"])
            )
            if missing or not isinstance(row.get("doc"), dict) or bad_prr:
                what = (
                    f"lacks {missing}"
                    if missing
                    else "has a `doc` that is not an object or a `prr` that is not [confidence, quality]"
                )
                raise ValueError(
                    f"{path}: sample {j} of {task!r} {what}; each sample is lm-eval's log of one output "
                    f"({', '.join(SAMPLE_KEYS)}, prr)"
                )
    return samples


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_report(samples: dict, alpha: float = 0.1, delta: float = 0.1, tasks: list[str] | None = None) -> dict:
    """`task_report` for every task of a saved run (`{task: lm-eval samples}`)."""
    from .protocol.samples import subset
    from .report.samples import task_samples

    check_levels(alpha, delta)
    names = tasks or sorted(samples)
    missing = [t for t in names if t not in samples]
    if missing:
        raise ValueError(f"the run holds no samples of {missing}; it has {sorted(samples)}")
    report = {"alpha": alpha, "delta": delta, "method": "Learn then Test (arXiv:2110.01052)", "tasks": {}}
    for task in names:
        ts = task_samples(task, samples[task])
        report["tasks"][task] = task_report(subset(ts, "dev"), subset(ts, "test"), alpha, delta)
    return report


def coverage_lines(report: dict) -> list[str]:
    """Markdown: per task, each estimator's test coverage at the quoted target risks, the threshold
    chosen on dev (what `compare --split both` prints)."""
    lines = [
        "| task | estimator | " + " | ".join(f"coverage at risk {r}" for r in QUOTED_RISKS) + " |",
        "|---|---|" + "---|" * len(QUOTED_RISKS),
    ]
    for task, entry in report["tasks"].items():
        for est, row in entry.get("rows", {}).items():
            cells = " | ".join(f"{coverage_at(row, r):.3f}" for r in QUOTED_RISKS)
            lines.append(f"| {task.removeprefix('sighead_')} | {est} | {cells} |")
    return lines


def json_safe(value):
    """`value` with every non-finite float as None (JSON has no inf or NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def coverage_at(row: dict, risk: float) -> float:
    return row["curve"][CURVE_RISKS.index(risk)]


def report_markdown(report: dict) -> str:
    a, d = report["alpha"], report["delta"]
    lines = [
        f"# Risk-controlled selective generation: target risk {a}, delta {d}",
        "",
        f"{report['method']}: per estimator, the least conservative threshold whose selective risk "
        f"is at most {a} with probability at least {1 - d:.2f}, chosen on the dev half (binomial tail "
        "p-values, Bonferroni over a fixed grid of thresholds); coverage and realised risk on the test "
        "half. `naive risk` is the test risk of the threshold that only matches the dev risk. Coverage "
        f"at risk {', '.join(map(str, QUOTED_RISKS))}: the same guarantee at those targets.",
        "",
    ]
    for task, entry in report["tasks"].items():
        lines += [f"## {task}", ""]
        if "skipped" in entry:
            lines += [f"Skipped: {entry['skipped']}.", ""]
            continue
        none_valid = all(math.isinf(row["threshold"]) for row in entry["rows"].values())
        lines += [
            f"dev {entry['n_dev']} outputs, test {entry['n_test']}."
            + (
                f" No threshold is valid for any estimator at this target risk and delta: with "
                f"{entry['n_dev']} calibration outputs the guarantee cannot be given, so every output "
                "is abstained on; calibrate on more outputs or allow a higher risk."
                if none_valid and entry["rows"]
                else ""
            ),
            "",
            "| estimator | threshold | test coverage | test risk | naive risk | "
            + " | ".join(f"coverage at {r}" for r in QUOTED_RISKS)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(QUOTED_RISKS),
        ]
        for est, row in sorted(entry["rows"].items(), key=lambda kv: -kv[1]["test_coverage"]):
            risk = "–" if math.isnan(row["test_risk"]) else f"{row['test_risk']:.3f}"
            naive = "–" if math.isnan(row["naive_test_risk"]) else f"{row['naive_test_risk']:.3f}"
            thr = "abstain" if math.isinf(row["threshold"]) else f"{row['threshold']:.3g}"
            lines.append(
                f"| {est} | {thr} | {row['test_coverage']:.3f} | {risk} | {naive} | "
                + " | ".join(f"{coverage_at(row, r):.3f}" for r in QUOTED_RISKS)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def coverage_plot(report: dict, path):
    """Test coverage against target risk, per task: each estimator family's aggregation with the
    highest coverage at the report's target risk."""
    from .report.plots import FAMILY_COLOURS, _pyplot, _write, family

    plt = _pyplot()
    tasks = [t for t, e in report["tasks"].items() if "rows" in e]
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.6 * max(len(tasks), 1), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        best: dict[str, tuple[str, dict]] = {}
        for est, row in report["tasks"][task]["rows"].items():
            fam, _ = family(est)
            if fam not in best or row["test_coverage"] > best[fam][1]["test_coverage"]:
                best[fam] = (est, row)
        for fam, (est, row) in best.items():
            ax.plot(CURVE_RISKS, row["curve"], color=FAMILY_COLOURS[fam], lw=1.4, label=est)
        ax.set_title(task.removeprefix("sighead_"))
        ax.set_xlabel(f"target risk (delta {report['delta']:.2f})")
        ax.set_ylabel("coverage on the test half")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.tight_layout()
    return _write(fig, path)
