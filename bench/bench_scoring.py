"""Cost of Sigmoid Head scoring on the embedded default model; prints its figures.

1. Generation: plain greedy `generate` (64 new tokens) against `sighead_eval.scoring.generate`
   with a head attached, which records every estimator's per-token scores. Same model, prompts
   and run, timed in alternating pairs; the figure is the median of the per-pair ratios with its
   95 % interval, and pairs are added until that interval is narrower than the target (or
   `--max-pairs`). Target: at most 1 % extra wall time.
2. Force-decoding: tokens/s of `score` without a head, with a head, and of the bare forward pass;
   every estimator together against the bare forward pass, in pairs likewise. Target: within 3 %.

Runs on any device (`--device`, default cuda when available) and any causal model (`--model`,
default the embedded SmolLM2; a base model such as gemma-3-270m is prompted without a chat
template), and prints tokens/s there.

Usage: python bench/bench_scoring.py [--max-pairs 40] [--batch-size 8] [--device cuda] [--model NAME]
"""

from __future__ import annotations

import argparse

import torch
from paired import describe, paired, timed
from peft import get_peft_model

from sighead_eval import SigmoidHeadConfig
from sighead_eval.models import has_chat_template, load_model, resolve_device
from sighead_eval.scoring import GenerationOptions, ScoringOptions, encode_records, generate, score

PROMPTS = [
    "What is the capital of France?",
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in two sentences.",
    "What is photosynthesis?",
    "Name three planets and one fact about each.",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--min-pairs", type=int, default=10)
    parser.add_argument("--max-pairs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2)")
    parser.add_argument("--dtype", default="float32", help="frozen model's precision (bfloat16 on a GPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = resolve_device(args.device)

    base, tokenizer = load_model(args.model, dtype=args.dtype, device=device)
    print(f"{base.config.name_or_path} on {device} ({args.dtype}, {torch.get_num_threads()} CPU threads)")
    model = get_peft_model(base, SigmoidHeadConfig()).eval()
    records = [{"prompt": PROMPTS[i % len(PROMPTS)]} for i in range(args.batch_size)]  # prompts reused past 8
    options = ScoringOptions(batch_size=args.batch_size, chat_template=has_chat_template(args.model))
    gen = GenerationOptions(max_new_tokens=args.new_tokens)

    # Plain greedy generate on exactly the same left-padded batch that `generate` builds.
    items = encode_records(base, tokenizer, records, options, need_response=False)
    width = max(len(it.prompt_ids) for it in items)
    ids = torch.full((len(items), width), tokenizer.pad_token_id or tokenizer.eos_token_id)
    mask = torch.zeros_like(ids)
    for b, it in enumerate(items):
        ids[b, width - len(it.prompt_ids) :] = torch.tensor(it.prompt_ids)
        mask[b, width - len(it.prompt_ids) :] = 1

    def plain():
        with torch.no_grad(), model.disable_adapter():
            base.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=args.new_tokens,
                do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=tokenizer.eos_token_id,
            )  # fmt: skip

    def scored():
        generate(model, tokenizer, records, options, gen, progress=False)

    pairs = {"min_pairs": args.min_pairs, "max_pairs": args.max_pairs}
    result = paired(plain, scored, width=0.01, **pairs)
    n_tokens = sum(
        len(r.token_ids) for r in generate(model, tokenizer, records, options, gen, progress=False)
    )
    print(f"generation, batch {len(records)}, up to {args.new_tokens} new tokens ({n_tokens} generated)")
    print(f"  plain greedy generate          {result['base_s']:7.2f} s (median)")
    print(f"  generate + per-token scores    {result['other_s']:7.2f} s")
    print(f"  overhead                       {describe(result, 0.01)}")

    answers = generate(model, tokenizer, records, options, gen, progress=False)
    forced = [{**r, "response": a.response} for r, a in zip(records, answers)] * 4
    n_scored = sum(len(r.token_ids) for r in score(base, tokenizer, forced, options, progress=False))
    encoded = encode_records(base, tokenizer, forced, options, True)
    batch_ids = [it.prompt_ids + it.response_ids for it in encoded]

    def forward_only():
        with torch.no_grad(), model.disable_adapter():
            for start in range(0, len(batch_ids), args.batch_size):
                chunk = batch_ids[start : start + args.batch_size]
                w = max(map(len, chunk))
                x = torch.zeros((len(chunk), w), dtype=torch.long)
                m = torch.zeros_like(x)
                for b, s_ in enumerate(chunk):
                    x[b, : len(s_)] = torch.tensor(s_)
                    m[b, : len(s_)] = 1
                base(input_ids=x.to(device), attention_mask=m.to(device), use_cache=False)

    def without_head():
        with model.disable_adapter():
            score(model, tokenizer, forced, options, progress=False)

    def with_head():
        score(model, tokenizer, forced, options, progress=False)

    all_in = paired(forward_only, with_head, width=0.03, **pairs)
    head_only = paired(without_head, with_head, **{**pairs, "max_pairs": args.min_pairs})
    f, h, nh = all_in["base_s"], all_in["other_s"], head_only["base_s"]
    print(f"\nforce-decoding {len(forced)} responses, {n_scored} scored tokens, batch {args.batch_size}")
    print(f"  bare forward pass              {f:7.2f} s  {n_scored / f:8.0f} tokens/s")
    print(f"  score, softmax baselines only  {nh:7.2f} s  {n_scored / nh:8.0f} tokens/s")
    print(f"  score, with Sigmoid Head       {h:7.2f} s  {n_scored / h:8.0f} tokens/s")
    print(f"  head / softmax baselines only  {describe(head_only)}")
    print(f"  all estimators / forward pass  {describe(all_in, 0.03)}")

    # The head step in isolation (the end-to-end difference above is within timing noise).
    head = model.get_base_model().lm_head.active_head()
    hidden = torch.randn(n_scored, head.shape[1], device=head.device)
    targets = torch.randint(0, head.shape[0], (n_scored,), device=head.device)
    step = min(
        timed(lambda: (torch.nn.functional.embedding(targets, head) * hidden).sum(-1)) for _ in range(20)
    )
    print(
        f"  head dot products alone        {1000 * step:7.2f} ms = {100 * step / f:.3f} % of the forward pass"
    )


if __name__ == "__main__":
    main()
