"""Faults while writing: `train`, `score`, `compare` and `import-head` killed with SIGKILL.

Each command runs in its own interpreter: a small driver (`DRIVER`) imports the package and its
heavy libraries, says READY, then runs `sighead_eval.cli.main` on the command line, as
`python -m sighead_eval.cli` does. The test kills it with SIGKILL at two kinds of moments:

- a precise point: the driver reports every `os.replace`, `os.rename`, `os.unlink` and `os.rmdir`
  the command makes, and stops before a chosen one (say, the rename that puts the new
  `out.jsonl` in place); the test kills it there. Nothing in the package is changed for this.
- a delay: a fixed fraction of the time the same command, uninterrupted, took from READY to its
  last rename or removal.

After each kill, every file under the output's own name is the one that was there before the
command started, byte for byte, or a complete new one (it parses, it loads, its adapter folder
passes `check_adapter_dir`); anything else is a hidden temporary with the atomic writer's name
(`.<name>.<8 random>.tmp<suffix>`, `files.atomic_path` and `files.staged_dir`), which a SIGKILL
gives no chance to remove. A run that ends on its own leaves no temporary at all. A training run
killed four times and resumed ends with the same adapter as one never stopped.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from test_authors import authors_head
from test_training import RECORDS

import sighead_eval
from sighead_eval.models import check_adapter_dir
from sighead_eval.training.checkpoint import check_checkpoint

ROOT = Path(sighead_eval.__file__).resolve().parents[1]

DRIVER = r"""
import json, os, re, sys, time

plan, argv = json.loads(sys.argv[1]), sys.argv[2:]
import peft, safetensors.torch, torch, transformers  # noqa: F401  (loaded before READY)
from sighead_eval import cli


def say(*words):
    print("KILLTEST", *words, flush=True)


def hook(name, real):
    seen = [0]

    def call(*args, **kwargs):
        text = name + " " + " -> ".join(map(str, args))
        say("EVENT", text)
        pause = plan.get("pause")
        if pause and pause["event"] == name and re.search(pause["match"], text):
            seen[0] += 1
            if seen[0] == pause["nth"]:
                say("PAUSED", text)
                time.sleep(3600)  # until the test kills this process
        return real(*args, **kwargs)

    return call


for name in ("replace", "rename", "unlink", "rmdir"):
    setattr(os, name, hook(name, getattr(os, name)))
