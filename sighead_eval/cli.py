"""`sighead-eval` command line. Option help comes from the config dataclasses' field metadata."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .files import (
    check_json_safe,
    check_not_the_input,
    check_output_file,
    non_finite_field,
    read_jsonl_lines,
    write_jsonl_atomic,
)
from .models import ModelOptions
from .runs import OFFLINE_TASKS, SPLITS
from .scoring import GenerationOptions, ScoringOptions


def _add_dataclass_options(
    parser: argparse.ArgumentParser, cls, only=None, skip=(), given_only=False
) -> None:
    """One option per field of the dataclass `cls` (or of the fields in `only`), help from the
    field's metadata. `given_only`: an option not given leaves no attribute (a preset fills it)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        help_text = f.metadata.get("help", "")
        if base is bool:
            default = argparse.SUPPRESS if given_only else f.default
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            default = argparse.SUPPRESS if given_only else f.default
            kind = _int_or_word if int in args and str in args else base  # e.g. batch_size: 8 or 'auto'
            group.add_argument(
                flag, dest=f.name, type=kind, default=default, help=f"{help_text} (default: {f.default})"
            )


def _int_or_word(text: str) -> int | str:
    """An option that takes a number or a word (`--batch-size 8`, `--batch-size auto`); the config
    dataclass checks which words it takes."""
    try:
        return int(text)
    except ValueError:
        return text


def _options(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)})


#: What an interrupted command says, unless it says more (train): every file is written atomically.
INTERRUPTED = (
    "stopped by Ctrl-C; each file it writes is written whole or not at all, so none is left half-written"
)
MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelOptions))


def add_model_options(parser: argparse.ArgumentParser, only=MODEL_OPTIONS) -> None:
    """The model options (`--model`, `--adapter`, `--dtype`, `--device`, `--trust-remote-code`) of
    every command, from `ModelOptions`; `only` keeps those a command takes."""
    _add_dataclass_options(parser, ModelOptions, only=only)


def cmd_score(ns: argparse.Namespace) -> int:
    from .adapter.io import check_adapter_dir
    from .models import check_device, check_model_name
    from .scoring import generate, score

    options = _options(ScoringOptions, ns)
    generation = _options(GenerationOptions, ns)
    model_options = _options(ModelOptions, ns)
    if generation.abstain_below is not None and not ns.generate:
        raise ValueError(
            "--abstain-below stops a response while it is generated; it needs --generate (force-decoded "
            "responses are scored whole: compare their sequence scores with the threshold instead)"
        )
    check_output_file(ns.output)
    check_not_the_input(ns.input, ns.output)
    records, where = read_jsonl_lines(ns.input)  # bad input fails before any model work
    check_json_safe(records, lines=where)
    check_record_shapes(records, where, need_response=not ns.generate)
    check_device(model_options.device)
    check_model_name(model_options.model)
    model_options = _score_adapter(model_options, ns.no_adapter)
    if model_options.adapter:
        check_adapter_dir(model_options.adapter)
    model, tokenizer = model_options.load()
    if ns.generate:
        results = generate(model, tokenizer, records, options, generation)
    else:
        results = score(model, tokenizer, records, options)
    rows = [r.to_dict() for r in results]
    if not ns.tokens:
        for row in rows:
            row.pop("tokens")
            row.pop("words")
    for i, row in enumerate(rows):
        field = non_finite_field(row)
        if field is not None:
            dtype = model_options.dtype
            raise ValueError(
                f"{where[i] if len(rows) == len(where) else f'record {i + 1}'}: its scores hold a non-finite "
                f"number (`{field}`), which JSON cannot carry: the model's or the head's weights hold NaN or "
                "infinite values"
                + (f", or --dtype {dtype} overflows (try float32)" if dtype != "float32" else "")
                + "; nothing was written"
            )
    write_jsonl_atomic(ns.output, rows)
    return 0


def check_record_shapes(records: list, where: list[str], need_response: bool) -> None:
    """Each record in an accepted shape (with a response to score, unless generating), before any
    model loads; a bad one is named by its file and line."""
    import re

    from .scoring.inputs import _split_record

    for i, record in enumerate(records):
        try:
            _split_record(record, i, need_response)
        except (ValueError, TypeError) as err:
            message = re.sub(rf"^record {i}:? ?", "", str(err))
            hint = " (or pass --generate to write the responses)" if "no `response`" in message else ""
            raise type(err)(f"{where[i]}: {message}{hint}") from None


