"""Files in and out: one atomic writer for everything the package writes, and JSONL input.

A file is written to a temporary name beside its target and renamed over it: a reader (or a run
interrupted half way) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block ends without an error, it is renamed
    over `path` (the old file stays intact until then). On an error the temporary file goes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain write would have had
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes text (UTF-8) or bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def jsonl_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"


def write_jsonl_atomic(path: str, rows: list[dict]) -> None:
    """One JSON object per line, to `path` atomically, or to stdout when `path` is '-'."""
    if path == "-":
        for row in rows:
            sys.stdout.write(jsonl_line(row))
        return
    write_atomic(path, "".join(jsonl_line(row) for row in rows))


def non_finite_field(value, where: str = "") -> str | None:
    """The path (`a.b[2]`) of the first NaN or infinite number in a JSON-like value, or None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return where or "(the value)"
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{j}]", v) for j, v in enumerate(value))
    else:
        return None
    return next((w for path, v in items if (w := non_finite_field(v, path))), None)


def check_json_safe(records: list[dict], what: str = "record", lines: list[str] | None = None) -> None:
    """Fails, naming the record (or, given `lines`, its file and line) and the field, when a value
    could not be written back as JSON (NaN or infinity): before any model work, not at write time."""
    for i, record in enumerate(records):
        where = non_finite_field(record)
        if where is not None:
            raise ValueError(
                f"{lines[i] if lines else f'{what} {i}'}: field `{where}` holds a non-finite number (NaN or "
                "infinity), which the JSON output cannot carry; fix or drop it"
            )


def _utf8_line(raw: bytes, name: str, n: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{name}, line {n}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the "
            "line); save the file as UTF-8"
        ) from None


def check_utf8(path: str | os.PathLike) -> None:
    """Raises, naming the file and line, if a local text file is not UTF-8."""
    with open(path, "rb") as stream:
        for n, raw in enumerate(stream, 1):
            _utf8_line(raw, str(path), n)


def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a JSONL file (or stdin for '-'), with the line of any bad one."""
    return read_jsonl_lines(path)[0]


def read_jsonl_lines(path: str) -> tuple[list[dict], list[str]]:
    """`read_jsonl`, and where each record came from: `'<file>, line <n>'` (counted from 1; blank
    lines are skipped), for messages about a record."""
    if path != "-":
        if Path(path).is_dir():
            raise IsADirectoryError(f"--input {path!r} is a directory; give a JSONL file (or - for stdin)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--input {path!r}: no such file; give a JSONL file (or - for stdin)")
    name = "stdin" if path == "-" else path
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    records, where = [], []
    with stream:
        for n, raw in enumerate(stream, 1):
            line = _utf8_line(raw, name, n)
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg})") from None
            where.append(f"{name}, line {n}")
    if not records:
        raise ValueError(f"{path} holds no records; expected one JSON object per line")
    return records, where


def looks_like_a_path(name: str, suffixes: tuple[str, ...] = ()) -> bool:
    """Whether `name` means a local path rather than a hub id ('org/name'): it starts like a path,
    has more than one '/', or ends with one of `suffixes`. Such a name that does not exist is a
    typo to report, not a hub id to look up."""
    starts = name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..")
    return starts or name.count("/") > 1 or Path(name).suffix.lower() in suffixes


def check_output_dir(output: str | os.PathLike) -> Path:
    """Creates the results folder and checks that it is writable, before any model work."""
    path = Path(output)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(
            f"results folder {str(path)!r} is not writable ({err.strerror}); pass --output DIR"
        ) from None
    return path


def check_writable(folder: Path, what: str) -> None:
    """Creates `folder` (and its parents) and checks that a file can be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{what} cannot be written there ({err.strerror}); pass another path") from None


def check_output_file(path: str, option: str = "--output") -> None:
    """Checks, before any model work, that the file `path` ('-': stdout) can be written: not a
    folder, and its folder can be created and written to."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{option} {path!r} is a directory; give a file name (or - for stdout)")
    check_writable(target.parent, f"{option} {path!r}:")


def check_not_the_input(source: str, output: str, source_option: str = "--input") -> None:
    """Refuses an `--output` that is the input file (also by another name): it would replace it."""
    if output == "-" or source == "-":
        return
    out, src = Path(output), Path(source)
    if out.resolve() == src.resolve() or (out.exists() and src.exists() and out.samefile(src)):
        raise ValueError(
            f"--output {output!r} is the {source_option} file: it would be replaced; give another file"
        )


def check_new_output_dir(output: str | os.PathLike, overwrite: bool, writes: tuple[str, ...]) -> Path:
    """Checks, before any model work, a folder a command is about to write `writes` into: it must be
    new or empty, unless `overwrite` (then those files are replaced there, and nothing else is
    touched), and writable. Nothing is created but its parent folders."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output {str(path)!r} is a file; give a folder (new or empty)")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise ValueError(
            f"--output {str(path)!r} is not empty (it holds {shown}); give a new or empty folder, or pass "
            f"--overwrite to replace {', '.join(writes)} there (nothing else in it is touched)"
        )
    check_writable(path if path.is_dir() else path.parent, f"--output {str(path)!r}:")
    return path


#: The file `staged_dir` puts in place last (what loaders look for first).
LAST_IN_PLACE = "adapter_config.json"


@contextmanager
def staged_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a new, private folder to write a set of files into; when the block ends without an
    error they take their place in `target`: the whole folder is renamed to `target` when that did
    not exist, else each file is renamed over its namesake there (every file is the old one or the
    new one, never half of one; files of `target` not written are left alone). On an error the
    staged files go and `target` is as it was."""
    target = Path(target)
    inside = target.is_dir()  # stage inside an existing folder: its parent may not be writable
    home = target if inside else target.parent
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name or 'output'}.", suffix=".tmp", dir=home))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
        if not inside:
            os.replace(tmp, target)
            return
        # a PEFT adapter's config last: a folder holding a config holds the weights it describes
        for item in sorted(tmp.iterdir(), key=lambda i: (i.name == LAST_IN_PLACE, i.name)):
            if (target / item.name).is_dir():
                raise IsADirectoryError(f"{target / item.name} is a folder; cannot replace it with a file")
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
