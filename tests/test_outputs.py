"""Nothing a user owns is lost: commands write only into new or empty folders unless told
(`--overwrite`), and replace what they replace only once the new version is complete."""

from __future__ import annotations

import json

import pytest
import torch
from test_authors import authors_head

from sighead_eval.cli import main


def _one_line(capsys) -> str:
    """The refusal: one line, the last on stderr (a model that loaded may have shown a progress bar)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("sighead-eval "), err
    return lines[0]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def project(tmp_path):
    """A user's folder: a README and a config that are not an adapter's."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# My project\n")
    (folder / "adapter_config.json").write_text('{"mine": true}\n')
    (folder / "notes.txt").write_text("keep me\n")
    return folder


def _import_args(tiny_dir, source, output, *extra):
    return ["import-head", str(source), "--model", str(tiny_dir / "base"), "--output", str(output), *extra]


def _init_args(tiny_dir, output, *extra):
    return ["init-head", "--model", str(tiny_dir / "base"), "--output", str(output), *extra]


@pytest.mark.parametrize("command", ["import-head", "init-head"])
def test_a_users_folder_is_refused_and_left_as_it_was(tiny_dir, tmp_path, project, capsys, command):
    authors_head(tmp_path / "released")
    before = _snapshot(project)
    args = (
        _import_args(tiny_dir, tmp_path / "released", project)
        if command == "import-head"
        else _init_args(tiny_dir, project)
    )
    assert main(args) == 2
    line = _one_line(capsys)
    assert (
        "is not empty (it holds README.md, adapter_config.json, notes.txt)" in line and "--overwrite" in line
    )
    assert _snapshot(project) == before
    assert [p.name for p in project.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("command", ["import-head", "init-head"])
def test_output_dot_is_the_current_folder_and_is_refused(
    tiny_dir, tmp_path, project, capsys, monkeypatch, command
):
    authors_head(tmp_path / "released")
    monkeypatch.chdir(project)
    args = (
        _import_args(tiny_dir, tmp_path / "released", ".")
        if command == "import-head"
        else _init_args(tiny_dir, ".")
    )
    assert main(args) == 2
    assert "is not empty" in _one_line(capsys)
    assert (project / "README.md").read_text() == "# My project\n"


@pytest.mark.parametrize("command", ["import-head", "init-head"])
def test_overwrite_replaces_the_adapter_files_only(tiny_dir, tmp_path, project, capsys, command):
    authors_head(tmp_path / "released")
    args = (
        _import_args(tiny_dir, tmp_path / "released", project, "--overwrite")
        if command == "import-head"
        else _init_args(tiny_dir, project, "--overwrite")
    )
    assert main(args) == 0
    assert json.loads((project / "adapter_config.json").read_text())["peft_type"] == "SIGMOID_HEAD"
    assert (project / "README.md").read_text() != "# My project\n"
    assert (project / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in project.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "notes.txt"
    ]  # fmt: skip


def test_an_empty_folder_is_written(tiny_dir, tmp_path):
    authors_head(tmp_path / "released")
    (tmp_path / "empty").mkdir()
    assert main(_import_args(tiny_dir, tmp_path / "released", tmp_path / "empty")) == 0
    assert (tmp_path / "empty" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("command", ["import-head", "init-head"])
def test_a_failure_while_writing_keeps_the_previous_adapter_whole(
    tiny_dir, tmp_path, monkeypatch, capsys, command
):
    """Every file is written beside the folder first: a failure on the last one (the card) leaves
    each file of the adapter being replaced as it was, and no temporary files."""
    from sighead_eval import files

    authors_head(tmp_path / "released")
    authors_head(tmp_path / "other", seed=1)
    out = tmp_path / "adapter"
    first = _import_args(tiny_dir, tmp_path / "released", out)
    assert main(first) == 0
    before = _snapshot(out)
    real = files.write_atomic

    def disk_full_on_the_card(path, data):
        if str(path).endswith("README.md"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(files, "write_atomic", disk_full_on_the_card)
    again = (
        _import_args(tiny_dir, tmp_path / "other", out, "--overwrite")
        if command == "import-head"
        else _init_args(tiny_dir, out, "--overwrite")
    )
    assert main(again) == 2
    assert "No space left on device" in _one_line(capsys)
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_import_head_refuses_nan_or_infinite_weights_naming_the_tensor(tiny_dir, tmp_path, capsys):
    weight = torch.zeros(300, 32)
    weight[3, 4] = float("nan")
    weight[7, 1] = float("inf")
    authors_head(tmp_path / "released", tensors={"weight": weight})
    assert main(_import_args(tiny_dir, tmp_path / "released", tmp_path / "adapter")) == 2
    line = _one_line(capsys)
    assert "model.safetensors: tensor 'weight' holds 1 NaN and 1 infinite value(s)" in line
    assert not (tmp_path / "adapter").exists()


def test_an_output_under_a_file_is_refused_before_any_work(tiny_dir, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no model may load on a bad output path")

    monkeypatch.setattr("sighead_eval.models.load_model", refuse)
    (tmp_path / "a-file").write_text("x")
    assert main(_init_args(tiny_dir, tmp_path / "a-file" / "head")) == 2
    assert "cannot be written there" in _one_line(capsys)
    assert main(_init_args(tiny_dir, tmp_path / "a-file")) == 2
    assert "is a file; give a folder" in _one_line(capsys)


# -- train ------------------------------------------------------------------------------------------
def _steps_logged(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]


def test_train_overwrite_keeps_the_previous_adapter_until_the_new_one_is_complete(
    tmp_path, tokenizer, monkeypatch
):
    from test_training import _config, _raise_on_call, _run

    from sighead_eval.training import Trainer

    _run(_config(tmp_path, max_steps=1, eval_every=None), tokenizer)
    out = tmp_path / "run"
    before = {
        name: (out / name).read_bytes() for name in ("adapter_model.safetensors", "adapter_config.json")
    }
    monkeypatch.setattr(Trainer, "_optimizer_step", _raise_on_call(1))
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path, seed=5, overwrite=True), tokenizer)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (out / "README.md").is_file() and (out / "trainer_state.json").is_file()


def test_train_overwrite_removes_the_previous_heads_reports(tmp_path, tokenizer):
    from test_training import _config, _head, _run

    _run(_config(tmp_path, max_steps=1, eval_every=None), tokenizer)
    out = tmp_path / "run"
    old = _head(out)
    (out / "evaluation.json").write_text('{"head": "the old one"}')
    (out / "evaluation.md").write_text("the old head's figures\n")
    _run(_config(tmp_path, max_steps=1, eval_every=None, seed=5, overwrite=True), tokenizer)
    assert not torch.equal(_head(out), old)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "trainer_state.json",
        "training_log.jsonl",
    ]  # fmt: skip


def test_a_rerun_into_a_failed_runs_folder_starts_a_fresh_log(tmp_path, tokenizer, monkeypatch):
    from test_training import _config, _raise_on_call, _run

    from sighead_eval.training import Trainer

    real = Trainer._optimizer_step
    monkeypatch.setattr(Trainer, "_optimizer_step", _raise_on_call(1))  # before any checkpoint
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path), tokenizer)
    assert _steps_logged(tmp_path / "run") == [0]
    monkeypatch.setattr(Trainer, "_optimizer_step", real)
    _run(_config(tmp_path), tokenizer)
    assert _steps_logged(tmp_path / "run") == [0, 2, 4, 6, 8]


