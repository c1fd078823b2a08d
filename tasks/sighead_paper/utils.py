"""Hooks of the `sighead_paper_*` tasks: the paper's benchmarks, as its authors run them.

Each task reads the data in the layout of the authors' code (`TuAnh23/sigmoid-confidence`) and in
the schema of the hub datasets, and force-decodes each output as the reply to the authors' own
prompt, the reply starting with a space as theirs does:

- WMT22 / WMT24 (`data_dir`): a folder of line-aligned files, one segment per line: the source,
  the MT output and the human score (`test.<src>`, `test.<tgt>`, `da_z_score.txt` for WMT22;
  `text.src`, `text.tgt`, `text.scores` for WMT24; a `ref` file beside them is not needed).
  Or `data_files` in the schema of `RicardoRei/wmt-da-human-evaluation` (`lp, src, mt, score`).
- PAWS-X (`data_dir`): `<name>.sentence1`, `<name>.sentence2`, `<name>.label`; or the hub's
  `google-research-datasets/paws-x` schema (`sentence1, sentence2, label`).
- WMT24 ESA (`data_files`): the authors' JSON lines (`src, tgt, langs, esa_spans` with inclusive
  `start_i` / `end_i`, or `missing` for an omission), or MQM error-span rows (`src, mt, lp,
  annotations` with exclusive `start` / `end`).
- BioMQM: `zouharvi/bio-mqm-dataset` (`src, tgt, lang_src, lang_tgt, errors_tgt` with inclusive
  `startIndex` / `endIndex`), from the hub or `data_files` in its schema; or MQM error-span rows.
- GSM8K / TruthfulQA, judged: the outputs a model generated and a judge's score of each. In the
  authors' layout, `responses_file` is their `results.json` (its `pred_txt` list) and `judge_file`
  their judge's scores (`qwen25_72B.txt`: one number a line, `None` where the judge gave none),
  both in the order of the hub split (`openai/gsm8k` main/test, `domenicrosati/TruthfulQA` train;
  `questions_file` is a local copy of that split, for machines without the hub).
  Or `data_files`: JSON lines with `question`, `response` and `judge`. An output is correct when
  its score is at least `judge_threshold` (default 0.5).
"""

from __future__ import annotations

import json
from pathlib import Path

from sighead_eval.harness.confidence import binary_results, graded_results
from sighead_eval.harness.data import LANGUAGES, as_test_split, load_source, split_of
from sighead_eval.harness.spans import span_results

#: The authors' prompts (`prepare_data.example_to_chat_format`); the reply is " " + the output.
TRANSLATE = "Translate the following text from {source} into {target}.\n{source}: {src}.\n{target}: "
PARAPHRASE = 'What is a different but equivalent (paraphrase) way of saying: "{sentence}"?\n'


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n")


def _need(task: str, **given) -> None:
    if not any(v not in (None, "") for v in given.values()):
        names = " or ".join(f"`{k}`" for k in given)
        raise ValueError(
            f"{task}: the authors' data is not on the hub; give {names} in --metadata (the task's README "
            "names the files each takes)"
        )


def _aligned(task: str, folder: Path, names: dict[str, list[str]]) -> dict[str, list[str]]:
    """The first existing file of each candidate list in `folder`, read as lines of equal count."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{task}: data_dir {str(folder)!r} is not a folder")
    out = {}
    for key, candidates in names.items():
        found = [folder / c for c in candidates if (folder / c).is_file()]
        if not found:
            raise FileNotFoundError(f"{task}: {str(folder)!r} has none of {candidates} (the {key} file)")
        out[key] = _lines(found[0])
    counts = {k: len(v) for k, v in out.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{task}: the files in {str(folder)!r} have different line counts {counts}")
    return out


def _translation_doc(task: str, i: int, lp: str, src: str, mt: str, score: float) -> dict:
    source, _, target = lp.partition("-")
    doc_id = f"{lp}-{i}"
    return {
        "id": doc_id,
        "type": lp,
        "split": split_of(f"{task}/{doc_id}"),
        "prompt": TRANSLATE.format(
            source=LANGUAGES.get(source, source), target=LANGUAGES.get(target, target), src=src
        ),
        "reply": " " + mt,
        "score": float(score),
    }


def translation_docs(task: str, lp: str, data_dir=None, data_files=None, year=None) -> list[dict]:
    """WMT segments with human scores: the authors' folder, or rows in the WMT DA hub schema."""
    _need(task, data_dir=data_dir, data_files=data_files)
    source, _, target = lp.partition("-")
    if data_dir:
        cols = _aligned(
            task,
            Path(data_dir),
            {"source": ["text.src", f"test.{source}"], "MT": ["text.tgt", f"test.{target}"],
             "score": ["text.scores", "da_z_score.txt"]},
        )  # fmt: skip
        rows = zip(cols["source"], cols["MT"], cols["score"])
        return [_translation_doc(task, i, lp, s, m, float(q)) for i, (s, m, q) in enumerate(rows)]
    rows = load_source("", None, "train", data_files, task=task).to_list()
    rows = [r for r in rows if r.get("lp", lp) == lp and (year in (None, "") or int(r["year"]) == int(year))]
    if not rows:
        raise ValueError(f"{task}: no rows for lp={lp!r} in {data_files!r}")
    return [_translation_doc(task, i, lp, r["src"], r["mt"], r["score"]) for i, r in enumerate(rows)]


