"""`sighead-eval lm-eval ...`: lm-eval's own command line, with the project's model and tasks.

It registers the `sighead` model, adds the project's task folder to whatever `--include_path` is
given (lm-eval takes one folder; this adds ours beside it), defaults `--model` to `sighead` and,
for the `sighead` model, turns on `--apply_chat_template` (pass `--no_chat_template` to score plain
text). Everything else is lm-eval's: `sighead-eval lm-eval --help` lists it. With `--output_path`
and `--log_samples`, each task's rejection curves (every estimator, with the oracle and random
rejection) are written beside its samples as `curves_<task>_<date>.json`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from .launch import WORLD_SIZE_VARIABLES, check_launch, launched_world_size  # noqa: F401  (re-exported)


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def prepare_argv(argv: list[str]) -> list[str]:
    """lm-eval arguments with this project's defaults filled in (see the module docstring)."""
    argv = list(argv)
    chat = "--no_chat_template" not in argv
    argv = [a for a in argv if a != "--no_chat_template"]
    if argv and argv[0] in ("ls", "validate"):
        return argv
    if argv and argv[0] == "run":
        argv = argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        return ["run", *argv]
    if _option(argv, "--model") is None:
        argv = ["--model", "sighead", *argv]
    if _option(argv, "--model") == "sighead":
        argv = _with_default_pretrained(argv)
        if chat and "--apply_chat_template" not in argv and _pretrained_has_template(argv):
            argv.append("--apply_chat_template")
    return ["run", *argv]


def _with_default_pretrained(argv: list[str]) -> list[str]:
    """Names the embedded default model in `--model_args` when no `pretrained` is given, so that
    lm-eval's results name it (and its output folder) rather than a random id."""
    from ..models import DEFAULT_MODEL

    args = _option(argv, "--model_args")
    if args is not None and ("pretrained=" in args or args.lstrip().startswith("{")):
        return argv
    merged = f"pretrained={DEFAULT_MODEL}" + (f",{args}" if args else "")
    out = [a for a in argv if not a.startswith("--model_args=")]
    if "--model_args" in out:
        i = out.index("--model_args")
        out[i + 1] = merged
        return out
    return [*out, "--model_args", merged]


def _pretrained_has_template(argv: list[str]) -> bool:
    """Whether the `pretrained` model in `--model_args` has a chat template (a base model such as
    the embedded gemma-3-270m has none: its prompts go in plain)."""
    from ..models import has_chat_template

    args = _option(argv, "--model_args") or ""
    if args.lstrip().startswith("{"):
        return True  # JSON model_args: left to lm-eval
    fields = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    trust = fields.get("trust_remote_code", "").lower() in ("true", "1", "yes")
    return has_chat_template(fields.get("pretrained"), trust)


