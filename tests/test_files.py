"""The one atomic writer: a crash at any point leaves the old file whole, and no debris."""

from __future__ import annotations

import json
import math
import os

import pytest

from sighead_eval import files


def test_a_crash_between_the_write_and_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "table.md"
    target.write_text("old and whole\n")
    written = []

    def crash(src, dst):
        written.append(open(src).read())  # the new file was complete at the moment of the crash
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, "new\n" * 1000)
    assert written == ["new\n" * 1000]
    assert target.read_text() == "old and whole\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]  # the temporary file is gone


def test_a_failure_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "scored.jsonl"
    target.write_text('{"old": 1}\n')
    with pytest.raises(ValueError, match="Out of range float"):
        files.write_jsonl_atomic(str(target), [{"ok": 1.0}, {"bad": math.nan}])  # fails on row 2
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["scored.jsonl"]


def test_the_new_file_replaces_the_old_one_in_one_rename(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")
    renames = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda s, d: renames.append((s, d)) or real(s, d))
    files.write_atomic(target, json.dumps({"new": True}))
    assert json.loads(target.read_text()) == {"new": True}
    [(src, dst)] = renames
    assert os.path.dirname(src) == str(tmp_path) and dst == target  # beside it: the rename is atomic


def test_a_binary_writer_keeps_the_file_suffix(tmp_path):
    target = tmp_path / "plot.png"
    with files.atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers that read the format from it
        tmp.write_bytes(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"


def test_read_jsonl_names_a_missing_file_or_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        files.read_jsonl(str(tmp_path / "missing.jsonl"))
    with pytest.raises(IsADirectoryError, match="is a directory; give a JSONL file"):
        files.read_jsonl(str(tmp_path))


def test_a_new_file_gets_the_mode_of_a_plain_write_and_an_old_one_keeps_its_own(tmp_path):
    old_mask = os.umask(0o022)
    try:
        fresh = files.write_atomic(tmp_path / "new.md", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
        kept = tmp_path / "kept.sh"
        kept.write_text("old")
        kept.chmod(0o750)
        files.write_atomic(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old_mask)


def test_a_staged_adapter_puts_its_config_in_place_last(tmp_path, monkeypatch):
    """Files renamed one by one into an existing folder: the adapter's config goes last, so a folder
    that holds a config (what loaders look for) holds the weights it describes."""
    import os

    from sighead_eval import files

    target = tmp_path / "adapter"
    target.mkdir()
    order, real = [], os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: order.append(os.path.basename(b)) or real(a, b))
    with files.staged_dir(target) as tmp:
        for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "z.json"):
            (tmp / name).write_text(name)
    assert order[-1] == "adapter_config.json" and len(order) == 4
    assert (target / "adapter_model.safetensors").read_text() == "adapter_model.safetensors"