def test_a_resumed_runs_log_is_its_checkpoints(tmp_path, tokenizer, monkeypatch):
    """An evaluation logged after the last checkpoint (the run died while checkpointing) is not
    logged twice when the run resumes."""
    from test_training import _config, _run

    from sighead_eval.training import checkpoint

    real = checkpoint.save_checkpoint
    saves = {"n": 0}

    def crash_on_the_second(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tmp_path), tokenizer)
    assert _steps_logged(tmp_path / "run") == [0, 2, 4]  # step 4 logged, its checkpoint never written
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)
    _run(_config(tmp_path, resume=True), tokenizer)
    assert _steps_logged(tmp_path / "run") == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("layout", ["users-files", "a-file"])
def test_train_refuses_a_folder_it_did_not_write_before_the_model_loads(
    tmp_path, capsys, monkeypatch, layout
):
    def refuse(*args, **kwargs):
        raise AssertionError("no model may load on a bad output folder")

    monkeypatch.setattr("sighead_eval.models.load_model", refuse)
    target = tmp_path / "out"
    if layout == "a-file":
        target.write_text("x")
    else:
        target.mkdir()
        (target / "README.md").write_text("# My project\n")
    (tmp_path / "data.jsonl").write_text('{"text": "hello"}\n')
    assert main(["train", "--data", str(tmp_path / "data.jsonl"), "--output-dir", str(target)]) == 2
    line = _one_line(capsys)
    assert (
        "is a file; give a folder" if layout == "a-file" else "holds files a training run did not write"
    ) in line
    if layout != "a-file":
        assert (target / "README.md").read_text() == "# My project\n"


