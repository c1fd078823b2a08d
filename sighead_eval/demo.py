"""`sighead-eval demo`: the main job. The embedded default model with the shipped Sigmoid Head runs
the project's offline lm-eval tasks; every estimator is scored on the same outputs.

Writes to the results folder (default `results/demo/`):
- `lm_eval_results.json`: lm-eval's results with every sample and its per-token scores;
- `table.md`: a panel per task, a row per estimator, ROC-AUC, PRR and AP pooled over the task's
  samples and raw ECE and Brier, the best value per column marked, then a word-level panel per task
  that labels its errors (which tokens are wrong: `report.words`); `table.csv`: the estimators'
  table, one row per estimator;
- `plots/`: rejection curves and reliability diagrams per task, a bar chart of ROC-AUC and PRR;
- `report.html`: one self-contained page with the table, the plots and sample outputs, each token
  coloured by its Sigmoid Head confidence beside its softmax probability, the labelled error span
  underlined.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from .files import check_output_dir, write_atomic
from .models import ModelOptions
from .runs import DEFAULT_LIMITS, check_tasks, choose_adapter, evaluate_tasks


def run_demo(
    options: ModelOptions | None = None,
    output: str = "results/demo",
    tasks: str | list[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
) -> int:
    """Runs the demo (see the module docstring); `options` name the model and head (default: the
    embedded model with the shipped head)."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .adapter.heads import check_adapter_fits
    from .models import DEFAULT_MODEL

    # Bad input stops here, before any model work.
    options = options or ModelOptions()
    names = check_tasks(tasks)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit should be a positive number of samples per task, got {limit!r}")
    out_dir = check_output_dir(output)
    options = replace(options, adapter=choose_adapter(options.adapter, options.model))
    model, adapter = options.model, options.adapter
    if adapter is not None:
        check_adapter_fits(adapter, model, options.trust_remote_code)
    else:
        print("note: no adapter given: the Sigmoid Head rows are left out; the softmax baselines run.")

    from .protocol import word_level_rows
    from .report import plots, table_csv, table_markdown, task_samples
    from .report.page import render_page
    from .report.table import POOLED_NOTE, estimator_table, table_text
    from .report.words import WORD_NOTE, word_table_markdown, word_table_text

    started = time.time()
    print(
        f"sighead-eval demo: {model or DEFAULT_MODEL} with {adapter or 'no head'}; tasks {', '.join(names)}"
    )
    out = evaluate_tasks(
        names,
        options.lm_eval_args(),
        lambda task: list(
            range(min(limit or DEFAULT_LIMITS.get(task.config.task, 200), len(task.eval_docs)))
        ),
        batch_size,
        out_dir,
    )
    evaluated = time.time() - started

    stages = tqdm(total=2 + 2 * len(names), desc="writing the report", unit="file")
    per_task = [task_samples(t, out["samples"][t]) for t in names]
    table = estimator_table(out["results"], names)
    counts = {ts.task: ts.quality.size for ts in per_task}
    words = {ts.task: word_level_rows(ts) for ts in per_task}
    words = {task: rows for task, rows in words.items() if rows}
    word_md = "".join("\n" + word_table_markdown(task, rows) for task, rows in words.items())
    write_atomic(out_dir / "table.md", table_markdown(table, counts) + word_md)
    write_atomic(out_dir / "table.csv", table_csv(table))
    stages.update(1)
    figures: dict[str, list[Path]] = {
        "": [plots.bar_plot(out["results"], names, out_dir / "plots" / "auroc_prr.png")]
    }
    stages.update(1)
    for ts in per_task:
        figures[ts.task] = [plots.rejection_plot(ts, out_dir / "plots" / f"{ts.task}_rejection.png")]
        stages.update(1)
        if ts.binary:
            figures[ts.task].append(
                plots.reliability_plot(ts, out_dir / "plots" / f"{ts.task}_reliability.png")
            )
        stages.update(1)
    n = {ts.task: ts.quality.size for ts in per_task}
    intro = (
        f"{model or DEFAULT_MODEL}, Sigmoid Head {adapter or '(none)'}; "
        + ", ".join(f"{t} ({k} samples)" for t, k in n.items())
        + f". Evaluated in {evaluated / 60:.1f} min on {os.cpu_count()} CPU cores"
        + f", {time.strftime('%Y-%m-%d')}."
    )
    page = render_page(
        "sighead-eval demo: is the confidence worth trusting?",
        intro,
        table,
        per_task,
        figures,
        decode=_decoder(options),
        words=words,
    )
    write_atomic(out_dir / "report.html", page)
    stages.close()

    print()
    print(table_text(table, counts))
    print(textwrap.fill(POOLED_NOTE, 100))
    for task, rows in words.items():
        print()
        print(word_table_text(task, rows))
    if words:
        print(textwrap.fill(WORD_NOTE, 100))
    print(intro)
    print(f"wrote {out_dir}/: table.md, table.csv, lm_eval_results.json, report.html, plots/")
    return 0


def _decoder(options: ModelOptions):
    """The model's tokenizer's `decode`, for the page to join characters split over byte-level
    tokens (the tokenizer alone is loaded, not the model)."""
    from transformers import AutoTokenizer

    from .models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(options.model), trust_remote_code=options.trust_remote_code
    )
    return lambda ids: tokenizer.decode(list(ids))
