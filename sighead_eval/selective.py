"""`sighead-eval selective RUN`: risk-controlled thresholds for every estimator of a saved run
(thresholds on the dev half, coverage and realised risk on the test half), written as Markdown,
JSON and a plot. The method, Learn then Test, is the protocol's (`protocol.selective`).
"""

from __future__ import annotations

import math

from .protocol import subset
from .protocol.selective import CURVE_RISKS, QUOTED_RISKS, check_levels, coverage_at, task_report

# `X as X`: the method and the coverage table lived here, and stay importable from here.
from .protocol.selective import GRID as GRID
from .protocol.selective import Threshold as Threshold
from .protocol.selective import evaluate as evaluate
from .protocol.selective import json_safe as json_safe
from .protocol.selective import naive_threshold as naive_threshold
from .protocol.selective import p_values as p_values
from .protocol.selective import risk_controlled_threshold as risk_controlled_threshold
from .protocol.selective import selective_risk as selective_risk
from .report.comparison import coverage_lines as coverage_lines
from .report.samples import task_samples

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
