"""What lm-eval's one-pass log-likelihood confidence changes, on a saved run of the demo.

The `sighead` model used to score each `loglikelihood` request in a second pass of its own, over
the continuation tokenised apart from the context. It now scores HFLM's continuation tokens from
HFLM's own pass, less the tokens wholly inside the whitespace HFLM moved from the context. This
reads a run's samples (`sighead-eval demo` writes them to `results/demo/lm_eval_results.json`),
scores every force-decoded sample again the previous way, and prints, per task, how many samples
were scored over the same tokens, and the largest difference of any confidence between the two.

Usage: python bench/onepass_tokens.py results/demo/lm_eval_results.json [--adapter DIR]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-instruct-wiki"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", help="an lm-eval results JSON with samples (the demo's)")
    parser.add_argument("--model", default=None, help="the run's model (default: the embedded SmolLM2)")
    parser.add_argument("--adapter", default=str(ADAPTER))
    args = parser.parse_args()

    from sighead_eval.models import load_model
    from sighead_eval.scoring import ScoringOptions, fit_response, model_context_length, score

    run = json.loads(Path(args.results).read_text())
    model, tok = load_model(args.model, adapter=args.adapter)
    window = model_context_length(model)
    print(f"{args.results}: {', '.join(run['samples'])}")
    print("| task | samples | same tokens | largest confidence difference (same tokens) | (all) |")
    print("|---|---|---|---|---|")
    for task, samples in run["samples"].items():
        pairs, confidences, ids = {}, defaultdict(dict), {}
        for s in samples:
            args = s["arguments"]  # [[context, continuation]] in memory, gen_args_0 in a samples file
            first = (
                args[0]
                if isinstance(args, list)
                else [args["gen_args_0"]["arg_0"], args["gen_args_0"].get("arg_1")]
            )
            if not isinstance(first[1], str):
                break  # a generation task: scored during generation, unchanged
            resp = s["filtered_resps"][0]
            judged = json.loads(resp) if isinstance(resp, str) else resp
            if not isinstance(judged, dict):
                continue
            pairs[s["doc_id"]] = (first[0], first[1])
            confidences[s["doc_id"]][s["filter"]] = judged["confidence"]
            if "tokens" in judged:
                ids[s["doc_id"]] = judged["tokens"]["id"]
        if not pairs:
            continue
        records = []
        for context, continuation in pairs.values():
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
            ctx, cont = fit_response(ctx, cont, window)
            records.append({"prompt_token_ids": ctx, "response": continuation, "response_token_ids": cont})
        options = ScoringOptions(chat_template=False, max_length=window, truncation="left")
        before = score(model, tok, records, options)
        same, worst_same, worst_all = 0, 0.0, 0.0
        from sighead_eval.estimators import confidence

        for doc, result in zip(pairs, before):
            seq = result.sequence_scores()
            diffs = [
                abs(confidence(seq, len(result.token_ids), name) - value)
                for name, value in confidences[doc].items()
                if value is not None and (name in seq or name in ("length",) or name.startswith("entropy_"))
            ]
            worst = max(diffs, default=0.0)
            worst_all = max(worst_all, worst)
            if ids.get(doc) == result.token_ids:
                same += 1
                worst_same = max(worst_same, worst)
        print(f"| {task} | {len(pairs)} | {same} | {worst_same:.1e} | {worst_all:.1e} |")


if __name__ == "__main__":
    main()
