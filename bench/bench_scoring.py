"""Cost of Sigmoid Head scoring on the embedded default model; prints its figures.

1. Generation: plain greedy `generate` (64 new tokens) against `sighead_eval.scoring.generate`
   with a head attached, which records every estimator's per-token scores. Same model, prompts
   and run, alternating repeats. Target: at most 1 % extra wall time (median of 7 repeats).
2. Force-decoding: tokens/s of `score` without a head, with a head, and of the bare forward pass.
   Target: every estimator together within 3 % of the bare forward pass.

Runs on any device (`--device`, default cuda when available) and any causal model (`--model`,
default the embedded SmolLM2; a base model such as gemma-3-270m is prompted without a chat
template), and prints tokens/s there.

Usage: python bench/bench_scoring.py [--repeats 7] [--batch-size 8] [--device cuda] [--model NAME]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
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


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
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

    plain()  # warm-up
    scored()
    t_plain, t_scored = [], []
    for _ in range(args.repeats):
        t_plain.append(timed(plain))
        t_scored.append(timed(scored))
    p, s = statistics.median(t_plain), statistics.median(t_scored)
    n_tokens = sum(
        len(r.token_ids) for r in generate(model, tokenizer, records, options, gen, progress=False)
    )
    print(f"generation, batch {len(records)}, up to {args.new_tokens} new tokens ({n_tokens} generated)")
    print(f"  plain greedy generate          {p:7.2f} s (median of {args.repeats})")
    print(f"  generate + per-token scores    {s:7.2f} s")
    print(f"  overhead                       {100 * (s - p) / p:+7.2f} %   (target <= 1 %)")

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
                base(input_ids=x.to(device), attention_mask=m.to(device))

    def without_head():
        with model.disable_adapter():
            score(model, tokenizer, forced, options, progress=False)

    def with_head():
        score(model, tokenizer, forced, options, progress=False)

    forward_only(), without_head(), with_head()  # warm-up
    runs = {"forward": [], "no_head": [], "head": []}
    for _ in range(args.repeats):
        runs["forward"].append(timed(forward_only))
        runs["no_head"].append(timed(without_head))
        runs["head"].append(timed(with_head))
    f, nh, h = (statistics.median(runs[k]) for k in ("forward", "no_head", "head"))
    print(f"\nforce-decoding {len(forced)} responses, {n_scored} scored tokens, batch {args.batch_size}")
    print(f"  bare forward pass              {f:7.2f} s  {n_scored / f:8.0f} tokens/s")
    print(f"  score, softmax baselines only  {nh:7.2f} s  {n_scored / nh:8.0f} tokens/s")
    print(f"  score, with Sigmoid Head       {h:7.2f} s  {n_scored / h:8.0f} tokens/s")
    print(f"  head cost / forward pass       {100 * (h - nh) / f:+7.2f} %")
    print(f"  all estimators / forward pass  {100 * (h - f) / f:+7.2f} %   (target <= 3 %)")

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
