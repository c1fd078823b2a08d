"""Files in and out: one atomic writer for everything the package writes, and JSONL input.

A file is written to a temporary name beside its target and renamed over it: a reader (or a run
interrupted half way) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
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


def check_json_safe(records: list[dict], what: str = "record") -> None:
    """Fails, naming the record and the field, when a value could not be written back as JSON
    (NaN or infinity): before any model work, not at write time."""
    import math

    def walk(value, where: str):
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, dict):
            return next((w for k, v in value.items() if (w := walk(v, f"{where}.{k}" if where else k))), None)
        if isinstance(value, list):
            return next((w for j, v in enumerate(value) if (w := walk(v, f"{where}[{j}]"))), None)
        return None

    for i, record in enumerate(records):
        where = walk(record, "")
        if where is not None:
            raise ValueError(
                f"{what} {i}: field `{where}` holds a non-finite number (NaN or infinity), which the JSON "
                "output cannot carry; fix or drop it"
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
    if path != "-":
        if Path(path).is_dir():
            raise IsADirectoryError(f"--input {path!r} is a directory; give a JSONL file (or - for stdin)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--input {path!r}: no such file; give a JSONL file (or - for stdin)")
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    records = []
    with stream:
        for n, raw in enumerate(stream, 1):
            line = _utf8_line(raw, "stdin" if path == "-" else path, n)
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg})") from None
    if not records:
        raise ValueError(f"{path} holds no records; expected one JSON object per line")
    return records


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