def use_project_tasks() -> None:
    """Makes every lm-eval TaskManager in this process also index the project's tasks."""
    import lm_eval.tasks

    from .data import tasks_dir

    base = lm_eval.tasks.TaskManager
    if getattr(base, "_sighead", False):
        return
    ours = str(tasks_dir())

    class TaskManager(base):
        _sighead = True

        def __init__(self, *args, include_path=None, **kwargs):
            paths = [] if include_path is None else include_path
            paths = [str(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
            super().__init__(*args, include_path=[ours, *[p for p in paths if p != ours]], **kwargs)

    lm_eval.tasks.TaskManager = TaskManager


def write_curves(output_path: str, since: float) -> list[Path]:
    """Rejection curves of every estimator, per task, from the samples lm-eval logged after `since`."""
    from ..files import write_atomic
    from ..report.samples import curves_from_samples

    written = []
    for samples in sorted(Path(output_path).rglob("samples_*.jsonl")):
        if samples.stat().st_mtime < since:
            continue
        curves = curves_from_samples(samples)
        if not curves:
            continue
        target = samples.with_name(samples.name.replace("samples_", "curves_", 1).replace(".jsonl", ".json"))
        write_atomic(target, json.dumps(curves, indent=1))
        written.append(target)
    return written


def _model_args(argv: list[str]) -> dict[str, str]:
    args = _option(argv, "--model_args") or ""
    if args.lstrip().startswith("{"):
        try:
            return {str(k): str(v) for k, v in json.loads(args).items()}
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"--model_args is neither key=value pairs nor a JSON object: {args!r}") from None
    return dict(part.split("=", 1) for part in args.split(",") if "=" in part)


def check_argv(args: list[str]) -> None:
    """Bad input found before any model loads, each as one `ValueError` or `FileNotFoundError`:
    `--limit`, and for the `sighead` model its `adapter` (exists, is a Sigmoid Head, fits the model)
    and `scoring_batch_size`."""
    limit = _option(args, "--limit") or _option(args, "-L")
    if limit is not None:
        try:
            value = float(limit)
        except ValueError:
            value = math.nan
        if not value > 0 or (value > 1 and not value.is_integer()):
            raise ValueError(
                f"--limit should be a positive number of samples per task, or a fraction in (0, 1], got "
                f"{limit!r}"
            )
    if _option(args, "--model") != "sighead":
        return
    fields = _model_args(args)
    size = fields.get("scoring_batch_size")
    if size is not None and size != "auto" and not (size.isdigit() and int(size) > 0):
        raise ValueError(f"`scoring_batch_size` should be a positive integer or 'auto', got {size!r}")
    check_model_args(fields)
    adapter = fields.get("adapter")
    if adapter:
        from ..adapter.heads import check_adapter_fits

        trust = fields.get("trust_remote_code", "").lower() in ("true", "1", "yes")
        check_adapter_fits(adapter, fields.get("pretrained"), trust)


def check_model_args(fields: dict[str, str]) -> None:
    """The `sighead` model's own `--model_args` (its rule, its abstention threshold), and a key that
    is a near miss of a known one (`adaptr`): refused before lm-eval starts. Other unknown keys go
    on to HFLM and `from_pretrained`, as lm-eval passes them."""
    import difflib
    import inspect

    from lm_eval.models.huggingface import HFLM

    from ..dominant import check_rule
    from ..scoring import GenerationOptions
    from .model import SigheadLM

    ours = [p for p in inspect.signature(SigheadLM.__init__).parameters if p not in ("self", "kwargs")]
    known = set(ours) | {
        p for p in inspect.signature(HFLM.__init__).parameters if p not in ("self", "kwargs")
    }
    for key in fields:
        near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8) if key not in known else None
        if near:
            raise ValueError(
                f"--model_args: unknown key {key!r}; did you mean {near[0]!r}? (the sighead model's keys: "
                f"{', '.join(ours)}; the others are HFLM's)"
            )

    def number(key: str, default: float) -> float:
        try:
            return float(fields.get(key, default))
        except ValueError:
            raise ValueError(f"--model_args: `{key}` should be a number, got {fields[key]!r}") from None

    try:
        check_rule(number("p_jump", 0.3), number("epsilon", 0.005), fields.get("dominant_mode", "last"), None)
    except ValueError as err:
        raise ValueError(f"--model_args: {str(err).replace('`mode`', '`dominant_mode`')}") from None
    if fields.get("abstain_below") not in (None, "", "None"):
        GenerationOptions(abstain_below=number("abstain_below", 0))


#: The errors of a run that lm-eval raises (a task not found, a model argument its model refuses):
#: one line each, as the checks before it.
RUN_ERRORS = (ValueError, TypeError, OSError, RuntimeError, KeyError)


def main(argv: list[str]) -> int:
    try:  # bad input ends here in one line, before lm-eval or a model loads
        args = prepare_argv(argv)
        if args[0] == "run" and not any(a in ("-h", "--help") for a in args):
            check_launch()
            check_argv(args)
    except (ValueError, OSError) as err:
        print(f"sighead-eval lm-eval: error: {err}", file=sys.stderr)
        return 2

    from . import model  # noqa: F401  (registers `sighead`)

    use_project_tasks()
    from lm_eval.__main__ import cli_evaluate

    started = time.time()
    saved, sys.argv = sys.argv, ["sighead-eval lm-eval", *args]
    try:
        cli_evaluate()
    except RUN_ERRORS as err:
        hint = " (`sighead-eval lm-eval ls tasks` lists them)" if "Tasks not found" in str(err) else ""
        print(f"sighead-eval lm-eval: error: {str(err).strip() or type(err).__name__}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sighead-eval lm-eval: interrupted: stopped by Ctrl-C; lm-eval writes its results at the end, "
              "so none were written", file=sys.stderr)  # fmt: skip
        return 130
    finally:
        sys.argv = saved
    output = _option(args, "--output_path") or _option(args, "-o")
    if args[0] == "run" and output and ("--log_samples" in args or "-s" in args):
        for path in write_curves(output, started):
            print(f"sighead-eval: rejection curves written to {path}")
    return 0
