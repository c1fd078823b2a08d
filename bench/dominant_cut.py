"""The dominant rule's cut, `last` (the paper's code) against `first` (the authors' current code),
on the embedded default model: the closed-form converged head (`ceiling`) and BoostedProb under
each, on the test half of `sighead_geo_paraphrase`, and the dominant sets' sizes.

The ceiling is what a perfectly trained head of the recipe would score (docs/method.md), so its
ROC-AUC under each cut says what the cut does to the signal a head can reach, before any
training. Macro ROC-AUC over the question kinds (as the headline is), with each question's
answers force-decoded as the model's replies (chat template), no head loaded.

Prints the figures. About 2 minutes a cut on 2 CPU cores.

Usage: python bench/dominant_cut.py [--limit N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="At most this many test answers")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from sighead_eval.harness import task_hooks
    from sighead_eval.models import load_model
    from sighead_eval.protocol import macro_by_type
    from sighead_eval.scoring import ScoringOptions, score

    task = task_hooks("sighead_geo_paraphrase")
    docs = [d for d in task.dataset()["test"] if d["split"] == "test"][: args.limit]
    records = [{"prompt": d["question"], "response": d["answer"]} for d in docs]
    model, tokenizer = load_model(None, device=args.device)
    kinds = sorted({d["type"] for d in docs})
    types = [d["type"] for d in docs]
    correct = np.array([d["correct"] for d in docs])
    print(f"sighead_geo_paraphrase, test half: {len(docs)} answers, macro ROC-AUC over {', '.join(kinds)}")
    print(f"{'cut':<6} {'set size':>9} {'ceiling_mean':>13} {'ceiling_prod':>13} {'ceiling_min':>12} "
          f"{'boostedprob_mean':>17} {'seconds':>8}")  # fmt: skip
    for cut in ("last", "first"):
        start = time.perf_counter()
        options = ScoringOptions(chat_template=True, dominant_mode=cut, batch_size=16)
        results = score(model, tokenizer, records, options, progress=False)
        seconds = time.perf_counter() - start
        sizes = np.concatenate([r.dominant_size for r in results]).mean()
        row = []
        for name in ("ceiling_mean", "ceiling_prod", "ceiling_min", "boostedprob_mean"):
            values = np.array([r.sequence_scores()[name] for r in results])
            row.append(macro_by_type(values, correct, types, "auroc")["macro"])
        print(
            f"{cut:<6} {sizes:>9.2f} "
            + " ".join(f"{v:>13.3f}" for v in row[:3])
            + f" {row[3]:>17.3f} {seconds:>8.0f}"
        )


if __name__ == "__main__":
    main()