say("READY")
sys.exit(cli.main(argv))
"""

#: What the atomic writers name their temporaries: `.<target>.<8 random>.tmp<target's suffix>`
#: for a file (`atomic_path`), `.<folder>.<8 random>.tmp` for a staged folder (`staged_dir`).
TEMP = re.compile(r"^\.(?P<of>.+)\.[a-z0-9_]{8}\.tmp(?P<ext>\.[A-Za-z0-9]+)?$")
_runs = itertools.count()
ADAPTER = ("README.md", "adapter_config.json", "adapter_model.safetensors")
CHECKPOINT = ("checkpoint.safetensors",)


class Run:
    """One command line in its own interpreter, the driver's lines read as they come."""

    def __init__(self, cwd: Path, args: list, pause: dict | None = None):
        self.err = cwd / f"stderr-{next(_runs)}.txt"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        argv = [sys.executable, "-c", DRIVER, json.dumps({"pause": pause}), *map(str, args)]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )
        self.lines: queue.Queue = queue.Queue()
        self.events: list[str] = []
        self.times: dict[str, float] = {}  # when READY and each event came
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("KILLTEST "):
                self.lines.put((time.monotonic(), line.removeprefix("KILLTEST ").rstrip("\n")))
        self.lines.put((time.monotonic(), None))

    def wait_for(self, word: str, timeout: float = 300) -> str | None:
        """The driver's line that starts with `word` (its text), or None when the command ended first."""
        deadline = time.monotonic() + timeout
        while True:
            when, line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                return None
            if line.startswith("EVENT "):
                self.events.append(line.removeprefix("EVENT "))
            self.times[line] = when
            if line.startswith(word):
                return line.removeprefix(word).strip()

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        assert self.proc.wait(timeout=60) == -signal.SIGKILL

    def finish(self, timeout: float = 300) -> int:
        self.wait_for("\0", timeout)  # reads to the end
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.err.read_text()[-3000:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:  # a failed check left it running (or paused)
            self.proc.kill()
            self.proc.wait()


def run_to_end(cwd: Path, args: list) -> tuple[float, list[str]]:
    """Runs a command uninterrupted; its work time (from READY to its last rename or removal in
    `cwd`: the interpreter's exit after it is left out) and what it renamed and removed."""
    with Run(cwd, args) as run:
        assert run.wait_for("READY") is not None, run.stderr()
        assert run.finish() == 0, run.stderr()
    last = max(run.times[f"EVENT {e}"] for e in run.events if str(cwd) in e)
    return last - run.times["READY"], run.events


def kill_at(cwd: Path, args: list, event: str, match: str, nth: int = 1) -> str:
    """Runs a command and kills it just before its `nth` `event` (replace, rename, unlink, rmdir)
    whose text (`replace <src> -> <dst>`) matches `match`; returns that text."""
    with Run(cwd, args, pause={"event": event, "match": match, "nth": nth}) as run:
        where = run.wait_for("PAUSED")
        if where is None:
            pytest.fail(
                f"the command ended (exit code {run.proc.wait()}) before {event} #{nth} matching {match!r}; "
                f"it made: {run.events}\n{run.stderr()}"
            )
        run.kill()
    return where


def kill_after(cwd: Path, args: list, seconds: float) -> list[str] | None:
    """Runs a command and kills it `seconds` after READY; what it renamed and removed by then
    (None: it had ended)."""
    with Run(cwd, args) as run:
        assert run.wait_for("READY") is not None, run.stderr()
        time.sleep(seconds)
        if run.proc.poll() is not None:
            assert run.finish() == 0, run.stderr()
            return None
        run.kill()
        run.finish()  # the lines it wrote before the kill
    return run.events


# -- what may be left -------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    """The files of `folder` under their own names (no temporaries)."""
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name[0] != "."}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_only_temporaries(folder: Path) -> None:
    """Every hidden entry is an atomic writer's temporary, named as one (a file's keeps its
    target's suffix, a folder's has none)."""
    for name in temporaries(folder):
        found = TEMP.match(name)
        assert found, f"{folder / name} is left, and is not named as a temporary"
        if (folder / name).is_dir():
            assert found["ext"] is None, name
        else:
            assert found["ext"] is None or found["of"].endswith(found["ext"]), name


def assert_complete(path: Path, like: Path | None = None) -> None:
    """`path` is a whole file: it parses or loads; `like` (a complete file of the same kind, from a
    run never stopped) gives the keys of a JSON file, and the lines of a text file."""
    text = None if path.suffix == ".safetensors" else path.read_text(encoding="utf-8")
    if path.suffix == ".safetensors":
        load_file(str(path))  # a truncated file fails: its header names more bytes than there are
        if path.name == "checkpoint.safetensors":
            check_checkpoint(path.parent)
    elif path.suffix == ".json":
        data = json.loads(text)
        if like is not None:
            assert sorted(data) == sorted(json.loads(like.read_text())), path
    elif path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows and all(isinstance(r, dict) for r in rows) and text.endswith("\n"), path
    else:  # a card or a table: as many lines as a whole one, ending as it ends
        assert like is not None, f"no complete {path.name} to compare with"
        lines, whole = text.splitlines(keepends=True), like.read_text().splitlines(keepends=True)
        assert len(lines) == len(whole) and lines[-1] == whole[-1], path


