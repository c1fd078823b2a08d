"""`sighead-eval demo`: the main job. The embedded default model with the shipped Sigmoid Head runs
the project's offline lm-eval tasks; every estimator is scored on the same outputs.

Writes to the results folder (default `results/demo/`):
- `lm_eval_results.json`: lm-eval's results with every sample and its per-token scores;
- `table.md`, `table.csv`: a row per estimator, ROC-AUC, PRR, AP, ECE and Brier per task, the best
  value per column marked;
- `plots/`: rejection curves and reliability diagrams per task, a bar chart of ROC-AUC and PRR;
- `report.html`: one self-contained page with the table, the plots and sample outputs, each token
  coloured by its Sigmoid Head confidence beside its softmax probability.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

OFFLINE_TASKS = ("sighead_geo_qa", "sighead_arith", "sighead_wiki_facts")
# Samples per task by default: the whole demo stays under 10 minutes on 2 CPU cores.
DEFAULT_LIMITS = {"sighead_geo_qa": 400, "sighead_arith": 300, "sighead_wiki_facts": 1000}
SHIPPED_NAME = "smollm2-135m-instruct-wiki"


def shipped_adapter() -> Path | None:
    """The default head in `adapters/`: beside the package in a checkout (or an editable install),
    else under the current directory (an installed wheel run from the repository)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = root / "adapters" / SHIPPED_NAME
        if (path / "adapter_config.json").is_file():
            return path
    return None


def _check_output(output: str) -> Path:
    path = Path(output)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"results folder {str(path)!r} is not writable ({err.strerror}); pass --output DIR"
        ) from None
    return path


def check_tasks(tasks: str | list[str] | None) -> list[str]:
    """The task names asked for, checked against the project's tasks."""
    from lm_eval.tasks import TaskManager

    from .harness import tasks_dir

    names = list(OFFLINE_TASKS) if not tasks else tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [n.strip() for n in names if n.strip()]
    known = set(TaskManager(include_path=str(tasks_dir()), include_defaults=False).all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown task(s) {unknown}; the demo runs the project's tasks: {', '.join(sorted(known))} "
            f"(default: {','.join(OFFLINE_TASKS)})"
        )
    return names


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_tasks(
    names: list[str], model: str | None, adapter: str | None, pick, batch_size: int, out_dir: Path
):
    """One lm-eval run of the project's tasks with the `sighead` model; `pick(task)` gives the
    document indices of each task to run. Writes `lm_eval_results.json` (every sample, per-token
    scores) to `out_dir` atomically and returns lm-eval's output."""
    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict
    from lm_eval.utils import handle_non_serializable

    from .harness import tasks_dir
    from .models import DEFAULT_MODEL

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    built = get_task_dict(names, manager)  # built once, here; `pick` may read the documents
    out = lm_eval.simple_evaluate(
        model="sighead",
        model_args=f"pretrained={model or DEFAULT_MODEL}" + (f",adapter={adapter}" if adapter else ""),
        tasks=[built[t] for t in names],
        samples={t: pick(built[t]) for t in names},
        batch_size=batch_size,
        apply_chat_template=True,
        task_manager=manager,
        log_samples=True,
    )
    dumped = json.dumps(out, default=handle_non_serializable, ensure_ascii=False)
    _write_atomic(out_dir / "lm_eval_results.json", dumped)
    return out


def run_demo(
    model: str | None = None,
    adapter: str | None = None,
    output: str = "results/demo",
    tasks: str | list[str] | None = None,
    limit: int | None = None,
    batch_size: int = 8,
) -> int:
    from tqdm.auto import tqdm

    from .models import DEFAULT_MODEL, check_adapter_fits

    # Bad input stops here, before any model work.
    names = check_tasks(tasks)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit should be a positive number of samples per task, got {limit!r}")
    out_dir = _check_output(output)
    shipped = shipped_adapter() if adapter is None and model is None else None
    adapter = str(shipped) if shipped is not None else adapter
    if adapter is not None:
        check_adapter_fits(adapter, model)
    else:
        print("note: no adapter given: the Sigmoid Head rows are left out; the softmax baselines run.")

    from .report import plots, table_csv, table_markdown, task_samples
    from .report.page import render_page
    from .report.table import estimator_table, table_text

    started = time.time()
    print(
        f"sighead-eval demo: {model or DEFAULT_MODEL} with {adapter or 'no head'}; tasks {', '.join(names)}"
    )
    out = evaluate_tasks(
        names,
        model,
        adapter,
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
    _write_atomic(out_dir / "table.md", table_markdown(table))
    _write_atomic(out_dir / "table.csv", table_csv(table))
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
        "sighead-eval demo: is the confidence worth trusting?", intro, table, per_task, figures
    )
    _write_atomic(out_dir / "report.html", page)
    stages.close()

    print()
    print(table_text(table))
    print(intro)
    print(f"wrote {out_dir}/: table.md, table.csv, lm_eval_results.json, report.html, plots/")
    return 0