def _score_adapter(options: ModelOptions, no_adapter: bool) -> ModelOptions:
    """The head `score` runs, said on stderr (stdout may be the output): the one given; else the
    shipped head on the embedded default model; else none, with a warning that the Sigmoid Head's
    scores are left out. `--no-adapter` asks for the baselines alone, silently."""
    from dataclasses import replace

    from .runs import choose_adapter

    if no_adapter:
        if options.adapter:
            raise ValueError("--adapter and --no-adapter contradict each other; give one")
        return options
    if options.adapter:
        return options
    shipped = choose_adapter(None, options.model)
    if shipped is not None:
        print(f"sighead-eval score: no --adapter given: using the shipped head {shipped}", file=sys.stderr)
        return replace(options, adapter=shipped)
    print(
        f"sighead-eval score: warning: no --adapter for {options.model or 'this model'}: only the softmax "
        "baselines are scored, the sigmoid_* and hybrid_* scores are left out (train a head with "
        "`sighead-eval train`; --no-adapter silences this)",
        file=sys.stderr,
    )
    return options


def cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        _options(ModelOptions, ns),
        output=ns.output,
        tasks=ns.tasks,
        limit=ns.limit,
        batch_size=ns.batch_size,
    )


def cmd_train(ns: argparse.Namespace) -> int:
    import shlex

    from .training import train

    config = train_config(ns)
    info = train(config, recipe_command="sighead-eval train " + shlex.join(ns.argv_rest))
    print(json.dumps({k: v for k, v in info.items() if k != "recipe_command"}, indent=1))
    return 0