def assert_old_or_complete(folder: Path, before: dict[str, bytes], like: Path, also: tuple = ()) -> None:
    """Each file in `folder` is the one there before, byte for byte, or a complete new one with a
    name the command writes (those in `like`, a run never stopped, and `also`); an adapter folder
    still loads; anything else is a temporary."""
    writes = set(snapshot(like)) | set(also)
    for name, data in snapshot(folder).items():
        if before.get(name) != data:
            assert name in writes, f"{folder / name} is not a file the command writes"
            assert_complete(folder / name, like / name if (like / name).exists() else None)
    for name in before:
        assert (folder / name).is_file(), f"{folder / name} was there before the kill, and is gone"
    if (folder / "adapter_config.json").is_file():
        check_adapter_dir(folder)
    assert_only_temporaries(folder)


# -- the commands -----------------------------------------------------------------------------------
def test_score_killed_keeps_the_previous_output_or_writes_a_whole_one(tiny_dir, tmp_path):
    records = [{"id": i, "prompt": r["prompt"], "response": r["response"]} for i, r in enumerate(RECORDS)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model = ["--model", tiny_dir / "base", "--adapter", tiny_dir / "head"]

    def score(folder):
        folder.mkdir(exist_ok=True)
        return ["score", "--input", tmp_path / "in.jsonl", "--output", folder / "out.jsonl", *model]

    work, events = run_to_end(tmp_path, score(tmp_path / "whole"))
    whole = (tmp_path / "whole" / "out.jsonl").read_bytes()
    assert [json.loads(line)["id"] for line in whole.decode().splitlines()] == list(range(len(RECORDS)))
    assert temporaries(tmp_path / "whole") == []  # a finished run leaves no temporary
    assert any(re.search(r"replace .*\.tmp\.jsonl -> .*/whole/out\.jsonl$", e) for e in events), events

    previous = b'{"previous": "results"}\n'
    out = tmp_path / "out"
    out.mkdir()
    # just before the finished file is renamed into place: the previous output is untouched
    (out / "out.jsonl").write_bytes(previous)
    kill_at(tmp_path, score(out), "replace", r"-> .*/out/out\.jsonl$")
    assert (out / "out.jsonl").read_bytes() == previous
    assert sorted(snapshot(out)) == ["out.jsonl"]
    assert_only_temporaries(out)
    assert len(temporaries(out)) == 1  # the new output, whole, under its temporary name
    # at delays: the previous output, or the new one whole
    for fraction in (0.5, 0.95):
        kill_after(tmp_path, score(out), fraction * work)
        assert (out / "out.jsonl").read_bytes() in (previous, whole)
        assert sorted(snapshot(out)) == ["out.jsonl"]
        assert_only_temporaries(out)


def test_import_head_killed_keeps_the_previous_adapter_or_writes_a_whole_one(tiny_dir, tmp_path):
    from sighead_eval.adapter.authors import import_head

    authors_head(tmp_path / "released")
    authors_head(tmp_path / "other", seed=1)

    def into(folder, source="other"):
        base = tiny_dir / "base"
        return ["import-head", tmp_path / source, "--model", base, "--output", folder, "--overwrite"]

    first = tmp_path / "first"
    work, events = run_to_end(tmp_path, into(first, "released")[:-1])
    previous = snapshot(first)
    check_adapter_dir(first)
    assert temporaries(tmp_path) == [] and temporaries(first) == []
    assert any(re.search(r"(rename|replace) .*/\.first\.\w+\.tmp -> .*/first$", e) for e in events), events
    # the new adapter, as the same command writes it uninterrupted
    shutil.copytree(first, tmp_path / "whole")
    import_head(tmp_path / "other", str(tiny_dir / "base"), tmp_path / "whole", overwrite=True)
    new = snapshot(tmp_path / "whole")
    assert (
        set(new) == set(previous)
        and new["adapter_model.safetensors"] != previous["adapter_model.safetensors"]
    )

    def fresh_copy(name):
        shutil.copytree(first, tmp_path / name)
        return tmp_path / name

    # into a folder that holds an adapter (--overwrite): the files are staged in a hidden folder in
    # it, then renamed over the old ones one by one
    staged_into = r"replace .*/{0}/\.{0}\.\w+\.tmp/[^/]+ -> .*/{0}/[^/]+$"
    before_any = fresh_copy("a")
    kill_at(tmp_path, into(before_any), "replace", staged_into.format("a"), nth=1)
    assert snapshot(before_any) == previous  # nothing renamed yet: the previous adapter, whole
    assert_only_temporaries(before_any)

    between = fresh_copy("b")
    kill_at(tmp_path, into(between), "replace", staged_into.format("b"), nth=2)
    assert all(data in (previous[n], new[n]) for n, data in snapshot(between).items())
    assert set(snapshot(between)) == set(previous)
    check_adapter_dir(between)
    assert_only_temporaries(between)

    after_all = fresh_copy("c")
    kill_at(tmp_path, into(after_all), "rmdir", r"\.c\.\w+\.tmp")  # renamed; the empty stage stays
    assert snapshot(after_all) == new
    assert_only_temporaries(after_all)

    # into a new folder: staged beside it, then renamed as a whole
    kill_at(tmp_path, into(tmp_path / "d"), "replace", r"/\.d\.\w+\.tmp -> .*/d$")
    assert not (tmp_path / "d").exists()
    assert_only_temporaries(tmp_path)

    late = fresh_copy("e")
    kill_after(tmp_path, into(late), 0.5 * work)
    assert_old_or_complete(late, previous, tmp_path / "whole")


def _saved_run(path: Path) -> None:
    """A saved `compare` run (its lm_eval_results.json, samples only): one task, dev documents of
    two types, ten estimators."""
    rng = np.random.default_rng(0)
    estimators = [f"{a}_{b}" for a in ("sigmoid", "softmax", "boostedprob") for b in ("mean", "prod", "min")]
    samples = []
    for i in range(80):
        doc = {"id": f"s{i}", "type": ("year", "name")[i % 2], "split": "dev", "pair": f"p{i // 2}"}
        quality = float(rng.random() < 0.5)
        for name in [*estimators, "length"]:
            c = float(rng.random())
            samples.append(
                {"doc_id": i, "doc": doc, "filter": name, "prr": [c, quality],
                 "filtered_resps": [{"response": f"answer {i}", "confidence": c}]}
            )  # fmt: skip
    path.write_text(json.dumps({"samples": {"sighead_wiki_facts": samples}}))


def test_compare_killed_keeps_each_table_whole(tiny_dir, tmp_path):
    """`compare` on saved outputs (`--outputs`, `--no-rescore`): a run of a task through lm-eval
    takes about 20 s even on the tiny model, too long to repeat for each kill; its
    `lm_eval_results.json` goes through the same writer (`write_atomic`) as the tables killed here."""
    _saved_run(tmp_path / "saved.json")

    def compare(folder, bootstrap):
        return [
            "compare", "--model", tiny_dir / "base", "--adapter", tiny_dir / "head", "--split", "dev",
            "--tasks", "sighead_wiki_facts", "--outputs", tmp_path / "saved.json", "--no-rescore",
            "--bootstrap", bootstrap, "--output", folder,
        ]  # fmt: skip

    work, _ = run_to_end(tmp_path, compare("first", 10))
    first = tmp_path / "first"
    previous = snapshot(first)
    assert sorted(previous) == ["table.json", "table.md"] and temporaries(first) == []
    assert json.loads(previous["table.json"])["bootstrap"] == 10
    # the new tables, as the same command writes them uninterrupted
    from sighead_eval.compare import run_compare
    from sighead_eval.models import ModelOptions

    options = ModelOptions(model=str(tiny_dir / "base"), adapter=str(tiny_dir / "head"))
    whole = tmp_path / "whole"
    saved = str(tmp_path / "saved.json")
    run_compare(options, ["sighead_wiki_facts"], "dev", str(whole), saved, bootstrap=20, rescore=False)

    def fresh_copy(name):
        shutil.copytree(first, tmp_path / name)
        return tmp_path / name

    a = fresh_copy("a")
    kill_at(tmp_path, compare(a, 20), "replace", r"-> .*/a/table\.json$")
    assert snapshot(a) == previous
    assert_only_temporaries(a)

    b = fresh_copy("b")
    kill_at(tmp_path, compare(b, 20), "replace", r"-> .*/b/table\.md$")
    assert json.loads((b / "table.json").read_text())["bootstrap"] == 20  # the new table, whole
    assert_complete(b / "table.json", whole / "table.json")
    assert (b / "table.md").read_bytes() == previous["table.md"]  # the old one, until replaced
    assert_only_temporaries(b)

    c = fresh_copy("c")
    kill_after(tmp_path, compare(c, 20), 0.9 * work)
    assert_old_or_complete(c, previous, whole)
    assert json.loads((c / "table.json").read_text())["bootstrap"] in (10, 20)


def test_train_killed_four_times_resumes_to_the_adapter_of_a_run_never_stopped(tiny_dir, tmp_path):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    def train(folder, *extra):
        return [
            "train", "--model", tiny_dir / "base", "--data", tmp_path / "data.jsonl", "--output-dir", folder,
            "--lr", "0.01", "--epochs", "2", "--batch-size", "4", "--grad-accum", "2", "--eval-every", "2",
            "--dev-fraction", "0.2", *extra,
        ]  # fmt: skip

    whole = tmp_path / "whole"
    work, events = run_to_end(tmp_path, train(whole))
    assert temporaries(whole) == []  # a finished run leaves no temporary and no checkpoint
    assert sorted(snapshot(whole)) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "trainer_state.json",
        "training_log.jsonl",
    ]  # fmt: skip
    assert sum(bool(re.search(r"-> .*/checkpoint\.safetensors$", e)) for e in events) == 4  # steps 2, 4, 6, 8

    # the folder holds a previous adapter, replaced with --overwrite
    split = tmp_path / "split"
    shutil.copytree(tiny_dir / "head", split)
    previous = snapshot(split)

    # at a delay into the run
    kill_after(tmp_path, train(split, "--overwrite"), 0.6 * work)
    assert_old_or_complete(split, previous, whole, also=CHECKPOINT)
    previous = {n: d for n, d in snapshot(split).items() if n in ADAPTER}
    # just before the second checkpoint is renamed into place: the first is whole, and so is the
    # previous adapter
    kill_at(tmp_path, train(split, "--overwrite"), "replace", r"-> .*/split/checkpoint\.safetensors$", nth=2)
    assert {n: d for n, d in snapshot(split).items() if n in ADAPTER} == previous
    assert check_checkpoint(split)["state"]["step"] == 2
    assert_old_or_complete(split, previous, whole, also=CHECKPOINT)
    # resumed, and killed while the finished adapter's files are renamed over the previous ones
    before = snapshot(split)
    staged = r"replace .*/split/\.split\.\w+\.tmp/[^/]+ -> .*/split/[^/]+$"
    kill_at(tmp_path, train(split, "--resume"), "replace", staged, nth=2)
    assert_old_or_complete(split, before, whole, also=CHECKPOINT)
    assert (split / "checkpoint.safetensors").is_file()
    # resumed, and killed once the adapter is in place, before its checkpoint goes
    before = snapshot(split)
    kill_at(tmp_path, train(split, "--resume"), "unlink", r"/split/checkpoint\.safetensors$")
    assert_old_or_complete(split, before, whole, also=CHECKPOINT)
    assert (split / "adapter_model.safetensors").read_bytes() == (
        whole / "adapter_model.safetensors"
    ).read_bytes()
    # resumed to the end: the adapter of the run never stopped
    run_to_end(tmp_path, train(split, "--resume"))
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_log.jsonl"):
        assert (split / name).read_bytes() == (whole / name).read_bytes(), name
    assert not (split / "checkpoint.safetensors").exists()
    assert_old_or_complete(split, {}, whole)
