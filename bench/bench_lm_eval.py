"""The `sighead` lm-eval model against lm-eval's own HFLM, on the same requests; prints the figures.

1. `generate_until`: 16 chat-templated questions, greedy, up to 32 new tokens, batch 8. The texts
   must be identical; `sighead` records every estimator's scores during HFLM's own generation.
   Target: at most 1.03x HFLM's time (median of paired ratios, with its 95 % interval).
2. `loglikelihood`: 64 chat-templated (context, continuation) requests. `sighead` returns HFLM's
   values bit for bit and scores the continuations from HFLM's own batches (one model pass).
   Target: at most 1.05x HFLM's time (median of paired ratios, with its 95 % interval).

Usage: python bench/bench_lm_eval.py [--model NAME] [--adapter DIR] [--device cpu] [--max-pairs 30]
       [--only loglikelihood|generate_until]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paired import describe, paired

QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What is the currency of Mexico?",
    "Which continent is Kenya in?",
    "What is the capital of Canada?",
    "What language is spoken in Brazil?",
    "What is the capital of Australia?",
    "What is the currency of India?",
    "Which continent is Peru in?",
    "What is the capital of Egypt?",
    "What is the capital of Norway?",
    "What is the currency of Japan?",
    "Which continent is Vietnam in?",
    "What is the capital of Chile?",
    "What language is spoken in Austria?",
    "What is the capital of Kenya?",
]
ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-instruct-wiki"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2)")
    parser.add_argument("--adapter", default=str(ADAPTER))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--min-pairs", type=int, default=10)
    parser.add_argument("--max-pairs", type=int, default=30)
    parser.add_argument("--only", choices=("loglikelihood", "generate_until"), default=None)
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from sighead_eval.harness.model import SigheadLM
    from sighead_eval.models import resolve_model

    torch.manual_seed(0)
    common = {"pretrained": resolve_model(args.model), "batch_size": args.batch_size, "device": args.device}
    stock = HFLM(dtype=args.dtype, **common)
    ours = SigheadLM(adapter=args.adapter, dtype=args.dtype, **common)
    chat = [
        stock.tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]
    print(f"{common['pretrained']} on {args.device} ({args.dtype}, {torch.get_num_threads()} threads)")
    if args.only != "loglikelihood":
        generation(stock, ours, chat, args)
    if args.only != "generate_until":
        loglikelihood(stock, ours, chat, args)


def generation(stock, ours, chat, args) -> None:
    from lm_eval.api.instance import Instance

    kwargs = {"until": ["\n\n"], "max_gen_toks": args.new_tokens, "do_sample": False}
    gen = [Instance("generate_until", {}, (c, dict(kwargs)), i) for i, c in enumerate(chat)]
    texts = stock.generate_until(gen, disable_tqdm=True)
    scored = ours.generate_until(gen, disable_tqdm=True)
    same = [str(s) for s in scored] == texts
    n_tokens = sum(s.sighead["n_tokens"] for s in scored)
    print(
        f"generate_until: {len(gen)} questions, up to {args.new_tokens} new tokens, batch {args.batch_size}"
    )
    print(f"  texts identical to HFLM's      {same}")
    print(f"  scored during generation       {len(scored) - ours.redone_outputs} of {len(scored)} outputs "
          f"({n_tokens} tokens); {ours.redone_outputs} force-decoded")  # fmt: skip
    result = paired(
        lambda: stock.generate_until(gen, disable_tqdm=True),
        lambda: ours.generate_until(gen, disable_tqdm=True),
        min_pairs=args.min_pairs,
        max_pairs=args.max_pairs,
        width=0.02,
    )
    print(f"  HFLM                           {result['base_s']:7.2f} s (median)")
    print(f"  sighead                        {result['other_s']:7.2f} s")
    print(f"  sighead / HFLM                 {result['ratio']:.3f}x; {describe(result, 0.03)}")


def loglikelihood(stock, ours, chat, args) -> None:
    from lm_eval.api.instance import Instance

    contexts = [c for c in chat for _ in range(4)]
    answers = [" Paris.", "Tokyo.", "The answer is Ottawa.", "Nairobi"]
    ll = [Instance("loglikelihood", {}, (c, answers[i % 4]), i) for i, c in enumerate(contexts)]
    same = [tuple(x) for x in ours.loglikelihood(ll, True)] == [
        tuple(x) for x in stock.loglikelihood(ll, True)
    ]
    result = paired(
        lambda: stock.loglikelihood(ll, disable_tqdm=True),
        lambda: ours.loglikelihood(ll, disable_tqdm=True),
        min_pairs=args.min_pairs,
        max_pairs=args.max_pairs,
        width=0.02,
    )
    forwards = [_forwards(lm, lambda lm=lm: lm.loglikelihood(ll, disable_tqdm=True)) for lm in (stock, ours)]
    print(f"\nloglikelihood: {len(ll)} requests, batch {args.batch_size}")
    print(f"  values identical to HFLM's     {same}")
    print(f"  model passes (HFLM, sighead)   {forwards[0]}, {forwards[1]}")
    print(f"  HFLM                           {result['base_s']:7.2f} s (median)")
    print(f"  sighead                        {result['other_s']:7.2f} s")
    print(f"  sighead / HFLM                 {result['ratio']:.3f}x; {describe(result, 0.05)}")


def _forwards(lm, fn) -> int:
    from sighead_eval.frozen import forward_passes

    return forward_passes(lm.model, fn)


if __name__ == "__main__":
    main()