def train_config(ns: argparse.Namespace):
    """`train`'s settings: the `--recipe` preset, and on top of it the options given."""
    from .training import TrainConfig

    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(ns, f.name)}
    return TrainConfig.from_recipe(given.pop("recipe", "paper"), **given)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run the project's tasks (demo, compare)."""
    add_model_options(parser)
    parser.add_argument(
        "--tasks",
        default=None,
        help="Comma-separated task names (default: the offline tasks, " + ",".join(OFFLINE_TASKS) + ")",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="Generation and scoring batch size")


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals in one line like every other (no usage block): the command, the
    mistake, and where the accepted values are listed."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_head_writer_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that write a head's adapter folder (init-head, import-head)."""
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="Let transformers run the model's code"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into a folder that is not empty: replace adapter_config.json, adapter_model.safetensors "
        "and README.md there (without it, only a new or empty folder is written)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sighead-eval", description="Sigmoid Head confidence for language models, beside its baselines."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "score",
        help="Score responses (JSONL in, JSONL out)",
        description="Each input line is {'prompt', 'response'} or {'messages': [...]}; with --generate the "
        "model writes the responses itself. Each output line adds per-token, per-word and sequence scores.",
    )
    p.add_argument("--input", required=True, help="JSONL file, or - for stdin")
    p.add_argument("--output", default="-", help="JSONL file (written atomically), or - for stdout")
    p.add_argument("--generate", action="store_true", help="Generate the responses instead of force-decoding")
    p.add_argument(
        "--tokens",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Include per-token and per-word scores",
    )
    add_model_options(p)
    p.add_argument(
        "--no-adapter",
        action="store_true",
        help="Score the softmax baselines only, on purpose (without it, a model with no --adapter and no "
        "shipped head is scored so too, with a warning)",
    )
    _add_dataclass_options(p, ScoringOptions)
    _add_dataclass_options(p, GenerationOptions)
    p.set_defaults(func=cmd_score)

    from .training import TrainConfig

    t = sub.add_parser(
        "train",
        help="Train a Sigmoid Head on a frozen model",
        description="Paper defaults (K=10 negatives, half unigram / half softmax at T=2, lr 1e-4, cosine, "
        "early stopping with patience 3, at most 3 epochs, seed 0); `--recipe authors-2026` for the authors' "
        "current config, any option beside it overriding it. Runs data-parallel under `accelerate launch`.",
    )
    add_model_options(t, only=("model", "dtype", "device"))
    _add_dataclass_options(t, TrainConfig, skip=MODEL_OPTIONS, given_only=True)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser(
        "demo",
        help="Run the offline lm-eval tasks on the default model with every estimator; table, plots, HTML",
        description="Loads the embedded model with the shipped Sigmoid Head, runs the offline tasks through "
        "lm-eval, prints one table (a row per estimator; ROC-AUC, PRR, AP, ECE, Brier per task) and writes "
        "it with plots and an HTML page of token-coloured samples to the results folder.",
    )
    _add_run_options(d)
    d.add_argument(
        "--limit",
        type=int,
        default=None,
        help="Samples per task (default: 400 geo_qa, 300 arith, 1000 wiki_facts; under 10 min on 2 cores)",
    )
    d.add_argument("--output", default="results/demo", help="Results folder")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser(
        "compare",
        help="Recipe-research protocol: per-type and macro ROC-AUC/PRR with paired bootstrap intervals",
        description="Runs the offline tasks on one split (dev to choose recipes, test to report them) and "
        "compares each Sigmoid Head aggregation with softmax and BoostedProb (product, mean and minimum) "
        "per question type, macro-averaged, with 95 %% paired bootstrap intervals of the difference.",
    )
    _add_run_options(c)
    c.add_argument(
        "--split",
        default="dev",
        choices=list(SPLITS),
        help="dev (choose recipes), test, all, or both: the pre-registered comparison (choose one head "
        "aggregation and one rival per task on dev, report the test half, Holm-corrected)",
    )
    c.add_argument(
        "--outputs",
        default=None,
        help="Rescore the outputs saved by an earlier run (lm_eval_results.json; several, comma-separated, "
        "each giving its tasks)",
    )
    c.add_argument(
        "--output", default=None, help="Results folder (default: results/compare/<adapter>-<split>)"
    )
    c.add_argument(
        "--rescore",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="With --outputs: score the saved outputs with --adapter (default), or take the saved scores",
    )
    c.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples")
    _add_estimators_option(
        c, " (e.g. adding the opt-in 'combined': its rows join the tables beside the rest)"
    )
    c.set_defaults(func=cmd_compare)

    cv = sub.add_parser(
        "curves",
        help="Score many heads (trained adapters, `train --snapshots` runs) on one frozen pass over saved "
        "task outputs: macro ROC-AUC/PRR per task against tokens trained",
        description="Reads the outputs a `compare` or `demo` run saved (lm_eval_results.json), runs the "
        "frozen model once over one half of them, then scores every head with one dot product a token. "
        "Writes curves.md, curves.json and curves.png.",
    )
    cv.add_argument("runs", nargs="+", help="Adapter directories or `train --snapshots` output directories")
    cv.add_argument("--outputs", required=True, help="lm_eval_results.json of a compare or demo run")
    cv.add_argument("--split", default="dev", choices=["dev", "test", "all"], help="Which half to score")
    cv.add_argument("--tasks", default=None, help="Comma-separated tasks (default: every task in --outputs)")
    cv.add_argument("--model", default=None, help="Base model of the saved run (default: the embedded one)")
    cv.add_argument("--batch-size", type=int, default=8, help="Frozen-pass batch size")
    cv.add_argument("--output", default=None, help="Results folder (default: results/curves/<split>)")
    cv.set_defaults(func=cmd_curves)

    sl = sub.add_parser(
        "selective",
        help="Risk-controlled selective generation on a saved run: per estimator, a threshold with a "
        "guaranteed selective risk, its coverage and realised risk",
        description="Reads a saved run (the lm_eval_results.json of demo or compare, or its folder). For "
        "each binary task and each probability estimator it chooses, on the dev half, the least "
        "conservative confidence threshold whose selective risk is at most --target-risk with "
        "probability at least 1 - --delta (Learn then Test, arXiv:2110.01052: binomial tail p-values, "
        "Bonferroni over a fixed grid), and reports its coverage and realised risk on the test half. "
        "Writes selective.md, selective.json and selective.png.",
    )
    sl.add_argument("run", help="lm_eval_results.json of a demo or compare run, or the folder holding it")
    sl.add_argument("--target-risk", type=float, default=0.1, help="alpha: the selective risk allowed")
    sl.add_argument("--delta", type=float, default=0.1, help="the chance the guarantee may fail")
    sl.add_argument(
        "--tasks", default=None, help="Comma-separated task names (default: every task of the run)"
    )
    sl.add_argument("--output", default=None, help="Results folder (default: results/selective)")
    sl.set_defaults(func=cmd_selective)

    cp = sub.add_parser(
        "compress",
        help="Store a head compactly: the rows it changed (lossless) or a low-rank difference from the "
        "LM head (lossy; measure it with `curves` before use)",
        description="Writes a copy of ADAPTER whose weights hold only what the head adds to the LM head: "
        "`--storage rows` (the changed rows and their ids) or `--storage lowrank --rank R` (a truncated "
        "SVD of the difference). Every loading route expands it back, checked for shape.",
    )
    cp.add_argument("adapter", help="Adapter directory to compress")
    cp.add_argument("--output", required=True, help="Directory for the compact copy")
    cp.add_argument("--storage", choices=["rows", "lowrank"], default="lowrank")
    cp.add_argument("--rank", type=int, default=64, help="Rank of the low-rank difference")
    cp.add_argument("--model", default=None, help="Base model of the adapter (default: the embedded one)")
    cp.add_argument("--storage-dtype", default="float16", help="float16, bfloat16 or float32")
    cp.set_defaults(func=cmd_compress)

    nh = sub.add_parser(
        "init-head",
        help="Write a fresh, untrained head for a model (a copy of its output layer), to score as a baseline",
        description="Writes an adapter directory whose head is a copy of the model's output layer, "
        "stored as its (empty) difference from it: a few bytes for any vocabulary. With `--offset "
        "log_softmax` its token scores start at sigmoid(log p) = p / (1 + p), a function of the softmax.",
    )
    nh.add_argument("--model", default=None, help="Base model (default: the embedded one)")
    nh.add_argument("--offset", default="none", help="'none' (the paper) or 'log_softmax'")
    nh.add_argument("--output", required=True, help="Adapter directory to write")
    _add_head_writer_options(nh)
    nh.set_defaults(func=cmd_init_head)

    rs = sub.add_parser(
        "rescore",
        help="Attach every estimator to a saved lm-eval run of any backend (vllm, hf, ...)",
        description="Reads the samples file of an `lm_eval ... --log_samples` run, force-decodes the text "
        "lm-eval kept for each sample after its logged context, on a model with a Sigmoid Head, in one "
        "batched pass, and writes the samples with their scores under `sighead`. --quality KEY also "
        "prints how well each confidence ranks the samples by that per-sample metric.",
    )
    rs.add_argument("--samples", required=True, help="lm-eval's samples_<task>_<date>.jsonl")
    rs.add_argument("--output", required=True, help="JSONL file for the scored samples (written atomically)")
    rs.add_argument("--quality", default=None, help="a per-sample metric of the samples, e.g. exact_match")
    rs.add_argument(
        "--filter", default=None, help="the filter whose samples --quality reads (default: the first)"
    )
    rs.add_argument("--batch-size", type=int, default=8, help="records per forward pass (default: 8)")
    _add_estimators_option(rs)
    add_model_options(rs, only=("model", "adapter", "dtype", "device"))
    rs.set_defaults(func=cmd_rescore)

    ih = sub.add_parser(
        "import-head",
        help="Turn a head released by the paper's authors (one [vocab, hidden] tensor) into an adapter",
        description="Reads a head in the authors' format, a folder (or a hub id, where the hub is "
        "reachable) with model.safetensors holding one [vocab, hidden] tensor, checks it against the base "
        "model's output layer (its config only), and writes an adapter directory with offset 'none' and a "
        "card naming the source.",
    )
    ih.add_argument("source", help="Folder with model.safetensors, or a hub id such as "
                    "tuanh23/SigmoidHead-TowerInstruct-7B-v0.2")  # fmt: skip
    ih.add_argument("--model", required=True, help="The base model the head was trained on (hub id or path)")
    ih.add_argument("--output", required=True, help="Adapter directory to write")
    _add_head_writer_options(ih)
    ih.set_defaults(func=cmd_import_head)

    mech = sub.add_parser(
        "mechanism",
        help="The mechanism experiment: a synthetic language with known validity, a head trained by the "
        "project's trainer (the paper's recipe and its ablations); prints where it beats the softmax",
        description="Four contexts whose distributions are set exactly (a cluster of synonyms, a flat "
        "block, a winner with a smooth wrong tail, a winner with a dominant wrong token); ROC-AUC of "
        "telling valid from invalid tokens and outputs, per regime and pooled (about 15 s).",
    )
    mech.add_argument("--steps", type=int, default=None, help="Optimizer steps per recipe (default: 150)")
    mech.set_defaults(func=cmd_mechanism)

    sub.add_parser(
        "lm-eval",
        help="Run lm-eval with the `sighead` model and the project's tasks (lm-eval's own arguments)",
        add_help=False,
    )
    return parser


