"""Answer length alone as a quality signal on `sighead_geo_paraphrase`: its ROC-AUC on the test
half, macro over question kinds, overall and per error type (each error type beside its true
twins, as the error subtasks pair them). Length is the answer's token count under the embedded
SmolLM2's tokenizer, negated (shorter = more confident), as the `length` estimator ranks. A task
where length wins is measuring length; near 0.5 it cannot.

Prints the figures; no model runs (the tokenizer alone).

Usage: python bench/length_baseline.py [--phrasings-per-fact 2]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phrasings-per-fact", type=int, default=2)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from sighead_eval.harness import task_hooks
    from sighead_eval.models import embedded_model_dir
    from sighead_eval.protocol import macro_by_type

    task = task_hooks("sighead_geo_paraphrase")

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    print(f"sighead_geo_paraphrase, test half, length's macro ROC-AUC over {', '.join(task.QUESTIONS)}")
    for error in (None, *task.ERRORS):
        every = task.dataset(phrasings_per_fact=args.phrasings_per_fact, error=error)["test"]
        docs = [d for d in every if d["split"] == "test"]  # lm-eval's one split holds both halves
        n = np.array([len(tokenizer(d["answer"], add_special_tokens=False)["input_ids"]) for d in docs])
        macro = macro_by_type(-n, [d["correct"] for d in docs], [d["type"] for d in docs], "auroc")["macro"]
        print(f"  {error or 'all errors':<14} {macro:.3f}  ({len(n)} answers)")


if __name__ == "__main__":
    main()
