"""Running the project's lm-eval tasks: what `demo`, `compare` and `curves` share.

- which tasks run by default, and how many samples the demo takes of each;
- which Sigmoid Head runs when none is named (`choose_adapter`: the shipped head, for the default
  model only);
- one lm-eval run of the tasks with the `sighead` model, its samples logged (`evaluate_tasks`);
- a saved run's outputs as scoring records, tokenised as that run tokenised them (`saved_records`:
  `compare --outputs` and `curves` score them again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .files import write_atomic

OFFLINE_TASKS = ("sighead_geo_qa", "sighead_arith", "sighead_wiki_facts", "sighead_geo_paraphrase")
# Samples per task in the demo: the whole demo stays near 10 minutes on 2 CPU cores.
DEFAULT_LIMITS = {
    "sighead_geo_qa": 400,
    "sighead_arith": 300,
    "sighead_wiki_facts": 1000,
    "sighead_geo_paraphrase": 600,
}
SHIPPED_NAME = "smollm2-135m-instruct-wiki"
#: dev (choose recipes), test (report them), all, or both: the pre-registered comparison, which
#: chooses on the dev half and reports on the test half of one run.
SPLITS = ("dev", "test", "all", "both")


def shipped_adapter() -> Path | None:
    """The default head in `adapters/`: beside the package in a checkout (or an editable install),
    else under the current directory (an installed wheel run from the repository)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = root / "adapters" / SHIPPED_NAME
        if (path / "adapter_config.json").is_file():
            return path
    return None


def choose_adapter(adapter: str | None, model: str | None) -> str | None:
    """The head to run: the one named; else, on the default model, the shipped head; else none."""
    if adapter is not None:
        return str(adapter)
    shipped = shipped_adapter() if model is None else None
    return None if shipped is None else str(shipped)


def check_tasks(tasks: str | list[str] | None) -> list[str]:
    """The task names asked for (default: the offline tasks), checked against the project's tasks."""
    from lm_eval.tasks import TaskManager

    from .harness import tasks_dir

    names = list(OFFLINE_TASKS) if not tasks else tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [n.strip() for n in names if n.strip()]
    known = set(TaskManager(include_path=str(tasks_dir()), include_defaults=False).all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown task(s) {unknown}; the project's tasks are: {', '.join(sorted(known))} "
            f"(default: {','.join(OFFLINE_TASKS)})"
        )
    return names


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"--split should be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def split_indices(task, split: str) -> list[int]:
    """Indices of a task's documents in `split` (dev, test, or all)."""
    return [i for i, d in enumerate(task.eval_docs) if split in ("all", "both") or d.get("split") == split]


def evaluate_tasks(
    names: list[str],
    model_args: dict,
    pick: Callable,
    batch_size: int,
    out_dir: Path,
):
    """One lm-eval run of the project's tasks with the `sighead` model; `pick(task)` gives the
    document indices of each task to run. `model_args`: the `sighead` model's arguments
    (`pretrained`, `adapter`, `dtype`, `device`; None values are left out). Writes
    `lm_eval_results.json` (every sample, per-token scores) to `out_dir` atomically and returns
    lm-eval's output. Prompts go through the chat template when the model has one (a base model's
    go in plain)."""
    import json

    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict
    from lm_eval.utils import handle_non_serializable

    from .harness import tasks_dir
    from .models import has_chat_template

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    built = get_task_dict(names, manager)  # built once, here; `pick` may read the documents
    out = lm_eval.simple_evaluate(
        model="sighead",
        model_args=",".join(f"{k}={v}" for k, v in model_args.items() if v is not None),
        tasks=[built[t] for t in names],
        samples={t: pick(built[t]) for t in names},
        batch_size=batch_size,
        apply_chat_template=has_chat_template(
            model_args.get("pretrained"), bool(model_args.get("trust_remote_code"))
        ),
        task_manager=manager,
        log_samples=True,
    )
    dumped = json.dumps(out, default=handle_non_serializable, ensure_ascii=False)
    write_atomic(out_dir / "lm_eval_results.json", dumped)
    return out


def saved_records(saved: dict, name: str, model, tokenizer) -> list[dict]:
    """Scoring records (prompt and response token ids) of task `name`'s saved outputs, one per
    document in doc order, tokenised as the `sighead` lm-eval model tokenised them."""
    from .frozen import unwrap
    from .report.samples import judged
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
