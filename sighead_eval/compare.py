"""`sighead-eval compare`: the recipe-research protocol. Is a head better than its baselines, on
evidence that tuning cannot fool?

- Every sample of the offline tasks has a fixed `split` (dev or test, by a hash of its id). Recipes
  are chosen on `--split dev`; `--split test` is run for the recipes kept, all of them.
- Metrics (ROC-AUC, PRR) are computed per question type and macro-averaged over types, since
  types differ in accuracy and pooled figures mix them up.
- Each Sigmoid Head aggregation is compared with softmax and BoostedProb (product, mean and
  minimum) by a paired bootstrap of the macro difference (samples resampled within each type and
  class, or as pairs where outputs come in pairs, like a sentence and its altered version; the
  same resample for both estimators): the 95 % interval is reported. The
  length-only baseline (negated answer length) is a row like any other, so a win that is only a
  length effect shows.
- `--split both` also runs the protocol for the mechanism in closed form (`mechanism`): the
  `ceiling` aggregation chosen on dev against the same rival, Holm-corrected as a family of its
  own; the same for the head times its ceiling (`hybrid`, a lever beyond the paper), each a `family`
  of `FAMILIES`; and tabulates the gaps to the rival and head - ceiling per task and error type (`gap_table`).
- `--outputs RUN.json` rescored saved outputs (those of an earlier run, whatever head made them:
  the outputs of the frozen model do not depend on the head) instead of generating again; several
  runs, comma-separated, each give their tasks.

Writes `table.md` and `table.json` (and `lm_eval_results.json` when it ran lm-eval) under
`results/compare/<adapter>-<split>/` by default.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics as core
from .estimators import (
    CEILING_CONFIDENCES,
    CONFIDENCES,
    HEAD_CONFIDENCES,
    HYBRID_CONFIDENCES,
    PROBABILITIES,
    RIVAL_CONFIDENCES,
    by_role,
    confidence,
)
from .files import check_output_dir, write_atomic
from .models import ModelOptions
from .report.samples import TaskSamples, judged, subset, task_samples
from .report.words import word_comparison, word_comparison_lines, word_headline_lines
from .runs import check_split, check_tasks, choose_adapter, evaluate_tasks, split_indices

METRICS = ("auroc", "prr")
#: The baselines each head aggregation is compared with: the rivals' (the softmax's, BoostedProb's).
BASELINES = tuple(f"{e}_{a}" for e in by_role("rival") for a in ("prod", "mean", "min"))
HEAD_ROWS = HEAD_CONFIDENCES


# -- statistics -----------------------------------------------------------------------------------
def _metric(name: str, c: np.ndarray, q: np.ndarray) -> float:
    return core.rank_auroc(c, q) if name == "auroc" else core.prr(c, q)


def type_groups(ts: TaskSamples) -> dict[str, np.ndarray]:
    """Indices of each question type that has both good and bad outputs (others are left out)."""
    types = np.array([str(d.get("type", "all")) for d in ts.docs])
    out = {}
    for t in sorted(set(types)):
        idx = np.flatnonzero(types == t)
        if 0 < ts.quality[idx].sum() < idx.size:
            out[t] = idx
    return out


def per_type(ts: TaskSamples, est: str, metric: str) -> dict[str, float]:
    c, q = ts.confidence[est], ts.quality
    per = {t: _metric(metric, c[idx], q[idx]) for t, idx in type_groups(ts).items()}
    per["macro"] = float(np.mean(list(per.values()))) if per else math.nan
    return per


def resampling_units(ts: TaskSamples) -> list[list[np.ndarray]]:
    """Per question type, the units a bootstrap resamples with replacement: the pairs of outputs
    that belong together (documents with the same `pair`, such as a sentence and its altered
    version), else each output alone, drawn within its class. Returns, per type, one list of
    units per class (pairs: one list)."""
    groups = type_groups(ts)
    q = ts.quality
    pairs = [d.get("pair") for d in ts.docs]
    strata = []
    for idx in groups.values():
        if all(pairs[i] is not None for i in idx):
            members: dict = {}
            for i in idx:
                members.setdefault(pairs[i], []).append(i)
            strata.append([[np.array(m) for m in members.values()]])
        else:
            strata.append([[np.array([i]) for i in idx[q[idx] == c]] for c in (1, 0)])
    return strata


def resample(strata: list[list[list[np.ndarray]]], rng: np.random.Generator) -> list[np.ndarray]:
    """One bootstrap resample: per type, the indices of the units drawn (as many as there are)."""
    out = []
    for classes in strata:
        drawn = [units[j] for units in classes for j in rng.integers(0, len(units), len(units))]
        out.append(np.concatenate(drawn))
    return out


def bootstrap_macro(ts: TaskSamples, estimators, metric: str, iters: int = 1000, seed: int = 0) -> dict:
    """`{estimator: (iters,) macro metric}` over bootstrap resamples stratified by type (and by
    class, or by pair where outputs come in pairs: see `resampling_units`). Every estimator sees
    the same resamples, so differences between them are paired."""
    rng = np.random.default_rng(seed)
    q = ts.quality
    strata = resampling_units(ts)
    out = {e: np.zeros(iters) for e in estimators}
    for i in range(iters):
        for idx in resample(strata, rng):
            for e in estimators:
                out[e][i] += _metric(metric, ts.confidence[e][idx], q[idx]) / len(strata)
    return out


def paired_bootstrap(ts: TaskSamples, a: str, b: str, metric: str, iters: int = 1000, seed: int = 0):
    """Macro `metric` of `a` minus that of `b`, with a 95 % percentile interval from a paired
    bootstrap stratified by type and class."""
    if not type_groups(ts):
        return math.nan, math.nan, math.nan
    boot = bootstrap_macro(ts, (a, b), metric, iters, seed)
    return _difference(ts, boot, a, b, metric)


def _difference(ts, boot, a, b, metric):
    point = per_type(ts, a, metric)["macro"] - per_type(ts, b, metric)["macro"]
    lo, hi = np.percentile(boot[a] - boot[b], [2.5, 97.5])
    return float(point), float(lo), float(hi)


def compare_task(ts: TaskSamples, iters: int = 1000, seed: int = 0) -> dict:
    """Per-type and macro ROC-AUC and PRR of every estimator, and the head-vs-baseline intervals."""
    out = {"task": ts.task, "n": int(ts.quality.size), "accuracy": float(ts.quality.mean())}
    out["types"] = {
        t: {"n": int(idx.size), "accuracy": float(ts.quality[idx].mean())}
        for t, idx in type_groups(ts).items()
    }
    out["metrics"] = {m: {e: per_type(ts, e, m) for e in ts.estimators} for m in METRICS}
    heads = [a for a in HEAD_ROWS if a in ts.confidence]
    bases = [b for b in BASELINES if b in ts.confidence]
    out["differences"] = {m: {} for m in METRICS}
    if not type_groups(ts) or not heads:
        return out
    for m in METRICS:
        boot = bootstrap_macro(ts, heads + bases, m, iters, seed)
        for a in heads:
            for b in bases:
                diff = _difference(ts, boot, a, b, m)
                out["differences"][m][f"{a} - {b}"] = dict(zip(("diff", "low", "high"), diff))
    return out


# -- the pre-registered comparison ------------------------------------------------------------------
#: What a head is compared with in the pre-registered comparison: any softmax, BoostedProb or
#: entropy aggregation, the best on dev (the length alone is a row of the tables, not a rival).
RIVALS = RIVAL_CONFIDENCES
ALPHA = 0.05


@dataclass(frozen=True)
class Family:
    """A comparison family beside the pre-registered one: the estimator under test (`role`, one of
    its aggregations chosen on dev), its mark in the tables, and how the reports introduce it."""

    role: str
    mark: str
    confidences: tuple[str, ...]
    intro: str


#: The families beside the pre-registered one, in report order. Each runs the same protocol as
#: the head's (chosen on dev against the same rival) and is Holm-corrected on its own, so it
#: leaves the head's comparisons as they are.
FAMILIES = {
    "mechanism": Family(
        "ceiling",
        "C",
        CEILING_CONFIDENCES,
        "The mechanism in closed form, no trained head (C: the `ceiling` aggregation chosen on dev, "
        "against the same rival)",
    ),
    "hybrid": Family(
        "hybrid",
        "HC",
        HYBRID_CONFIDENCES,
        "The head times its ceiling, a lever beyond the paper (HC: the `hybrid` aggregation chosen on "
        "dev, against the same rival)",
    ),
}


def choose_on_dev(dev: TaskSamples) -> dict:
    """The head aggregation, each family's aggregation (`FAMILIES`) and the rival with the highest
    macro ROC-AUC on dev."""
    auroc = {e: per_type(dev, e, "auroc")["macro"] for e in dev.estimators}

    def best(names):
        scored = [(auroc[e], e) for e in names if e in auroc and not math.isnan(auroc[e])]
        return max(scored)[1] if scored else None

    return {
        "head": best(HEAD_CONFIDENCES),
        "baseline": best(RIVALS),
        **{f.role: best(f.confidences) for f in FAMILIES.values()},
        "dev_auroc": auroc,
    }


def twins(ts: TaskSamples, error: str) -> np.ndarray:
    """Mask of the true outputs an error type is set against: those whose document names it as
    their `twin` (a contradiction's true answer of the same construction) where any does, else
    those that name no twin (a wrong entity's own fact, in its phrasings). So each error type meets
    true answers of its own shapes, and answer length cannot separate them."""
    true = np.array([d.get("error") == "none" for d in ts.docs], dtype=bool)
    named = np.array([d.get("twin") or "" for d in ts.docs], dtype=object)
    own = true & (named == error)
    return own if own.any() else true & (named == "")


def error_breakdown(ts: TaskSamples) -> dict:
    """For tasks whose false outputs carry an `error` type (not 'none'): per error type, every
    estimator's macro ROC-AUC and PRR over that type's false outputs and their true twins
    (`twins`)."""
    errors = sorted({str(d.get("error")) for d in ts.docs if d.get("error") not in (None, "none")})
    out = {}
    for error in errors:
        keep = twins(ts, error) | np.array([d.get("error") == error for d in ts.docs], dtype=bool)
        part = TaskSamples(
            ts.task, [d for d, k in zip(ts.docs, keep) if k], ts.quality[keep],
            {e: v[keep] for e, v in ts.confidence.items()}, [],
        )  # fmt: skip
        out[error] = {m: {e: per_type(part, e, m)["macro"] for e in part.estimators} for m in METRICS}
    return out


def calibration(dev: TaskSamples, test: TaskSamples) -> dict:
    """Per estimator, ECE and Brier on test: raw (probabilities only) and after Platt scaling
    fitted on dev (every estimator), so the calibrated columns compare like with like."""
    out = {}
    for e in test.estimators:
        row = {}
        c = test.confidence[e]
        probability = e in PROBABILITIES and c.min() >= 0 and c.max() <= 1
        if probability:
            row["raw_ece"] = core.ece(test.confidence[e], test.quality)
            row["raw_brier"] = core.brier(test.confidence[e], test.quality)
        if 0 < dev.quality.sum() < dev.quality.size:
            fitted = core.platt_calibrate(
                dev.confidence[e], dev.quality, c, log_scale=probability and dev.confidence[e].min() > 0
            )
            row["ece"] = core.ece(fitted, test.quality)
            row["brier"] = core.brier(fitted, test.quality)
        out[e] = row
    return out


def preregistered(per_task: list[TaskSamples], iters: int = 1000, seed: int = 0) -> dict:
    """The protocol: choose, per task, one head aggregation and one rival on the dev half; on the
    test half, the difference of macro ROC-AUC and PRR with a paired bootstrap, Holm-Bonferroni
    corrected across tasks x metrics. Intervals are at the Bonferroni level 1 - alpha / m."""
    return _dev_chosen_family(per_task, "head", iters, seed)


def family(per_task: list[TaskSamples], name: str, iters: int = 1000, seed: int = 0) -> dict:
    """The protocol for family `name` of `FAMILIES`: per task, its aggregation chosen on dev against
    the same dev-chosen rival, Holm-corrected within the family. Rows name the aggregation under
    `head`, the estimator under test, as the head's rows do."""
    if name not in FAMILIES:
        raise ValueError(f"unknown comparison family {name!r}; known: {', '.join(FAMILIES)}")
    return _dev_chosen_family(per_task, FAMILIES[name].role, iters, seed)


def _dev_chosen_family(per_task: list[TaskSamples], role: str, iters: int, seed: int) -> dict:
    """Per task, the `role` ("head", "ceiling" or "hybrid") estimator and the rival chosen on dev; their
    paired test-half differences, Holm-corrected over this family's comparisons."""
    rows = []
    for ts in per_task:
        dev, test = subset(ts, "dev"), subset(ts, "test")
        chosen = choose_on_dev(dev)
        head, rival = chosen[role], chosen["baseline"]
        if head is None or rival is None or not type_groups(test):
            continue
        for m in METRICS:
            boot = bootstrap_macro(test, (head, rival), m, iters, seed)
            diffs = boot[head] - boot[rival]
            point = per_type(test, head, m)["macro"] - per_type(test, rival, m)["macro"]
            rows.append(
                {"task": ts.task, "metric": m, "head": head, "baseline": rival, "diff": float(point),
                 "p": core.bootstrap_p_value(diffs), "_boot": diffs}
            )  # fmt: skip
    core.correct_family(rows, role, ALPHA)
    return {"alpha": ALPHA, "comparisons": len(rows), "rows": rows}


# -- tables ---------------------------------------------------------------------------------------
def _cell(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _short(task: str) -> str:
    return task.removeprefix("sighead_")


def headline_table(report: dict) -> str:
    """The test half: every estimator's macro ROC-AUC and PRR, and ECE and Brier after Platt
    scaling fitted on dev; the dev-chosen head aggregation marked H, the dev-chosen rival B, and
    the dev-chosen ceiling and hybrid aggregations C and HC."""
    tasks = report["tasks"]
    chosen = {
        (r["task"], r["head"]): fam.mark
        for name, fam in FAMILIES.items()
        for r in report.get(name, {}).get("rows", [])
    }
    chosen.update({(r["task"], r["head"]): "H" for r in report["preregistered"]["rows"]})
    chosen.update({(r["task"], r["baseline"]): "B" for r in report["preregistered"]["rows"]})
    head = ["estimator"] + [
        f"{_short(t['task'])}: {label}" for t in tasks for label in ("ROC-AUC", "PRR", "ECE", "Brier")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in CONFIDENCES:
        if not any(e in t["metrics"]["auroc"] for t in tasks):
            continue
        cells = [e]
        for t in tasks:
            mark = chosen.get((t["task"], e))
            for m in METRICS:
                v = t["metrics"][m].get(e, {}).get("macro")
                cells.append(_cell(v) + (f" {mark}" if mark else ""))
            cal = report["calibration"][t["task"]].get(e, {})
            cells += [_cell(cal.get("ece")), _cell(cal.get("brier"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def error_table(report: dict) -> list[str]:
    """Markdown lines: per task with error types, each estimator's macro ROC-AUC and PRR per type."""
    lines = []
    for task, table in report.get("errors", {}).items():
        errors = list(table)
        lines += [
            f"## {_short(task)} by error type "
            "(test half: the false outputs of each type against their true twins)",
            "",
        ]
        head = ["estimator"] + [f"{e}: {label}" for e in errors for label in ("ROC-AUC", "PRR")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for est in CONFIDENCES:
            if est not in table[errors[0]]["auroc"]:
                continue
            cells = [_cell(table[e][m].get(est)) for e in errors for m in METRICS]
            lines.append("| " + " | ".join([est, *cells]) + " |")
        lines.append("")
    return lines


def calibration_table(report: dict) -> list[str]:
    tasks = [t["task"] for t in report["tasks"]]
    head = ["estimator"] + [
        f"{_short(t)}: {c}" for t in tasks for c in ("raw ECE", "raw Brier", "Platt ECE", "Platt Brier")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in CONFIDENCES:
        rows = [report["calibration"][t].get(e) for t in tasks]
        if all(r is None for r in rows):
            continue
        cells = [e]
        for r in rows:
            r = r or {}
            cells += [_cell(r.get(k)) for k in ("raw_ece", "raw_brier", "ece", "brier")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def gap_rows(report: dict) -> tuple[list[str], list[tuple[str, str | None, dict, dict]]]:
    """The estimators' marks (H, B, then C and HC where the report has them) and, per task and
    per error type where a task has them, `(task, error type or None, {mark: estimator}, {mark:
    test-half macro ROC-AUC})` of the task's dev choices."""
    chosen = {r["task"]: r for r in report["preregistered"]["rows"] if r["metric"] == "auroc"}
    others = {
        fam.mark: {r["task"]: r["head"] for r in report.get(name, {}).get("rows", [])}
        for name, fam in FAMILIES.items()
    }
    marks = ["H", "B", *(m for m in others if others[m])]
    rows = []
    for t in report["tasks"]:
        row = chosen.get(t["task"])
        if row is None:
            continue
        names = {"H": row["head"], "B": row["baseline"], **{m: others[m].get(t["task"]) for m in marks[2:]}}
        parts = [(None, {e: v["macro"] for e, v in t["metrics"]["auroc"].items()})]
        parts += [
            (error, table["auroc"]) for error, table in report.get("errors", {}).get(t["task"], {}).items()
        ]
        for error, auroc in parts:
            value = {k: auroc.get(e, math.nan) if e else math.nan for k, e in names.items()}
            rows.append((t["task"], error, names, value))
    return marks, rows


def _row_name(task: str, error: str | None) -> str:
    return _short(task) + (f" ({error})" if error else "")


def _gap(value: dict, a: str, b: str) -> str:
    g = value.get(a, math.nan) - value.get(b, math.nan)
    return "–" if math.isnan(g) else f"{g:+.3f}"


def gap_table(report: dict) -> list[str]:
    """Markdown lines: per task, and per error type where a task has them, the test-half macro
    ROC-AUC of the dev-chosen head aggregation (H), rival (B), ceiling aggregation (C) and hybrid
    aggregation (HC), and the gaps: H - B is what the trained head adds over the best baseline,
    C - B what the converged mechanism would, HC - B what the head times its ceiling does, and
    H - C how far training is from the mechanism's convergence."""
    marks, rows = gap_rows(report)
    pairs = [("H", "B"), *((m, "B") for m in marks[2:])] + ([("H", "C")] if "C" in marks else [])
    head = ["task (error type)", *marks, *(f"{a} − {b}" for a, b in pairs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, error, names, value in rows:
        cells = [f"{_cell(value[k])} `{names[k]}`" if names[k] else "–" for k in marks]
        cells += [_gap(value, a, b) for a, b in pairs]
        lines.append("| " + " | ".join([_row_name(task, error), *cells]) + " |")
    return lines


MODELS_START = (
    "<!-- models: generated from the heads' evaluation.json by `compare.models_block`; do not edit -->"
)
MODELS_END = "<!-- models end -->"


def models_block(reports: dict[str, dict]) -> str:
    """Several models' `--split both` reports (label -> report) side by side: per task and error
    type, each model's gaps to its own dev-chosen rival (H − B, C − B, HC − B), a `*` where that
    family's ROC-AUC comparison is significant after its Holm correction (tasks only: error types
    are not tested). A task's base-model variant (`sighead_geo_qa_base`) shares the task's row."""
    significant = {
        label: {
            (mark, r["task"])
            for name, mark in (("preregistered", "H"), *((n, f.mark) for n, f in FAMILIES.items()))
            for r in report.get(name, {}).get("rows", [])
            if r["metric"] == "auroc" and r["verdict"] != "no significant difference"
        }
        for label, report in reports.items()
    }
    tables = {}  # label -> (marks, {row name: (task, error, value)})
    for label, report in reports.items():
        marks, rows = gap_rows(report)
        tables[label] = (
            marks,
            {
                _row_name(task.removesuffix("_base"), error): (task, error, value)
                for task, error, _, value in rows
            },
        )
    order = list(dict.fromkeys(name for _, named in tables.values() for name in named))
    gaps = ("H", "C", "HC")
    head = ["task (error type)"] + [f"{label}: {g} − B" for label in reports for g in gaps]
    lines = [MODELS_START, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in order:
        cells = [name]
        for label, (marks, named) in tables.items():
            for g in gaps:
                if name not in named or g not in marks:
                    cells.append("–")
                    continue
                task, error, value = named[name]
                star = "*" if error is None and (g, task) in significant[label] else ""
                cells.append(_gap(value, g, "B") + star)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", MODELS_END]) + "\n"


def preregistered_sentences(report: dict, family: str = "preregistered") -> list[str]:
    """One sentence per (task, metric) of a dev-chosen family's comparisons, from its numbers."""
    pre = report[family]
    out = []
    for r in pre["rows"]:
        name = "ROC-AUC" if r["metric"] == "auroc" else "PRR"
        level = 100 * (1 - pre["alpha"] / max(pre["comparisons"], 1))
        out.append(
            f"{_short(r['task'])}, {name}: `{r['head']}` minus `{r['baseline']}` = {r['diff']:+.3f} "
            f"({level:.1f} % interval [{r['low']:+.3f}, {r['high']:+.3f}]; Holm-adjusted p = "
            f"{r['p_holm']:.3f}): {r['verdict']}."
        )
    return out


HEADLINE_START = "<!-- headline: generated by `sighead-eval compare --split both`; do not edit -->"
HEADLINE_END = "<!-- headline end -->"


def headline_block(report: dict, compact: bool = False) -> str:
    """The headline, generated from a `--split both` report, so every figure quoted is the
    report's own. In full (the results page, the adapter card): the test-half table and one
    sentence per comparison of every family. `compact` (the README's first page): the gaps per
    task and error type, and each family's significant comparisons in one line."""
    n = ", ".join(f"{_short(t['task'])} {t['n']}" for t in report["tasks"])
    intro = (
        f"Test halves only ({n} samples), {report['model']} with `{Path(report['adapter']).name}`, "
        f"{report['date']}. H: the head aggregation chosen on dev; B: the rival chosen on dev (best dev "
        "ROC-AUC among the softmax, BoostedProb and entropy aggregations)"
        + ("; C: the ceiling aggregation chosen on dev" if "mechanism" in report else "")
        + ("; HC: the hybrid (head times ceiling) aggregation chosen on dev" if "hybrid" in report else "")
        + ". ROC-AUC and PRR are macro averages over question types"
    )
    if compact:
        families = [("preregistered", "The pre-registered comparisons (H against B)")] + [
            (name, f"{fam.mark} against B") for name, fam in FAMILIES.items() if name in report
        ]
        return (
            "\n".join(
                [
                    HEADLINE_START,
                    "",
                    intro + ". Macro ROC-AUC per task and per error type:",
                    "",
                    *gap_table(report),
                    "",
                    "Significant after Holm-Bonferroni correction (paired bootstrap, each family on its "
                    "own):",
                    "",
                    *(f"- {label}: {significant_summary(report, name)}" for name, label in families),
                    "",
                    *word_headline_lines(report.get("words", {})),
                    HEADLINE_END,
                ]
            )
            + "\n"
        )
    lines = [
        HEADLINE_START,
        "",
        intro + "; ECE and Brier are after Platt scaling fitted on dev.",
        "",
        headline_table(report).rstrip(),
        "",
        "Pre-registered comparisons (paired bootstrap, Holm-Bonferroni over "
        f"{report['preregistered']['comparisons']} comparisons):",
        "",
        *(f"- {line}" for line in preregistered_sentences(report)),
        "",
        *_family_lines(report),
        *word_headline_lines(report.get("words", {})),
        HEADLINE_END,
    ]
    return "\n".join(lines) + "\n"


def significant_summary(report: dict, family: str = "preregistered") -> str:
    """One line: how many of a family's comparisons are significant after correction, and which,
    one clause per task and verdict."""
    fam = report[family]
    hits = [r for r in fam["rows"] if r["verdict"] != "no significant difference"]
    groups: dict[tuple, list[str]] = {}
    for r in hits:
        key = (_short(r["task"]), r["head"], r["baseline"], r["verdict"])
        name = "ROC-AUC" if r["metric"] == "auroc" else "PRR"
        groups.setdefault(key, []).append(f"{name} {r['diff']:+.3f}")
    clauses = "; ".join(
        f"{task} {', '.join(diffs)} (`{head}` against `{base}`: {verdict})"
        for (task, head, base, verdict), diffs in groups.items()
    )
    return f"{len(hits)} of {fam['comparisons']}" + (f": {clauses}." if hits else ".")


def _family_lines(report: dict) -> list[str]:
    """The families beside the pre-registered one (C, HC in the table), each Holm-corrected on its
    own, and the gaps per task and error type."""
    lines = []
    for name, fam in FAMILIES.items():
        if name in report:
            lines += [
                f"{fam.intro}; a family of its own, Holm-Bonferroni over "
                f"{report[name]['comparisons']} comparisons:",
                "",
                *(f"- {line}" for line in preregistered_sentences(report, name)),
                "",
            ]
    if not lines:
        return []
    marks = ", ".join(["H", "B", *(fam.mark for name, fam in FAMILIES.items() if name in report)])
    return [
        *lines,
        "Gaps on the test half, macro ROC-AUC, per task and per error type (the task's dev choices of "
        f"{marks} throughout):",
        "",
        *gap_table(report),
        "",
    ]


def replace_headline(text: str, block: str) -> str:
    """`text` with its headline block (between the markers) replaced by `block`."""
    start, end = text.index(HEADLINE_START), text.index(HEADLINE_END) + len(HEADLINE_END) + 1
    return text[:start] + block + text[end:]


def selective_section(per_task: list[TaskSamples], delta: float = 0.1) -> dict:
    """Risk-controlled selective generation per binary task: thresholds chosen on dev (Learn then
    Test, `delta`), coverage on test at each target risk."""
    from .selective import json_safe, task_report

    tasks = {ts.task: task_report(subset(ts, "dev"), subset(ts, "test"), 0.1, delta) for ts in per_task}
    return json_safe({"delta": delta, "method": "Learn then Test (arXiv:2110.01052)", "tasks": tasks})


def selective_table(report: dict) -> list[str]:
    if "selective" not in report:
        return []
    from .selective import coverage_lines

    sel = report["selective"]
    return [
        "## Selective generation (threshold on dev, coverage on test)",
        "",
        f"The share of test outputs kept by the threshold chosen on the dev half so that the selective "
        f"risk is at most the target with probability at least {1 - sel['delta']:.2f} ({sel['method']}; "
        "`sighead-eval selective` gives the thresholds and realised risks).",
        "",
        *coverage_lines(sel),
        "",
    ]


def markdown(report: dict) -> str:
    lines = [f"# Comparison: {report['adapter']} on the {report['split']} split", ""]
    lines.append(f"Model {report['model']}; {report['date']}; bootstrap {report['bootstrap']} resamples.")
    if "preregistered" in report:
        pre = report["preregistered"]
        lines += [
            "",
            "## Pre-registered comparison (test half)",
            "",
            "Per task, one Sigmoid Head aggregation (H) and one rival (B: any softmax, BoostedProb or "
            "entropy aggregation) were chosen by macro ROC-AUC on the dev half. Below, the test half only: "
            f"macro ROC-AUC and PRR; ECE and Brier after Platt scaling fitted on dev. Differences: paired "
            f"bootstrap, Holm-Bonferroni corrected over {pre['comparisons']} comparisons (tasks x metrics).",
            "",
            headline_table(report).rstrip(),
            "",
            *(f"- {line}" for line in preregistered_sentences(report)),
            "",
            *_family_lines(report),
            "## Calibration (test half)",
            "",
            "ECE and Brier of each estimator: raw (probabilities only: the scores as they come out), and "
            "after Platt scaling fitted on the dev half (every estimator), which compares like with like.",
            "",
            *calibration_table(report),
            "",
            *selective_table(report),
            *word_comparison_lines(report.get("words", {})),
            *error_table(report),
            "## Exploration (test half, every head aggregation against every baseline, not corrected)",
        ]
    for task in report["tasks"]:
        types = list(task["types"])
        lines += ["", f"## {task['task']} ({task['n']} samples, accuracy {task['accuracy']:.2f})", ""]
        lines.append(
            "types: "
            + ", ".join(f"{t} (n={v['n']}, acc {v['accuracy']:.2f})" for t, v in task["types"].items())
        )
        for m in METRICS:
            rows = task["metrics"][m]
            best = max((v["macro"] for v in rows.values() if not math.isnan(v["macro"])), default=math.nan)
            head = ["estimator", *types, "macro"]
            lines += [
                "",
                f"### {m.upper() if m == 'prr' else 'ROC-AUC'}",
                "",
                "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head),
            ]
            for e, v in rows.items():
                macro = _cell(v["macro"])
                macro = f"**{macro}**" if v["macro"] == best else macro
                lines.append("| " + " | ".join([e, *(_cell(v.get(t)) for t in types), macro]) + " |")
        for m in METRICS:
            diffs = task["differences"][m]
            if not diffs:
                continue
            lines += [
                "",
                f"### Sigmoid Head minus baseline, macro {m.upper() if m == 'prr' else 'ROC-AUC'}"
                " (95 % paired bootstrap)",
                "",
            ]
            lines += ["| comparison | difference | 95 % interval | verdict |", "|---|---|---|---|"]
            for name, d in diffs.items():
                verdict = (
                    "head better"
                    if d["low"] > 0
                    else "head worse"
                    if d["high"] < 0
                    else "no significant difference"
                )
                lines.append(
                    f"| {name} | {d['diff']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {verdict} |"
                )
    return "\n".join(lines) + "\n"


# -- runs -----------------------------------------------------------------------------------------
def saved_records(saved: dict, name: str, model, tokenizer) -> list[dict]:
    """Scoring records (prompt and response token ids) of task `name`'s saved outputs, one per
    document in doc order, tokenised as the `sighead` lm-eval model tokenised them."""
    from .frozen import unwrap
    from .scoring import fit_response, hflm_context_ids, model_context_length

    first = sorted(
        (s for s in saved["samples"][name] if s["filter"] == "sigmoid_mean"), key=lambda s: s["doc_id"]
    )
    records = []
    for s in first:
        args = s["arguments"]
        context = args[0][0] if isinstance(args, list) else args["gen_args_0"]["arg_0"]
        ids = hflm_context_ids(tokenizer, context)
        response = judged(s)["response"]
        cont = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids, cont = fit_response(ids, cont, model_context_length(unwrap(model)))
        records.append({"prompt_token_ids": ids, "response": response, "response_token_ids": cont})
    return records


def _rescore(saved: dict, names: list[str], model, tokenizer, options) -> list[TaskSamples]:
    """Scores the saved outputs of an earlier run with `model` (its current head)."""
    from .scoring import score

    out = []
    for name in names:
        base = task_samples(name, saved["samples"][name])
        scored = score(model, tokenizer, saved_records(saved, name, model, tokenizer), options)
        confs = {}
        for e in CONFIDENCES:
            values = [confidence(r.sequence_scores(), len(r.token_ids), e) for r in scored]
            if all(v is not None for v in values):
                confs[e] = np.array(values, dtype=float)
        tokens = [
            {
                "text": r.tokens,
                **{e: np.exp(r.log_scores[e]).tolist() for e in r.estimators},
                "entropy": r.entropy.tolist(),
            }
            for r in scored
        ]  # what the word-level comparison reads
        out.append(TaskSamples(name, base.docs, base.quality, confs, [r.response for r in scored], tokens))
    return out


def read_outputs(files: list[str]) -> dict:
    """The samples of one or more saved runs (lm_eval_results.json), as one run's: each task from
    the one file that holds it (a task in two files is refused: which run is meant?)."""
    samples: dict = {}
    where: dict = {}
    for f in files:
        for task, rows in json.loads(Path(f).read_text()).get("samples", {}).items():
            if task in samples:
                raise ValueError(f"task {task!r} is in both {where[task]} and {f}; pass each task's run once")
            samples[task], where[task] = rows, f
    return {"samples": samples}


def run_compare(
    options: ModelOptions | None = None,
    tasks: list[str] | None = None,
    split: str = "dev",
    output: str | None = None,
    outputs: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    rescore: bool = True,
) -> dict:
    """Runs the protocol (see the module docstring) with the model and head `options` name
    (default: the embedded model with the shipped head); returns the report it writes."""
    from dataclasses import replace

    from .models import DEFAULT_MODEL, check_adapter_fits

    options = options or ModelOptions()
    options = replace(options, adapter=choose_adapter(options.adapter, options.model))
    model, adapter = options.model, options.adapter
    check_split(split)
    names = check_tasks(tasks)
    label = Path(adapter).name if adapter else "no-head"
    out_dir = check_output_dir(output or f"results/compare/{label}-{split}")
    if adapter is not None:
        check_adapter_fits(adapter, model, options.trust_remote_code)
    files = [f.strip() for f in outputs.split(",") if f.strip()] if outputs is not None else []
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(
                f"--outputs {f!r} does not exist; pass an lm_eval_results.json of a run (or several, "
                "comma-separated)"
            )
    started = time.time()
    if outputs is not None:
        from .scoring import ScoringOptions

        saved = read_outputs(files)
        missing = [t for t in names if t not in saved.get("samples", {})]
        if missing:
            raise ValueError(
                f"{outputs} holds no samples of {missing}; it has {sorted(saved.get('samples', {}))}"
            )
        if rescore:
            lm, tokenizer = options.load()
            options = ScoringOptions(chat_template=False, batch_size=batch_size, truncation="left")
            per_task = _rescore(saved, names, lm, tokenizer, options)
        else:  # the confidences as the saved run computed them
            per_task = [task_samples(t, saved["samples"][t]) for t in names]
        # keep the requested split of the saved samples
        per_task = [subset(ts, "all" if split == "both" else split) for ts in per_task]
    else:
        run = evaluate_tasks(
            names, options.lm_eval_args(), lambda task: split_indices(task, split), batch_size, out_dir
        )
        per_task = [task_samples(t, run["samples"][t]) for t in names]
    report = {
        "adapter": adapter or "(none)",
        "model": model or DEFAULT_MODEL,
        "split": split,
        "date": time.strftime("%Y-%m-%d"),
        "bootstrap": bootstrap,
        "seconds": round(time.time() - started, 1),
    }
    if split == "both":  # choose on dev, report on test; the all-pairs tables are exploration
        report["preregistered"] = preregistered(per_task, bootstrap, seed)
        for name, fam in FAMILIES.items():  # a family whose estimator was not computed is left out
            if any(e in ts.confidence for ts in per_task for e in fam.confidences):
                report[name] = family(per_task, name, bootstrap, seed)
        report["calibration"] = {
            ts.task: calibration(subset(ts, "dev"), subset(ts, "test")) for ts in per_task
        }
        report["selective"] = selective_section(per_task)
        report["words"] = word_comparison(per_task, bootstrap, seed)
        per_task = [subset(ts, "test") for ts in per_task]
    report["tasks"] = [compare_task(ts, bootstrap, seed) for ts in per_task]
    errors = {ts.task: error_breakdown(ts) for ts in per_task}
    report["errors"] = {task: table for task, table in errors.items() if table}
    write_atomic(out_dir / "table.json", json.dumps(report, indent=1))
    text = markdown(report)
    write_atomic(out_dir / "table.md", text)
    print(text)
    print(f"wrote {out_dir}/table.md, table.json")
    return report


def summary_markdown(reports: dict[str, dict], estimators=HEAD_ROWS) -> str:
    """One ablation table over several `compare` reports (name -> report): each head's macro
    ROC-AUC and PRR per task, then the baselines (from the first report) for reference."""
    first = next(iter(reports.values()))
    tasks = [t["task"] for t in first["tasks"]]
    head = ["recipe", "estimator"] + [
        f"{t.removeprefix('sighead_')} {m}" for t in tasks for m in ("ROC-AUC", "PRR")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, report, est):
        cells = []
        for task in report["tasks"]:
            for m in METRICS:
                per = task["metrics"][m].get(est)
                cells.append(_cell(per["macro"]) if per else "–")
        return "| " + " | ".join([name, est, *cells]) + " |"

    for name, report in reports.items():
        lines += [row(name, report, e) for e in estimators]
    baselines = [e for e in CONFIDENCES if e not in HEAD_CONFIDENCES]  # the ceiling, for reference
    lines += [row("baseline", first, e) for e in baselines]
    return "\n".join(lines) + "\n"
