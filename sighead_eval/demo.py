"""`sighead-eval demo`: the default model answers a few questions; every estimator scores them.

Two settings, as in the paper: the model scores its own greedy answers ("self"), and it
force-decodes a correct and a fact-swapped answer to each question ("other"). For each estimator
and aggregation the table gives how well its confidence separates correct from wrong answers
(ROC-AUC, PRR, average precision, from `sighead_eval.metrics`). With 24 forced answers it is a
smoke-sized comparison, not a benchmark.
"""

from __future__ import annotations

import os
from pathlib import Path

# (question, a word every correct answer contains, a correct answer, the same with one fact swapped)
QUESTIONS = [
    (
        "What is the capital of France?",
        "Paris",
        "The capital of France is Paris.",
        "The capital of France is Madrid.",
    ),
    (
        "What is the capital of Japan?",
        "Tokyo",
        "The capital of Japan is Tokyo.",
        "The capital of Japan is Beijing.",
    ),
    (
        "What is the capital of Italy?",
        "Rome",
        "The capital of Italy is Rome.",
        "The capital of Italy is Vienna.",
    ),
    (
        "What is the capital of Germany?",
        "Berlin",
        "The capital of Germany is Berlin.",
        "The capital of Germany is Oslo.",
    ),
    (
        "What is the capital of Egypt?",
        "Cairo",
        "The capital of Egypt is Cairo.",
        "The capital of Egypt is Nairobi.",
    ),
    (
        "What is the capital of Canada?",
        "Ottawa",
        "The capital of Canada is Ottawa.",
        "The capital of Canada is Lima.",
    ),
    ("How many legs does a spider have?", "eight", "A spider has eight legs.", "A spider has six legs."),
    (
        "What is the largest planet in the Solar System?",
        "Jupiter",
        "The largest planet is Jupiter.",
        "The largest planet is Mars.",
    ),
    ("What is 7 times 8?", "56", "7 times 8 is 56.", "7 times 8 is 54."),
    (
        "Who wrote Romeo and Juliet?",
        "Shakespeare",
        "Romeo and Juliet was written by William Shakespeare.",
        "Romeo and Juliet was written by Charles Dickens.",
    ),
    (
        "What is the chemical symbol for gold?",
        "Au",
        "The chemical symbol for gold is Au.",
        "The chemical symbol for gold is Ag.",
    ),
    (
        "What is the boiling point of water at sea level in Celsius?",
        "100",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 70 degrees Celsius at sea level.",
    ),
]
SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-135m-instruct-wiki"
ROWS = tuple(f"{e}_{a}" for e in ("sigmoid", "softmax", "boostedprob") for a in ("mean", "prod")) + (
    "entropy_mean",
)
COLUMNS = ("roc_auc", "prr", "average_precision")


def confidence(scores: dict, name: str) -> float:
    """Higher = more confident: entropy is negated."""
    return -scores[name] if name.startswith("entropy") else scores[name]


def comparison_table(results, correct: list[int], title: str) -> list[str]:
    """Markdown lines: ROC-AUC, PRR and average precision per estimator; best per column in bold."""
    from . import metrics

    per_text = [r.sequence_scores() for r in results]
    rows = [r for r in ROWS if r in per_text[0]]
    values = {}
    for name in rows:
        conf = [confidence(s, name) for s in per_text]
        values[name] = metrics.quality_metrics(conf, correct, metrics=list(COLUMNS))
    best = {c: max(values[r][c] for r in rows) for c in COLUMNS}
    lines = [f"### {title}", "", "| estimator | ROC-AUC | PRR | avg. precision |", "|---|---|---|---|"]
    for name in rows:
        cells = [
            f"**{values[name][c]:.3f}**" if values[name][c] == best[c] else f"{values[name][c]:.3f}"
            for c in COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _check_output(output: str) -> Path:
    path = Path(output)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"results folder {str(path)!r} is not writable ({err.strerror}); pass --output DIR"
        ) from None
    return path


def run_demo(model: str | None = None, adapter: str | None = None, output: str = "results/demo") -> int:
    from peft import get_peft_model

    from . import SigmoidHeadConfig
    from .cli import write_jsonl_atomic
    from .models import check_adapter_dir, load_model
    from .scoring import GenerationOptions, generate, score

    out_dir = _check_output(output)  # bad input stops before any model work
    if adapter is None and (SHIPPED_ADAPTER / "adapter_config.json").is_file() and model is None:
        adapter = str(SHIPPED_ADAPTER)
    if adapter is not None:
        check_adapter_dir(adapter)
    lm, tokenizer = load_model(model, adapter=adapter)
    if adapter is None:
        print(
            "note: no trained Sigmoid Head given or shipped: using an UNTRAINED head "
            "(a copy of the LM head), whose scores are not meaningful. Pass --adapter DIR for a trained one."
        )
        lm = get_peft_model(lm, SigmoidHeadConfig()).eval()
    else:
        print(f"Sigmoid Head: {adapter}")

    own = generate(
        lm, tokenizer, [{"prompt": q} for q, *_ in QUESTIONS], generation=GenerationOptions(max_new_tokens=32)
    )
    pairs = [(q, r, ok) for q, _, good, bad in QUESTIONS for r, ok in ((good, 1), (bad, 0))]
    forced = score(lm, tokenizer, [{"prompt": q, "response": r, "correct": ok} for q, r, ok in pairs])
    own_correct = [int(key.lower() in r.response.lower()) for (_, key, _, _), r in zip(QUESTIONS, own)]

    lines = ["## The model's own answers (greedy)", ""]
    lines += [
        "| question | answer | correct | sigmoid_mean | softmax_mean | boostedprob_mean |",
        "|---" * 6 + "|",
    ]
    for (q, *_), r, ok in zip(QUESTIONS, own, own_correct):
        s = r.sequence_scores()
        answer = r.response.replace("\n", " ").replace("|", "/")[:60]
        cells = " | ".join(f"{s[c]:.3f}" for c in ("sigmoid_mean", "softmax_mean", "boostedprob_mean"))
        lines.append(f"| {q} | {answer} | {'yes' if ok else 'no'} | {cells} |")
    lines += ["", "## Does the confidence separate correct from wrong answers?", ""]
    correct = [ok for _, _, ok in pairs]
    lines += comparison_table(
        forced, correct, f"Correct vs fact-swapped answers, force-decoded ({len(pairs)})"
    )
    if 0 < sum(own_correct) < len(own_correct):
        lines += comparison_table(own, own_correct, f"Own answers ({sum(own_correct)}/{len(own)} correct)")
    else:
        lines += [
            f"Own answers: {sum(own_correct)}/{len(own)} correct, one class only, so no ranking metric.",
            "",
        ]
    table = "\n".join(lines)
    print(table)
    (out_dir / "demo.md").write_text(table + "\n")
    write_jsonl_atomic(os.fspath(out_dir / "own_answers.jsonl"), [r.to_dict() for r in own])
    write_jsonl_atomic(os.fspath(out_dir / "forced_answers.jsonl"), [r.to_dict() for r in forced])
    print(f"\nwrote {out_dir}/demo.md, own_answers.jsonl, forced_answers.jsonl")
    return 0