def graded_dataset(task: str, lp: str):
    def dataset(data_dir=None, data_files=None, year=None, **kwargs):
        return as_test_split(translation_docs(task, lp, data_dir, data_files, year))

    return dataset


dataset_wmt22_ende_bestmt = graded_dataset("sighead_paper_wmt22_ende_bestmt", "en-de")
dataset_wmt22_ende_worstmt = graded_dataset("sighead_paper_wmt22_ende_worstmt", "en-de")
dataset_wmt24_ende_bestmt = graded_dataset("sighead_paper_wmt24_ende_bestmt", "en-de")
dataset_wmt24_ende_worstmt = graded_dataset("sighead_paper_wmt24_ende_worstmt", "en-de")
dataset_wmt24_ende_allmt = graded_dataset("sighead_paper_wmt24_ende_allmt", "en-de")
dataset_wmt24_enzh_bestmt = graded_dataset("sighead_paper_wmt24_enzh_bestmt", "en-zh")
dataset_wmt24_enzh_worstmt = graded_dataset("sighead_paper_wmt24_enzh_worstmt", "en-zh")
dataset_wmt24_enzh_allmt = graded_dataset("sighead_paper_wmt24_enzh_allmt", "en-zh")
dataset_wmt24_enes = graded_dataset("sighead_paper_wmt24_enes", "en-es")


def process_graded(doc, results):
    return graded_results(results, doc["score"])


# -- PAWS-X ---------------------------------------------------------------------------------------
def pawsx_docs(rows) -> list[dict]:
    docs = []
    for i, (first, second, label) in enumerate(rows):
        if not first or not second:
            continue
        doc_id = str(i)
        docs.append(
            {
                "id": doc_id,
                "type": "paraphrase" if int(label) else "non-paraphrase",
                "split": split_of(f"sighead_paper_pawsx/{doc_id}"),
                "prompt": PARAPHRASE.format(sentence=first),
                "reply": " " + second,
                "label": int(label),
            }
        )
    return docs


def dataset_pawsx(data_dir=None, data_files=None, language="en", split="test", **kwargs):
    task = "sighead_paper_pawsx"
    if data_dir:
        folder = Path(data_dir)
        stems = (
            sorted({p.name[: -len(".sentence1")] for p in folder.glob("*.sentence1")})
            if folder.is_dir()
            else []
        )
        if len(stems) != 1:
            raise FileNotFoundError(
                f"{task}: data_dir {str(folder)!r} should hold one <name>.sentence1 / .sentence2 / .label "
                f"set, found {len(stems)}"
            )
        cols = _aligned(task, folder, {k: [f"{stems[0]}.{k}"] for k in ("sentence1", "sentence2", "label")})
        return as_test_split(pawsx_docs(zip(cols["sentence1"], cols["sentence2"], cols["label"])))
    rows = load_source("google-research-datasets/paws-x", language, split, data_files, task=task).to_list()
    return as_test_split(pawsx_docs((r["sentence1"], r["sentence2"], r["label"]) for r in rows))


def process_binary(doc, results):
    return binary_results(results, bool(doc["label"]))


# -- error spans ----------------------------------------------------------------------------------
def _esa_spans(row: dict) -> list[list[int]]:
    spans = []
    for s in row.get("esa_spans") or []:
        if s["start_i"] == "missing" or s["end_i"] == "missing":
            continue  # an omission marks no character of the output
        spans.append([int(s["start_i"]), int(s["end_i"]) + 1])
    return spans


def span_rows(task: str, rows: list[dict]) -> list[dict]:
    """Rows of any accepted schema as `(src, mt, lp, spans)` with exclusive character ends."""
    out = []
    for r in rows:
        if "esa_spans" in r:  # the authors' WMT24 ESA file
            out.append((r["src"], r["tgt"], r["langs"], _esa_spans(r)))
        elif "errors_tgt" in r:  # BioMQM's hub schema
            spans = [[int(e["startIndex"]), int(e["endIndex"]) + 1] for e in r["errors_tgt"] or []]
            out.append((r["src"], r["tgt"], f"{r['lang_src']}-{r['lang_tgt']}", spans))
        elif "annotations" in r:  # MQM error-span rows (RicardoRei/wmt-mqm-error-spans)
            spans = [[int(a["start"]), int(a["end"])] for a in r["annotations"] or [] if int(a["start"]) >= 0]
            out.append((r["src"], r["mt"], r.get("lp", ""), spans))
        else:
            raise ValueError(
                f"{task}: a row has keys {sorted(r)}; accepted: the authors' ESA lines (src, tgt, langs, "
                "esa_spans), BioMQM (src, tgt, lang_src, lang_tgt, errors_tgt) or MQM error spans (src, mt, "
                "lp, annotations)"
            )
    return out


