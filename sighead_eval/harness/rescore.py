"""`sighead-eval rescore`: every estimator attached to a saved lm-eval run of any backend.

Users generate fast with `lm_eval --model vllm` (or any backend) and `--log_samples`. This reads
that run's samples file (`samples_<task>_<date>.jsonl`), force-decodes the text lm-eval kept for
each sample (its filtered response; for a log-likelihood request, each continuation) after the
context lm-eval gave the model, on a model with a Sigmoid Head, in one batched pass
(`scoring.score`), and writes the samples back with the scores under `sighead`, in the shape the
`sighead` model attaches to its outputs. With `--quality KEY` (a per-sample metric lm-eval logged,
e.g. `exact_match` or `acc`), it also prints how well each confidence ranks the samples by it.

The context is taken as lm-eval logged it (chat template applied, if it was): it is tokenised as
is, with no special tokens added, as HFLM does for a causal model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_samples(path: Path) -> list[dict]:
    """The samples of an lm-eval samples file (JSONL), checked: each line an object with `arguments`
    and `resps`. Refusals name the file and the line (from 1)."""
    samples = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
            if not isinstance(sample, dict) or not isinstance(sample.get("arguments"), dict):
                raise ValueError(
                    f"{path}, line {number}: not an lm-eval sample (an object with `arguments` and `resps`, "
                    "as `lm_eval --log_samples` writes them)"
                )
            samples.append(sample)
    if not samples:
        raise ValueError(
            f"{path}: no samples; give a samples_<task>_<date>.jsonl file of `lm_eval --log_samples`"
        )
    return samples


def pairs(sample: dict, where: str) -> list[tuple[str, str]]:
    """`(context, kept text)` of a sample: one for a generation (its filtered response), one per
    continuation for log-likelihood requests."""
    args = [sample["arguments"][k] for k in sorted(sample["arguments"], key=_arg_order)]
    out = []
    for a in args:
        context, second = a.get("arg_0"), a.get("arg_1")
        if not isinstance(context, str):
            raise ValueError(f"{where}: `arguments` holds no context string (arg_0)")
        if isinstance(second, str):  # loglikelihood: (context, continuation)
            out.append((context, second))
        else:  # generate_until: (context, generation kwargs); the text lm-eval kept
            out.append((context, _kept_text(sample, where)))
            break
    return out


def _arg_order(key: str) -> int:
    tail = key.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _kept_text(sample: dict, where: str) -> str:
    filtered = sample.get("filtered_resps")
    if isinstance(filtered, list) and filtered and isinstance(filtered[0], str):
        return filtered[0]
    resps = sample.get("resps")
    if isinstance(resps, list) and resps and isinstance(resps[0], list) and isinstance(resps[0][0], str):
        return resps[0][0]
    raise ValueError(f"{where}: no generated text in `filtered_resps` or `resps`")


def rescore(samples: list[dict], model, tokenizer, options, path: str = "samples") -> list[dict]:
    """`samples` with `sighead` added to each: the summary of its kept text (a generation), or a list
    of summaries, one per continuation (log-likelihood requests). One batched scoring pass."""
    from ..scoring import score

    records, owners = [], []
    for number, sample in enumerate(samples, 1):
        for context, text in pairs(sample, f"{path}, sample {number}"):
            ids = tokenizer(context, add_special_tokens=False)["input_ids"] or [tokenizer.bos_token_id]
            records.append({"prompt_token_ids": ids, "response": text})
            owners.append(number - 1)
    results = score(model, tokenizer, records, options)
    out = [dict(s) for s in samples]
    for owner, result in zip(owners, results):
        summary = result.summary()
        summary["scored_by"] = "force-decoding"
        if len(pairs(samples[owner], "")) == 1:
            out[owner]["sighead"] = summary
        else:
            out[owner].setdefault("sighead", []).append(summary)
    return out


def quality_table(samples: list[dict], key: str) -> dict[str, dict[str, float]]:
    """ROC-AUC and PRR of each sequence confidence against the per-sample metric `key` (binary:
    ROC-AUC and PRR; graded: PRR), over the generated samples."""
    from .. import metrics as core
    from ..estimators import CONFIDENCES, confidence

    kept = [s for s in samples if isinstance(s.get("sighead"), dict)]
    if not kept or any(key not in s for s in kept):
        raise ValueError(f"--quality {key}: not a per-sample metric of every sample (e.g. exact_match, acc)")
    import numpy as np

    quality = np.array([float(s[key]) for s in kept])
    binary = set(np.unique(quality)) <= {0.0, 1.0}
    table: dict[str, dict[str, float]] = {}
    for name in CONFIDENCES:
        values = [confidence(s["sighead"]["sequence"], s["sighead"]["n_tokens"], name) for s in kept]
        if any(v is None for v in values):
            continue
        c = np.array(values, dtype=float)
        row = {"prr": core.prr(c, quality)}
        if binary:
            row["auroc"] = core.rank_auroc(c, quality)
        table[name] = row
    return table


def format_table(table: dict[str, dict[str, float]], key: str, n: int) -> str:
    metrics = sorted({m for row in table.values() for m in row})
    lines = [
        f"how well each confidence ranks {n} samples by `{key}`:",
        "| confidence | " + " | ".join(metrics) + " |",
    ]
    lines.append("|---|" + "---|" * len(metrics))
    for name, row in table.items():
        cells = ["n/a" if not math.isfinite(row.get(m, math.nan)) else f"{row[m]:.3f}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(ns: Any) -> int:
    """The command: read, check, load, score, write beside then rename, print."""
    from ..files import write_atomic
    from ..models import check_adapter_dir, load_model
    from ..scoring import ScoringOptions

    source = Path(ns.samples)
    if not source.is_file():
        raise ValueError(f"--samples {source}: no such file; give a samples_<task>_<date>.jsonl of lm-eval")
    output = Path(ns.output)
    if output.resolve() == source.resolve():
        raise ValueError(f"--output {output} is the --samples file; write the scored samples beside it")
    if output.exists() and output.is_dir():
        raise ValueError(f"--output {output} is a folder; give a file name (JSONL)")
    if not output.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {output.parent} does not exist")
    samples = read_samples(source)
    for number, sample in enumerate(samples, 1):
        pairs(sample, f"{source}, line {number}")  # every sample readable, before the model loads
    if ns.adapter is not None:
        check_adapter_dir(ns.adapter)
    model, tokenizer = load_model(ns.model, adapter=ns.adapter, dtype=ns.dtype, device=ns.device)
    options = ScoringOptions(chat_template=False, batch_size=ns.batch_size, estimators=ns.estimators)
    scored = rescore(samples, model, tokenizer, options, str(source))
    write_atomic(output, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scored))
    print(f"{len(scored)} samples scored with every estimator -> {output}")
    if ns.quality:
        table = quality_table(scored, ns.quality)
        print(format_table(table, ns.quality, sum(isinstance(s.get("sighead"), dict) for s in scored)))
    return 0
