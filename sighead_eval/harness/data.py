"""Dataset helpers shared by the tasks in `tasks/`: where the tasks live, text normalisation for
answer matching, number extraction, and loading a hub dataset or a local copy of it."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

TASK_MARKER = "sighead_geo_qa"  # a task folder every copy of the tasks has
#: Language names of the WMT language codes, for the translation tasks' prompts.
LANGUAGES = {
    "bn": "Bengali", "cs": "Czech", "de": "German", "en": "English", "et": "Estonian", "fi": "Finnish",
    "fr": "French", "gu": "Gujarati", "ha": "Hausa", "hi": "Hindi", "hr": "Croatian", "is": "Icelandic",
    "ja": "Japanese", "kk": "Kazakh", "km": "Khmer", "liv": "Livonian", "lt": "Lithuanian", "lv": "Latvian",
    "pl": "Polish", "ps": "Pashto", "ru": "Russian", "sah": "Yakut", "ta": "Tamil", "tr": "Turkish",
    "uk": "Ukrainian", "xh": "Xhosa", "zh": "Chinese", "zu": "Zulu", "he": "Hebrew", "iu": "Inuktitut",
    "es": "Spanish",
}  # fmt: skip


def tasks_dir() -> Path:
    """The folder of the project's lm-eval tasks: `sighead_eval/tasks` in an installed wheel,
    `tasks/` beside the package in a checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if (candidate / TASK_MARKER).is_dir():
            return candidate
    raise FileNotFoundError(
        f"the sighead-eval tasks were not found beside the package ({here / 'tasks'}) or in a checkout "
        f"({here.parent / 'tasks'}); reinstall the package: pip install --force-reinstall sighead-eval"
    )


def task_hooks(folder: str):
    """A task folder's `utils.py` (its dataset builder and judge), loaded by file path, the way
    lm-eval loads it, whether the tasks sit in a checkout or in the wheel."""
    import importlib.util

    path = tasks_dir() / folder / "utils.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"no task folder {folder!r} with a utils.py; known: {', '.join(task_names())}"
        )
    spec = importlib.util.spec_from_file_location(f"sighead_task_{folder}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_names() -> list[str]:
    """Names of the project's tasks (one folder each)."""
    return sorted(p.name for p in tasks_dir().iterdir() if p.is_dir() and list(p.glob("*.yaml")))


def stable_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def split_of(doc_id: str) -> str:
    """`dev` or `test`: a fixed half of each task's samples, by a hash of the sample id."""
    return "dev" if stable_hash(f"split:{doc_id}") % 2 == 0 else "test"


def normalize(text: str) -> str:
    """Lower case, accents and punctuation removed, single spaces: for matching answers."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def mentions(response: str, aliases) -> bool:
    """True if any alias occurs in the response as whole words (after `normalize`)."""
    padded = f" {normalize(response)} "
    return any(f" {a} " in padded for a in (normalize(x) for x in aliases) if a)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def numbers(text: str) -> list[float]:
    """Numbers written in the text, in order ('1,234' -> 1234; '-5' -> -5)."""
    out = []
    for m in _NUMBER.finditer(text):
        raw = m.group().replace(",", "")
        try:
            out.append(float(raw))
        except ValueError:
            continue
    return out


def load_source(hub_id: str, config: str | None, split: str, data_files=None, task: str = ""):
    """A hub dataset split, or the same data from local files (`data_files`: JSON lines, JSON,
    CSV or Parquet in the hub dataset's schema), as a `datasets.Dataset`."""
    import datasets

    if data_files:
        files = [data_files] if isinstance(data_files, (str, Path)) else list(data_files)
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{task}: data file(s) not found: {missing}")
        ext = Path(files[0]).suffix.lower().lstrip(".")
        builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
        if builder is None:
            raise ValueError(f"{task}: cannot read {files[0]}; accepted: .jsonl, .json, .csv, .parquet")
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # offline, gated, renamed: say how to run from a local copy
        raise RuntimeError(
            f"{task}: could not load the hub dataset {hub_id!r} ({config or 'default'}, {split}): {err}. "
            "Without hub access, pass a local copy in the same schema: "
            f'--metadata \'{{"data_files": "PATH.jsonl"}}\''
        ) from err


def as_test_split(rows: list[dict]):
    """`DatasetDict({'test': rows})`, as lm-eval's `custom_dataset` returns it."""
    import datasets

    if not rows:
        raise ValueError("the task built no samples")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
