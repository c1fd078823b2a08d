"""`sighead-eval demo`: the default model answers a few questions; every estimator scores them.

Two settings, as in the paper: the model scores its own greedy answers ("self"), and it
force-decodes a correct and a fact-swapped answer to the same question ("other"). The printed
table shows, per estimator, how often the correct forced answer gets the higher confidence.
"""

from __future__ import annotations

import os
from pathlib import Path

# (question, correct answer, the same answer with one fact swapped)
QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Madrid."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Beijing."),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "The capital of Italy is Vienna."),
    (
        "What is the capital of Germany?",
        "The capital of Germany is Berlin.",
        "The capital of Germany is Oslo.",
    ),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo.", "The capital of Egypt is Nairobi."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa.", "The capital of Canada is Lima."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    (
        "What is the largest planet in the Solar System?",
        "The largest planet is Jupiter.",
        "The largest planet is Mars.",
    ),
    ("What is 7 times 8?", "7 times 8 is 56.", "7 times 8 is 54."),
    (
        "Who wrote Romeo and Juliet?",
        "Romeo and Juliet was written by William Shakespeare.",
        "Romeo and Juliet was written by Charles Dickens.",
    ),
    (
        "What is the chemical symbol for gold?",
        "The chemical symbol for gold is Au.",
        "The chemical symbol for gold is Ag.",
    ),
    (
        "What is the boiling point of water at sea level in Celsius?",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 70 degrees Celsius at sea level.",
    ),
]
SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "adapters" / "smollm2-135m-instruct-wiki"
COLUMNS = (
    "sigmoid_mean",
    "softmax_mean",
    "boostedprob_mean",
    "sigmoid_prod",
    "softmax_prod",
    "boostedprob_prod",
)


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

    out_dir = _check_output(output)
    if adapter is None and SHIPPED_ADAPTER.is_dir() and model is None:
        adapter = str(SHIPPED_ADAPTER)
    if adapter is not None:
        check_adapter_dir(adapter)
    lm, tokenizer = load_model(model, adapter=adapter)
    if adapter is None:
        print(
            "note: no trained Sigmoid Head given or shipped yet: using an UNTRAINED head "
            "(a copy of the LM head), whose scores are not meaningful. Pass --adapter DIR for a trained one."
        )
        lm = get_peft_model(lm, SigmoidHeadConfig())
    lm.eval()

    own = generate(
        lm,
        tokenizer,
        [{"prompt": q} for q, _, _ in QUESTIONS],
        generation=GenerationOptions(max_new_tokens=32),
    )
    forced = score(
        lm,
        tokenizer,
        [
            {"prompt": q, "response": r, "correct": ok}
            for q, good, bad in QUESTIONS
            for r, ok in ((good, 1), (bad, 0))
        ],
    )

    lines = ["## The model's own answers (greedy)", "", "| question | answer | " + " | ".join(COLUMNS) + " |"]
    lines.append("|---" * (2 + len(COLUMNS)) + "|")
    for (q, _, _), r in zip(QUESTIONS, own):
        s = r.sequence_scores()
        answer = r.response.replace("\n", " ").replace("|", "/")[:60]
        lines.append(f"| {q} | {answer} | " + " | ".join(f"{s[c]:.3g}" for c in COLUMNS) + " |")
    lines += ["", "## Correct vs fact-swapped answers, force-decoded", ""]
    lines.append("Share of questions where the correct answer gets the higher confidence (higher is better):")
    lines.append("")
    lines.append("| estimator | correct ranked higher |")
    lines.append("|---|---|")
    for c in COLUMNS + ("entropy_mean",):
        sign = -1 if c.startswith("entropy") else 1
        wins = sum(
            sign * forced[2 * i].sequence_scores()[c] > sign * forced[2 * i + 1].sequence_scores()[c]
            for i in range(len(QUESTIONS))
        )
        lines.append(f"| {c} | {wins}/{len(QUESTIONS)} |")
    table = "\n".join(lines)
    print(table)
    (out_dir / "demo.md").write_text(table + "\n")
    write_jsonl_atomic(os.fspath(out_dir / "own_answers.jsonl"), [r.to_dict() for r in own])
    write_jsonl_atomic(os.fspath(out_dir / "forced_answers.jsonl"), [r.to_dict() for r in forced])
    print(f"\nwrote {out_dir}/demo.md, own_answers.jsonl, forced_answers.jsonl")
    return 0
