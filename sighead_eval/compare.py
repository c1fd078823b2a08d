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
`results/compare/<adapter>-<split>/` by default. This module is the command only: the statistics
are `sighead_eval.protocol`'s, the Markdown and the generated README blocks `report.comparison`'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .estimators import CONFIDENCES, confidence
from .files import check_output_dir, write_atomic
from .models import ModelOptions
from .protocol import *  # noqa: F403 (the protocol's names lived here: importable from here as before)
from .protocol import (
    FAMILIES,
    TaskSamples,
    calibration,
    compare_task,
    error_breakdown,
    family,
    preregistered,
    selective_section,
    subset,
    word_comparison,
)

# `X as X`: the report blocks that lived here, importable from here as before.
from .report.comparison import HEADLINE_END as HEADLINE_END
from .report.comparison import HEADLINE_START as HEADLINE_START
from .report.comparison import LEVERS_END as LEVERS_END
from .report.comparison import LEVERS_START as LEVERS_START
from .report.comparison import MODELS_END as MODELS_END
from .report.comparison import MODELS_START as MODELS_START
from .report.comparison import calibration_table as calibration_table
from .report.comparison import error_table as error_table
from .report.comparison import gap_rows as gap_rows
from .report.comparison import gap_table as gap_table
from .report.comparison import headline_block as headline_block
from .report.comparison import headline_table as headline_table
from .report.comparison import levers_block as levers_block
from .report.comparison import markdown
from .report.comparison import models_block as models_block
from .report.comparison import preregistered_sentences as preregistered_sentences
from .report.comparison import replace_headline as replace_headline
from .report.comparison import selective_table as selective_table
from .report.comparison import significant_summary as significant_summary
from .report.comparison import summary_markdown as summary_markdown
from .report.samples import task_samples
from .runs import check_split, check_tasks, choose_adapter, evaluate_tasks, saved_records, split_indices


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
    estimators: str | tuple[str, ...] | None = None,
) -> dict:
    """Runs the protocol (see the module docstring) with the model and head `options` name
    (default: the embedded model with the shipped head); returns the report it writes.
    `estimators`: the token estimators to compute ('|'-separated or a tuple; default: all but the
    opt-in ones), e.g. with `combined`, whose rows then join the tables."""
    from dataclasses import replace

    from .adapter.heads import check_adapter_fits
    from .models import DEFAULT_MODEL

    options = options or ModelOptions()
    options = replace(options, adapter=choose_adapter(options.adapter, options.model))
    model, adapter = options.model, options.adapter
    check_split(split)
    names = check_tasks(tasks)
    if estimators is not None:
        from .estimators import check_estimators

        try:
            estimators = check_estimators(estimators)
        except ValueError as err:
            raise ValueError(f"--estimators: {err}") from None
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
            options = ScoringOptions(
                chat_template=False, batch_size=batch_size, truncation="left", estimators=estimators
            )
            per_task = _rescore(saved, names, lm, tokenizer, options)
        else:  # the confidences as the saved run computed them
            per_task = [task_samples(t, saved["samples"][t]) for t in names]
        # keep the requested split of the saved samples
        per_task = [subset(ts, "all" if split == "both" else split) for ts in per_task]
    else:
        model_args = options.lm_eval_args()
        if estimators is not None:
            model_args["estimators"] = "|".join(estimators)
        run = evaluate_tasks(names, model_args, lambda task: split_indices(task, split), batch_size, out_dir)
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
