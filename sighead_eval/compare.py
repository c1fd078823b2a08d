"""`sighead-eval compare`: the recipe-research protocol. Is a head better than its baselines, on
evidence that tuning cannot fool?

- Every sample of the offline tasks has a fixed `split` (dev or test, by a hash of its id). Recipes
  are chosen on `--split dev`; `--split test` is run for the recipes kept, all of them.
- Metrics (ROC-AUC, PRR) are computed per question type and macro-averaged over types, since
  types differ in accuracy and pooled figures mix them up.
- Each Sigmoid Head aggregation is compared with softmax (product and mean) and BoostedProb
  (product and mean) by a paired bootstrap of the macro difference (samples resampled within each
  type and class, the same resample for both estimators): the 95 % interval is reported. The
  length-only baseline (negated answer length) is a row like any other, so a win that is only a
  length effect shows.
- `--outputs RUN.json` rescored saved outputs (those of an earlier run, whatever head made them:
  the outputs of the frozen model do not depend on the head) instead of generating again.

Writes `table.md` and `table.json` (and `lm_eval_results.json` when it ran lm-eval) under
`results/compare/<adapter>-<split>/` by default.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from . import metrics as core
from .harness.confidence import ESTIMATORS, confidence, scores_of
from .report.samples import TaskSamples, judged, task_samples

METRICS = ("auroc", "prr")
BASELINES = (
    "softmax_prod",
    "softmax_mean",
    "softmax_min",
    "boostedprob_prod",
    "boostedprob_mean",
    "boostedprob_min",
)
HEAD_ROWS = ("sigmoid_mean", "sigmoid_prod", "sigmoid_min")


# -- statistics -----------------------------------------------------------------------------------
def _auroc(c: np.ndarray, q: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = q == 1
    n_p, n_n = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(c)
    return float((ranks[pos].sum() - n_p * (n_p + 1) / 2) / (n_p * n_n))


def _metric(name: str, c: np.ndarray, q: np.ndarray) -> float:
    return _auroc(c, q) if name == "auroc" else core.prr(c, q)


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


def bootstrap_macro(ts: TaskSamples, estimators, metric: str, iters: int = 1000, seed: int = 0) -> dict:
    """`{estimator: (iters,) macro metric}` over bootstrap resamples stratified by type and class.
    Every estimator sees the same resamples, so differences between them are paired."""
    groups = type_groups(ts)
    rng = np.random.default_rng(seed)
    q = ts.quality
    strata = [(idx[q[idx] == 1], idx[q[idx] == 0]) for idx in groups.values()]
    out = {e: np.zeros(iters) for e in estimators}
    for i in range(iters):
        for pos, neg in strata:
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
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


# -- tables ---------------------------------------------------------------------------------------
def _cell(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown(report: dict) -> str:
    lines = [f"# Comparison: {report['adapter']} on the {report['split']} split", ""]
    lines.append(f"Model {report['model']}; {report['date']}; bootstrap {report['bootstrap']} resamples.")
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
def _split_indices(task, split: str) -> list[int]:
    docs = task.eval_docs
    return [i for i, d in enumerate(docs) if split == "all" or d.get("split") == split]


def _rescore(saved: dict, names: list[str], model, tokenizer, options) -> list[TaskSamples]:
    """Scores the saved outputs of an earlier run with `model` (its current head)."""
    from .frozen import unwrap
    from .harness.model import fit_response
    from .scoring import model_context_length, score

    out = []
    for name in names:
        base = task_samples(name, saved["samples"][name])
        first = sorted(
            (s for s in saved["samples"][name] if s["filter"] == "sigmoid_mean"), key=lambda s: s["doc_id"]
        )
        records = []
        for s in first:
            context = (
                s["arguments"][0][0]
                if isinstance(s["arguments"], list)
                else s["arguments"]["gen_args_0"]["arg_0"]
            )
            # As HFLM encodes a context: special tokens as the tokenizer adds them, unless the
            # (chat-templated) text already starts with the BOS token.
            bos = tokenizer.bos_token
            special = not (bos and context.startswith(bos))
            ids = tokenizer(context, add_special_tokens=special)["input_ids"]
            response = judged(s)["response"]
            cont = tokenizer(response, add_special_tokens=False)["input_ids"]
            ids, cont = fit_response(ids, cont, model_context_length(unwrap(model)))
            records.append({"prompt_token_ids": ids, "response": response, "response_token_ids": cont})
        scored = score(model, tokenizer, records, options)
        confs = {}
        for e in ESTIMATORS:
            values = [confidence(scores_of(r, r.response), e) for r in scored]
            if all(v is not None for v in values):
                confs[e] = np.array(values, dtype=float)
        out.append(TaskSamples(name, base.docs, base.quality, confs, [r.response for r in scored]))
    return out


def run_compare(
    adapter: str | None,
    model: str | None = None,
    tasks: list[str] | None = None,
    split: str = "dev",
    output: str | None = None,
    outputs: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    rescore: bool = True,
) -> dict:
    from .demo import OFFLINE_TASKS, _check_output, _write_atomic, check_tasks, evaluate_tasks
    from .models import DEFAULT_MODEL, check_adapter_fits

    if split not in ("dev", "test", "all"):
        raise ValueError(f"--split should be dev, test or all, got {split!r}")
    names = check_tasks(tasks or list(OFFLINE_TASKS))
    label = Path(adapter).name if adapter else "no-head"
    out_dir = _check_output(output or f"results/compare/{label}-{split}")
    if adapter is not None:
        check_adapter_fits(adapter, model)
    if outputs is not None and not Path(outputs).is_file():
        raise FileNotFoundError(
            f"--outputs {outputs!r} does not exist; pass an lm_eval_results.json of a run"
        )
    started = time.time()
    if outputs is not None:
        from .models import load_model
        from .scoring import ScoringOptions

        saved = json.loads(Path(outputs).read_text())
        missing = [t for t in names if t not in saved.get("samples", {})]
        if missing:
            raise ValueError(
                f"{outputs} holds no samples of {missing}; it has {sorted(saved.get('samples', {}))}"
            )
        if rescore:
            lm, tokenizer = load_model(model, adapter=adapter)
            options = ScoringOptions(chat_template=False, batch_size=batch_size, truncation="left")
            per_task = _rescore(saved, names, lm, tokenizer, options)
        else:  # the confidences as the saved run computed them
            per_task = [task_samples(t, saved["samples"][t]) for t in names]
        for ts in per_task:  # keep the requested split of the saved samples
            keep = np.array([split == "all" or d.get("split") == split for d in ts.docs])
            ts.docs = [d for d, k in zip(ts.docs, keep) if k]
            ts.quality = ts.quality[keep]
            ts.confidence = {e: v[keep] for e, v in ts.confidence.items()}
    else:
        run = evaluate_tasks(
            names, model, adapter, lambda task: _split_indices(task, split), batch_size, out_dir
        )
        per_task = [task_samples(t, run["samples"][t]) for t in names]
    report = {
        "adapter": adapter or "(none)",
        "model": model or DEFAULT_MODEL,
        "split": split,
        "date": time.strftime("%Y-%m-%d"),
        "bootstrap": bootstrap,
        "seconds": round(time.time() - started, 1),
        "tasks": [compare_task(ts, bootstrap, seed) for ts in per_task],
    }
    _write_atomic(out_dir / "table.json", json.dumps(report, indent=1))
    text = markdown(report)
    _write_atomic(out_dir / "table.md", text)
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
    baselines = [e for e in ESTIMATORS if not e.startswith("sigmoid")]
    lines += [row("baseline", first, e) for e in baselines]
    return "\n".join(lines) + "\n"