# -- poisoned weights -------------------------------------------------------------------------------
def _poisoned_adapter(tiny_dir, tmp_path):
    """A copy of the tiny Sigmoid Head with one NaN weight."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = tmp_path / "poisoned"
    shutil.copytree(tiny_dir / "head", out)
    tensors = load_file(str(out / "adapter_model.safetensors"))
    key = next(iter(tensors))
    tensors[key][5, 5] = float("nan")
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out, key


def test_an_adapter_with_nan_weights_is_refused_before_the_model_loads(
    tiny_dir, tmp_path, capsys, monkeypatch
):
    from sighead_eval.models import check_adapter_dir

    adapter, key = _poisoned_adapter(tiny_dir, tmp_path)
    with pytest.raises(ValueError, match=f"tensor '{key}' holds 1 NaN and 0 infinite value"):
        check_adapter_dir(adapter)

    def refuse(*args, **kwargs):
        raise AssertionError("no model may load with a poisoned head")

    monkeypatch.setattr("sighead_eval.models.load_model", refuse)
    (tmp_path / "in.jsonl").write_text('{"prompt": "Hi", "response": "there"}\n')
    args = ["score", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    assert main([*args, "--model", str(tiny_dir / "base"), "--adapter", str(adapter)]) == 2
    assert f"tensor '{key}' holds 1 NaN" in _one_line(capsys)
    assert not (tmp_path / "out.jsonl").exists()


# -- interrupted and damaged runs -------------------------------------------------------------------
def _train_args(tiny_dir, tmp_path, *extra):
    data = tmp_path / "data.jsonl"
    if not data.exists():
        from test_training import RECORDS

        data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return [
        "train", "--model", str(tiny_dir / "base"), "--data", str(data),
        "--output-dir", str(tmp_path / "run"), "--lr", "0.01", "--epochs", "2", "--batch-size", "4",
        "--grad-accum", "2", "--eval-every", "2", "--dev-fraction", "0.2", *extra,
    ]  # fmt: skip


def _main_unless_interrupted(args) -> int:
    try:
        return main(args)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the command line as a KeyboardInterrupt traceback")


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]  # after the progress bars


@pytest.mark.parametrize("calls", [1, 3], ids=["before-the-first-checkpoint", "after-it"])
def test_ctrl_c_during_train_says_what_was_kept_and_how_to_go_on(
    tiny_dir, tmp_path, capsys, monkeypatch, calls
):
    from test_training import _raise_on_call

    from sighead_eval.training import Trainer

    real = Trainer._optimizer_step
    monkeypatch.setattr(Trainer, "_optimizer_step", _raise_on_call(calls))
    assert _main_unless_interrupted(_train_args(tiny_dir, tmp_path)) == 130
    line = _last_line(capsys)
    assert line.startswith(f"sighead-eval train: interrupted: stopped at step {calls - 1} of ")
    if calls == 1:
        assert "no checkpoint was written yet" in line and "run the same command again to start over" in line
    else:
        assert "the checkpoint of step 2 is kept" in line and "add --resume to the same command" in line
    monkeypatch.setattr(Trainer, "_optimizer_step", real)
    again = _train_args(tiny_dir, tmp_path, *(["--resume"] if calls > 1 else []))
    assert main(again) == 0  # what the message says works
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_resume_from_a_truncated_checkpoint_is_one_line_before_the_model_loads(
    tiny_dir, tmp_path, capsys, monkeypatch
):
    from test_training import _raise_on_call

    from sighead_eval.training import Trainer

    monkeypatch.setattr(Trainer, "_optimizer_step", _raise_on_call(3))
    assert _main_unless_interrupted(_train_args(tiny_dir, tmp_path)) == 130
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    data = checkpoint.read_bytes()
    monkeypatch.setattr("sighead_eval.models.load_model", _no_model)
    for cut in (len(data) // 2, 100, 4):
        checkpoint.write_bytes(data[:cut])
        capsys.readouterr()
        assert main(_train_args(tiny_dir, tmp_path, "--resume")) == 2
        line = _one_line(capsys)
        assert (
            "checkpoint.safetensors' is truncated or damaged" in line
            and "--overwrite in place of --resume" in line
        )


def _no_model(*args, **kwargs):
    raise AssertionError("no model may load")
