"""`sighead-eval rescore`: every estimator attached to a saved lm-eval run of any backend.

Users generate fast with `lm_eval --model vllm` (or any backend) and `--log_samples`. This reads
that run's samples file (`samples_<task>_<date>.jsonl`), force-decodes what the model wrote for
each document (its response as lm-eval cut it at the stop sequences, before any answer-extraction
filter; for log-likelihood requests, each continuation) after the context lm-eval gave the model,
on a model with a Sigmoid Head, in one batched pass (`scoring.score`), and writes the samples back
with the scores under `sighead`: a generation's summary, or a list of one summary per
continuation. lm-eval logs a document once per filter; each is scored once. With `--quality KEY`
(a per-sample metric lm-eval logged, e.g. `exact_match` or `acc`), it also prints how well each
confidence ranks the generated samples of one filter (`--filter`, default the first) by it.

The context is taken as lm-eval logged it (chat template applied, if it was) and tokenised as HFLM
tokenises a causal model's context: the tokenizer's special tokens, unless the text already
starts with the BOS token. Rolling log-likelihood samples (perplexity) have nothing to score and
are refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def read_samples(path: Path) -> list[dict]:
    """The samples of an lm-eval samples file (JSONL), checked: each line an object with
    `arguments`. Refusals name the file and the line (from 1)."""
    from ..files import read_jsonl_lines

    samples, where = read_jsonl_lines(str(path))
    for sample, line in zip(samples, where):
        if not isinstance(sample, dict) or not isinstance(sample.get("arguments"), dict):
            raise ValueError(
                f"{line}: not an lm-eval sample (an object with `arguments` and `resps`, as "
                "`lm_eval --log_samples` writes them)"
            )
    return samples


def pairs(sample: dict, where: str) -> tuple[str, list[tuple[str, str]]]:
    """`(kind, [(context, text)])` of a sample: `generation` and the response the model wrote, or
    `loglikelihood` and one pair per continuation."""
    args = [sample["arguments"][k] for k in sorted(sample["arguments"], key=_arg_order)]
    if not args or not all(isinstance(a, dict) and isinstance(a.get("arg_0"), str) for a in args):
        raise ValueError(f"{where}: `arguments` holds no context string (arg_0)")
    if all(isinstance(a.get("arg_1"), str) for a in args):  # (context, continuation) each
        return "loglikelihood", [(a["arg_0"], a["arg_1"]) for a in args]
    if len(args) == 1 and isinstance(args[0].get("arg_1"), dict):  # (context, generation kwargs)
        return "generation", [(args[0]["arg_0"], _written_text(sample, where))]
    raise ValueError(
        f"{where}: neither a generation (context, generation kwargs) nor log-likelihood requests "
        "(context, continuation); rolling log-likelihoods (perplexity) have no text to score"
    )


def _arg_order(key: str) -> int:
    tail = key.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _written_text(sample: dict, where: str) -> str:
    """The response as the model wrote it and lm-eval cut it (`resps`), not an extraction filter's
    answer (`filtered_resps`, e.g. the number a math task's filter takes out of it)."""
    resps = sample.get("resps")
    if isinstance(resps, list) and resps and isinstance(resps[0], list) and isinstance(resps[0][0], str):
        return resps[0][0]
    raise ValueError(f"{where}: no generated text in `resps`")


def rescore(samples: list[dict], model, tokenizer, options, path: str = "samples") -> list[dict]:
    """`samples` with `sighead` added to each: the summary of its kept text (a generation), or a list
    of summaries, one per continuation (log-likelihood requests). One batched scoring pass."""
    from ..scoring import hflm_context_ids, score

    records, owners, kinds = [], [], {}
    for number, sample in enumerate(samples, 1):
        doc = sample.get("doc_id", number)
        if doc in kinds:
            continue  # the same document under another filter: scored once
        kinds[doc], texts = pairs(sample, f"{path}, sample {number}")
        for context, text in texts:
            records.append({"prompt_token_ids": hflm_context_ids(tokenizer, context), "response": text})
            owners.append(doc)
    results = score(model, tokenizer, records, options)
    scored: dict[Any, list] = {}
    for doc, result in zip(owners, results):
        summary = result.summary()
        summary["scored_by"] = "force-decoding"
        scored.setdefault(doc, []).append(summary)
    out = []
    for number, sample in enumerate(samples, 1):
        doc = sample.get("doc_id", number)
        summaries = scored[doc]
        out.append({**sample, "sighead": summaries[0] if kinds[doc] == "generation" else summaries})
    return out


def judged_samples(samples: list[dict], key: str, filter_name: str | None) -> list[dict]:
    """The generated samples of one filter (`filter_name`, default the first), checked to carry the
    per-sample metric `key`."""
    names = list(dict.fromkeys(s.get("filter") for s in samples))
    name = names[0] if filter_name is None else filter_name
    if name not in names:
        raise ValueError(f"--filter {filter_name}: not a filter of these samples; they have {names}")
    kept = [s for s in samples if s.get("filter") == name]
    if not any(isinstance(a.get("arg_1"), dict) for s in kept for a in s["arguments"].values()):
        raise ValueError(f"--quality {key}: needs generated samples; these are log-likelihood requests")
    missing = [s.get("doc_id") for s in kept if key not in s]
    if missing:
        raise ValueError(
            f"--quality {key}: not a per-sample metric of filter {name!r} (doc {missing[0]} lacks it); "
            "give one lm-eval logged, e.g. exact_match or acc"
        )
    return kept


def quality_table(
    samples: list[dict], key: str, filter_name: str | None = None
) -> dict[str, dict[str, float]]:
    """ROC-AUC and PRR of each sequence confidence against the per-sample metric `key` (binary:
    ROC-AUC and PRR; graded: PRR), over the generated samples of one filter."""
    from .. import metrics as core
    from ..estimators import CONFIDENCES, confidence

    kept = judged_samples(samples, key, filter_name)
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
    from ..adapter.io import check_adapter_dir
    from ..files import check_not_the_input, check_output_file, write_jsonl_atomic
    from ..models import load_model
    from ..scoring import ScoringOptions

    source = Path(ns.samples)
    if not source.is_file():
        raise ValueError(f"--samples {source}: no such file; give a samples_<task>_<date>.jsonl of lm-eval")
    check_output_file(ns.output)
    check_not_the_input(ns.samples, ns.output, "--samples")
    samples = read_samples(source)
    for number, sample in enumerate(samples, 1):
        pairs(sample, f"{source}, line {number}")  # every sample readable, before the model loads
    if ns.quality:
        judged_samples(samples, ns.quality, ns.filter)
    options = ScoringOptions(
        chat_template=False, batch_size=ns.batch_size, estimators=ns.estimators, truncation="left"
    )
    if ns.adapter is not None:
        check_adapter_dir(ns.adapter)
    model, tokenizer = load_model(ns.model, adapter=ns.adapter, dtype=ns.dtype, device=ns.device)
    scored = rescore(samples, model, tokenizer, options, str(source))
    write_jsonl_atomic(ns.output, scored)
    if ns.output != "-":
        print(f"{len(scored)} samples scored with every estimator -> {ns.output}")
    if ns.quality:
        table = quality_table(scored, ns.quality, ns.filter)
        print(format_table(table, ns.quality, len(judged_samples(scored, ns.quality, ns.filter))))
    return 0
