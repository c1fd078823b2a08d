# ruff: noqa: E501  (a table: one case a line)
"""One table of bad inputs over the real command line (`sighead-eval ...`, as the console script
calls it): every command refuses each in one line on stderr, exit code 2, naming the file, line or
argument, with no traceback and before any model loads. A new command adds its rows here."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_authors import authors_head
from test_selective import saved_run

from sighead_eval.cli import main

#: (id, command line with {placeholders}, pattern the one line must match)
CASES = [
    # score
    ("score-missing-input", "score --input {d}/nope.jsonl", r"--input '.*nope.jsonl': no such file"),
    ("score-input-is-a-folder", "score --input {d}", r"is a directory; give a JSONL file"),
    ("score-bad-json", "score --input {d}/bad_json.jsonl", r"bad_json.jsonl, line 2: not valid JSON"),
    ("score-not-utf8", "score --input {d}/latin1.jsonl", r"latin1.jsonl, line 1: not UTF-8 text"),
    ("score-empty-file", "score --input {d}/empty.jsonl", r"holds no records"),
    ("score-no-response", "score --input {d}/no_response.jsonl", r"no_response.jsonl, line 3: has `prompt` but no `response`"),
    ("score-other-shape", "score --input {d}/other_shape.jsonl", r"other_shape.jsonl, line 1: has keys \['question'\]"),
    ("score-record-a-list", "score --input {d}/a_list.jsonl", r"a_list.jsonl, line 1: should be a dict, got list"),
    ("score-nan-field", "score --input {d}/nan.jsonl", r"nan.jsonl, line 1: field `meta` holds a non-finite number"),
    ("score-batch-size-0", "score --input {d}/good.jsonl --batch-size 0", r"`batch_size` should be a positive integer or 'auto', got 0"),
    ("score-batch-size-word", "score --input {d}/good.jsonl --batch-size many", r"`batch_size` should be .* or 'auto', got 'many'"),
    ("score-cuda-without-cuda", "score --input {d}/good.jsonl --device cuda", r"--device 'cuda': this machine has no CUDA"),
    ("score-not-a-device", "score --input {d}/good.jsonl --device gpu", r"--device 'gpu' is not a torch device"),
    ("score-abstain-without-generate", "score --input {d}/good.jsonl --abstain-below 0.5", r"--abstain-below .* needs --generate"),
    ("score-abstain-above-1", "score --input {d}/good.jsonl --generate --abstain-below 2", r"`abstain_below` is a probability in \[0, 1\], got 2.0"),
    ("score-output-is-input", "score --input {d}/good.jsonl --output {d}/good.jsonl", r"is the --input file"),
    ("score-output-under-a-file", "score --input {d}/good.jsonl --output {d}/good.jsonl/out.jsonl", r"cannot be written there"),
    ("score-adapter-missing", "score --input {d}/good.jsonl --adapter {d}/no-head", r"adapter directory '.*no-head' does not exist"),
    ("score-adapter-not-peft", "score --input {d}/good.jsonl --adapter {d}/empty-dir", r"is not a PEFT adapter: it has no adapter_config.json"),
    ("score-adapter-nan", "score --input {d}/good.jsonl --adapter {d}/nan-head", r"tensor '.*' holds 1 NaN and 0 infinite value"),
    ("score-adapter-truncated", "score --input {d}/good.jsonl --adapter {d}/cut-head", r"adapter_model.safetensors is truncated"),
    ("score-adapter-and-no-adapter", "score --input {d}/good.jsonl --adapter {t}/head --no-adapter", r"--adapter and --no-adapter contradict"),
    ("score-dtype", "score --input {d}/good.jsonl --dtype int8", r"`dtype` should be one of"),
    ("score-model-path-missing", "score --input {d}/good.jsonl --model ./no/such/model", r"model './no/such/model': no such directory"),
    ("score-max-length", "score --input {d}/good.jsonl --max-length 1", r"`max_length` should be an integer >= 2"),
    ("score-dominant-mode", "score --input {d}/good.jsonl --dominant-mode middle", r"`mode` should be one of \('last', 'first'\), got 'middle'"),
    ("score-no-input-option", "score", r"the following arguments are required: --input \(see `sighead-eval score --help`\)"),
    # rescore
    ("rescore-missing-samples", "rescore --samples {d}/nope.jsonl --output {d}/o.jsonl", r"--samples .*nope.jsonl: no such file"),
    ("rescore-not-samples", "rescore --samples {d}/good.jsonl --output {d}/o.jsonl", r"good.jsonl, line 1: not an lm-eval sample"),
    ("rescore-output-is-samples", "rescore --samples {d}/good.jsonl --output {d}/good.jsonl", r"is the --samples file"),
    ("rescore-batch-size-0", "rescore --samples {d}/good.jsonl --output {d}/o.jsonl --batch-size 0", r"--batch-size should be a positive integer, got 0"),
    ("rescore-no-samples-option", "rescore --output {d}/o.jsonl", r"the following arguments are required: --samples"),
    # selective
    ("selective-empty-json", "selective {d}/empty.json", r"empty.json is empty; expected the lm_eval_results.json"),
    ("selective-json-list", "selective {d}/list.json", r"list.json holds a JSON list; expected"),
    ("selective-other-samples", "selective {d}/other_samples.json", r"sample 1 of 'task' lacks \['doc_id'\]"),
    ("selective-no-run", "selective {d}/no-run", r"no lm_eval_results.json there"),
    ("selective-target-risk", "selective {d}/run.json --target-risk 1.5", r"the target risk alpha should be in \(0, 1\), got 1.5"),
    # train
    ("train-lr-inf", "train --data {d}/train.jsonl --output-dir {d}/out --lr inf", r"`lr` should be a finite number > 0, got inf"),
    ("train-lr-0", "train --data {d}/train.jsonl --output-dir {d}/out --lr 0", r"`lr` should be a finite number > 0, got 0.0"),
    ("train-epochs-word", "train --epochs two", r"argument --epochs: invalid int value: 'two'"),
    ("train-recipe", "train --recipe tower", r"unknown recipe 'tower'"),
    ("train-negatives", "train --negatives hard --output-dir {d}/out", r"`negatives` should be one of"),
    ("train-resume-nothing", "train --data {d}/train.jsonl --output-dir {d}/out --resume", r"holds no checkpoint to resume from"),
    ("train-resume-truncated", "train --data {d}/train.jsonl --output-dir {d}/cut-run --resume", r"checkpoint.safetensors' is truncated or damaged"),
    ("train-output-a-file", "train --data {d}/train.jsonl --output-dir {d}/good.jsonl", r"is a file; give a folder"),
    ("train-output-users-folder", "train --data {d}/train.jsonl --output-dir {d}/project", r"holds files a training run did not write \(README.md\)"),
    ("train-cuda-without-cuda", "train --data {d}/train.jsonl --output-dir {d}/out --device cuda", r"--device 'cuda': this machine has no CUDA"),
    # import-head and init-head
    ("import-head-users-folder", "import-head {d}/released --model {t}/base --output {d}/project", r"'.*project' is not empty \(it holds README.md\)"),
    ("import-head-nan", "import-head {d}/nan-released --model {t}/base --output {d}/new", r"tensor 'weight' holds 1 NaN"),
    ("import-head-source-a-file", "import-head {d}/good.jsonl --model {t}/base --output {d}/new", r"is a file; pass the folder that holds model.safetensors"),
    ("import-head-no-weights", "import-head {d}/empty-dir --model {t}/base --output {d}/new", r"has no model.safetensors"),
    ("import-head-wrong-shape", "import-head {d}/wide-released --model {t}/base --output {d}/new", r"does not fit the model"),
    ("import-head-no-model", "import-head {d}/released --output {d}/new", r"the following arguments are required: --model"),
    ("init-head-offset", "init-head --offset soft --output {d}/new", r"`offset` should be one of \('none', 'log_softmax'\), got 'soft'"),
    ("init-head-users-folder", "init-head --model {t}/base --output {d}/project", r"is not empty \(it holds README.md\)"),
    ("init-head-under-a-file", "init-head --model {t}/base --output {d}/good.jsonl/head", r"cannot be written there"),
    # the others
    ("demo-unknown-task", "demo --tasks nonexistent --output {d}/new", r"unknown task\(s\) \['nonexistent'\]"),
    ("curves-no-outputs", "curves {t}/head --outputs {d}/nope.json", r"--outputs '.*nope.json' does not exist"),
    ("mechanism-steps", "mechanism --steps 0", r"--steps should be a positive integer, got 0"),
    ("compress-storage", "compress {t}/head --output {d}/new --storage zip", r"argument --storage: invalid choice: 'zip'"),
    ("compare-split", "compare --split holdout", r"argument --split: invalid choice: 'holdout'"),
    ("no-such-command", "evaluate", r"argument command: invalid choice: 'evaluate'"),
    # lm-eval
    ("lm-eval-misspelt-key", "lm-eval --tasks sighead_arith --model_args pretrained={t}/base,adaptr={t}/head", r"unknown key 'adaptr'; did you mean 'adapter'\?"),
    ("lm-eval-dominant-mode", "lm-eval --tasks sighead_arith --model_args pretrained={t}/base,dominant_mode=bogus", r"`dominant_mode` should be one of \('last', 'first'\), got 'bogus'"),
    ("lm-eval-abstain-below", "lm-eval --tasks sighead_arith --model_args pretrained={t}/base,abstain_below=2", r"`abstain_below` is a probability in \[0, 1\], got 2.0"),
    ("lm-eval-limit", "lm-eval --tasks sighead_arith --limit 0 --model_args pretrained={t}/base", r"--limit should be a positive number of samples per task"),
    ("lm-eval-adapter-missing", "lm-eval --tasks sighead_arith --model_args pretrained={t}/base,adapter={d}/no-head", r"adapter directory '.*no-head' does not exist"),
    ("lm-eval-unknown-task", "lm-eval --tasks nonexistent --model_args pretrained={t}/base", r"Tasks not found: nonexistent \(`sighead-eval lm-eval ls tasks` lists them\)"),
]  # fmt: skip
#: lm-eval logs its own INFO lines (timestamped) before it finds a task missing: allowed there only.
LM_EVAL_LOG = re.compile(r"^\d{4}-\d\d-\d\d:\d\d:\d\d:\d\d (INFO|WARNING) ")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dir):
    """Every bad file the table names, made once: `d` holds them, `t` is the tiny model's folder."""
    d = tmp_path_factory.mktemp("bad")
    lines = {
        "good.jsonl": '{"prompt": "Hi", "response": "there"}\n',
        "bad_json.jsonl": '{"prompt": "Hi", "response": "x"}\n{oops\n',
        "empty.jsonl": "",
        "no_response.jsonl": '{"prompt": "Hi", "response": "x"}\n\n{"prompt": "Bye"}\n',
        "other_shape.jsonl": '{"question": "Hi"}\n',
        "a_list.jsonl": '["Hi", "there"]\n',
        "nan.jsonl": '{"prompt": "Hi", "response": "x", "meta": NaN}\n',
        "train.jsonl": '{"text": "The capital of France is Paris."}\n',
        "empty.json": "",
        "list.json": "[1, 2]",
        "other_samples.json": json.dumps(
            {"samples": {"task": [{"doc": {}, "filter": "x", "filtered_resps": []}]}}
        ),
    }
    for name, text in lines.items():
        (d / name).write_text(text)
    (d / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    (d / "run.json").write_text(json.dumps(saved_run(), default=lambda o: o.__dict__))
    for folder in ("empty-dir", "no-run", "project"):
        (d / folder).mkdir()
    (d / "project" / "README.md").write_text("# My project\n")
    shutil.copytree(tiny_dir / "head", d / "nan-head")
    weights = d / "nan-head" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    next(iter(tensors.values()))[1, 1] = float("nan")
    save_file(tensors, str(weights))
    shutil.copytree(tiny_dir / "head", d / "cut-head")
    cut = d / "cut-head" / "adapter_model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-100])
    (d / "cut-run").mkdir()
    (d / "cut-run" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    authors_head(d / "released")
    authors_head(d / "wide-released", vocab=320)
    poisoned = torch.zeros(300, 32)
    poisoned[0, 0] = float("nan")
    authors_head(d / "nan-released", tensors={"weight": poisoned})
    return {"d": str(d), "t": str(tiny_dir)}


@pytest.fixture
def no_model_may_load(monkeypatch):
    """Bad input is refused before any model loads, on any machine (none has CUDA here)."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model loaded before the bad input was refused")

    monkeypatch.setattr("sighead_eval.models.load_model", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(("command", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_code_2(world, no_model_may_load, capfd, command, pattern):
    argv = [part.format(**world) for part in command.split()]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's refusals
        code = stop.code
    out, err = capfd.readouterr()
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if argv[0] == "lm-eval":
        lines = [line for line in lines if not LM_EVAL_LOG.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("sighead-eval"), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def test_the_table_covers_every_command():
    from sighead_eval.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    covered = {case[1].split()[0] for case in CASES}
    assert set(commands) <= covered, set(commands) - covered
    assert len(CASES) >= 40