def span_docs(task: str, rows, lp) -> list[dict]:
    docs = []
    for i, (src, mt, pair, spans) in enumerate(span_rows(task, rows)):
        if lp not in (None, "", "all") and pair != lp:
            continue
        source, _, target = (pair or lp or "-").partition("-")
        doc_id = f"{pair}-{i}"
        docs.append(
            {
                "id": doc_id,
                "type": pair,
                "split": split_of(f"{task}/{doc_id}"),
                "prompt": TRANSLATE.format(
                    source=LANGUAGES.get(source, source), target=LANGUAGES.get(target, target), src=src
                ),
                "reply": " " + mt,
                "spans": [[a + 1, b + 1] for a, b in spans],  # characters of the reply (after its space)
            }
        )
    if not docs:
        raise ValueError(f"{task}: no rows for lp={lp!r}")
    return docs


def _jsonl(path) -> list[dict]:
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def dataset_wmt24_esa(data_files=None, lp="en-es", **kwargs):
    task = "sighead_paper_wmt24_esa"
    _need(task, data_files=data_files)
    return as_test_split(span_docs(task, _jsonl(data_files), lp))


def dataset_biomqm(data_files=None, lp="all", **kwargs):
    task = "sighead_paper_biomqm"
    if data_files and str(data_files).endswith(".jsonl"):
        rows = _jsonl(data_files)  # nested error lists: read as they are, not through a table schema
    else:
        rows = load_source("zouharvi/bio-mqm-dataset", None, "test", data_files, task=task).to_list()
    return as_test_split(span_docs(task, rows, lp))


def process_spans(doc, results):
    return span_results(results, doc["split"], doc["spans"])


# -- judged generations ---------------------------------------------------------------------------
#: Where the judged tasks' questions come from: (hub id, config, split, question column).
QUESTIONS = {
    "sighead_paper_gsm8k": ("openai/gsm8k", "main", "test", "question"),
    "sighead_paper_truthfulqa": ("domenicrosati/TruthfulQA", None, "train", "Question"),
}


def _judged(task: str, data_files, responses_file, judge_file, judge_threshold, questions_file) -> list[dict]:
    _need(task, data_files=data_files, responses_file=responses_file)
    if data_files:
        rows = [(r["question"], r["response"], r["judge"]) for r in _jsonl(data_files)]
    else:
        _need(task, judge_file=judge_file)
        responses = json.loads(Path(responses_file).read_text(encoding="utf-8"))
        responses = responses["pred_txt"] if isinstance(responses, dict) else responses
        judged = _lines(Path(judge_file))
        hub_id, config, split, column = QUESTIONS[task]
        questions = [
            r[column] for r in load_source(hub_id, config, split, questions_file, task=task).to_list()
        ]
        if not len(questions) == len(responses) == len(judged):
            raise ValueError(
                f"{task}: {len(questions)} questions, {len(responses)} responses, {len(judged)} judge "
                "scores; the three should be the same rows in the same order"
            )
        rows = zip(questions, responses, judged)
    docs = []
    for i, (question, reply, judge) in enumerate(rows):
        if judge in (None, "", "None") or reply in (None, ""):
            continue  # no judgement: left out, as the authors leave NaN pairs out
        doc_id = str(i)
        docs.append(
            {
                "id": doc_id,
                "type": task.rsplit("_", 1)[-1],
                "split": split_of(f"{task}/{doc_id}"),
                "prompt": question,
                "reply": " " + str(reply),
                "label": int(float(judge) >= float(judge_threshold)),
                "judge": float(judge),
            }
        )
    return docs


def dataset_gsm8k(data_files=None, responses_file=None, judge_file=None, judge_threshold=0.5, **kwargs):
    task, questions = "sighead_paper_gsm8k", kwargs.get("questions_file")
    return as_test_split(_judged(task, data_files, responses_file, judge_file, judge_threshold, questions))


def dataset_truthfulqa(data_files=None, responses_file=None, judge_file=None, judge_threshold=0.5, **kwargs):
    task, questions = "sighead_paper_truthfulqa", kwargs.get("questions_file")
    return as_test_split(_judged(task, data_files, responses_file, judge_file, judge_threshold, questions))