def _add_estimators_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--estimators",
        default=None,
        help=f"token estimators, '|'-separated (default: all but the opt-in){more}",
    )


def cmd_compare(ns: argparse.Namespace) -> int:
    from .compare import run_compare

    run_compare(
        _options(ModelOptions, ns),
        tasks=ns.tasks,
        split=ns.split,
        output=ns.output,
        outputs=ns.outputs,
        bootstrap=ns.bootstrap,
        batch_size=ns.batch_size,
        rescore=ns.rescore,
        estimators=ns.estimators,
    )
    return 0


def cmd_selective(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from .files import check_output_dir, write_atomic
    from .selective import RUN_FORMAT, coverage_plot, json_safe, read_run_samples, report_markdown, run_report

    path = Path(ns.run)
    if path.is_dir():
        path = path / "lm_eval_results.json"
    if not path.is_file():
        raise FileNotFoundError(f"run {ns.run!r}: no lm_eval_results.json there; give a demo or compare run")
    samples = read_run_samples(path)
    tasks = [t.strip() for t in ns.tasks.split(",") if t.strip()] if ns.tasks else None
    out = check_output_dir(ns.output or "results/selective")
    try:
        report = run_report(samples, ns.target_risk, ns.delta, tasks)
    except (KeyError, IndexError, AttributeError, TypeError) as err:  # a shape read_run_samples let by
        raise ValueError(
            f"{path}: samples of another shape ({type(err).__name__}: {err}); expected {RUN_FORMAT}"
        ) from None
    text = report_markdown(report)
    write_atomic(out / "selective.md", text)
    write_atomic(out / "selective.json", json.dumps(json_safe(report), indent=1))
    coverage_plot(report, out / "selective.png")
    print(text)
    print(f"wrote {out}/: selective.md, selective.json, selective.png")
    return 0


def cmd_curves(ns: argparse.Namespace) -> int:
    from .curves import run_curves

    tasks = [t.strip() for t in ns.tasks.split(",") if t.strip()] if ns.tasks else None
    run_curves(ns.outputs, ns.runs, ns.split, tasks, ns.model, ns.output, ns.batch_size)
    return 0


def cmd_compress(ns: argparse.Namespace) -> int:
    from .adapter.heads import compress_adapter

    compress_adapter(ns.adapter, ns.output, ns.storage, ns.rank, ns.model, ns.storage_dtype)
    return 0


def cmd_init_head(ns: argparse.Namespace) -> int:
    from .adapter.heads import init_head

    out = init_head(ns.output, ns.model, ns.offset, ns.trust_remote_code, ns.overwrite)
    print(f"sighead-eval init-head: wrote an untrained head (offset {ns.offset!r}) to {out}")
    return 0


def cmd_import_head(ns: argparse.Namespace) -> int:
    from .adapter.authors import import_head

    out = import_head(ns.source, ns.model, ns.output, ns.trust_remote_code, ns.overwrite)
    print(f"sighead-eval import-head: wrote the adapter {out} (offset 'none'); card: {out / 'README.md'}")
    return 0


def cmd_mechanism(ns: argparse.Namespace) -> int:
    from . import mechanism

    steps = mechanism.STEPS if ns.steps is None else ns.steps
    if steps < 1:
        raise ValueError(f"--steps should be a positive integer, got {steps}")
    return mechanism.main(steps)


def cmd_lm_eval(argv: list[str]) -> int:
    from .harness.cli import main as lm_eval_main

    return lm_eval_main(argv)


def cmd_rescore(ns: argparse.Namespace) -> int:
    from .harness.rescore import run
    from .runs import choose_adapter

    if ns.batch_size < 1:
        raise ValueError(f"--batch-size should be a positive integer, got {ns.batch_size}")
    ns.adapter = choose_adapter(ns.adapter, ns.model)  # on the default model, the shipped head
    return run(ns)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["lm-eval"]:  # everything after it is lm-eval's, unparsed here
        return cmd_lm_eval(args[1:])
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.argv_rest = list(sys.argv[2:] if argv is None else argv[1:])
    try:
        return ns.func(ns)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"sighead-eval {ns.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: what was kept (train says), in one line
        said = str(err) or INTERRUPTED
        print(f"sighead-eval {ns.command}: interrupted: {said}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
