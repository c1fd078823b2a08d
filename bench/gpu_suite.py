"""Every GPU figure of the estimator layer in one table: random weights of two real shapes, one run.

Needs only a model directory's config and tokenizer (`--like`, e.g. the embedded SmolLM2's cache
directory: config.json, tokenizer.json; the weights are not read). For each shape, 135M (the
config as it is) and 1.7B (SmolLM2-1.7B's width and depth, same tokenizer), with a Sigmoid Head:

1. GPU against CPU: every token estimator (the opt-in `combined` too) and statistic of `score`
   on the same float32 model on both devices; the largest absolute difference of log scores.
2. Force-decoding, bf16: `score` with every default estimator against the bare forward pass
   over the same batches, at batch 8 and batch 64 (paired timings: median ratio, 95 % interval).
   Targets: at batch 64 at most 1.20x (135M) and 1.10x (1.7B); at batch 8 at most 1.05x.
   Then the same with `combined` added (opt-in; its cost, no target).
3. Generation at batch 64, 64 new tokens, bf16: `generate` with per-token scores against plain
   greedy `generate`. Target: overhead at most 3 %, interval narrower than 3 points.

Usage: python bench/gpu_suite.py --like ~/.cache/sighead_eval/smollm2-135m-instruct-0.1.2
       [--shapes 135m,1.7b] [--pairs 12] [--gen-pairs 30] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from paired import describe, paired

SHAPES = {
    "135m": {},
    "1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
PROMPT_TOKENS, RESPONSE_TOKENS = 48, 256


def build(like: str, shape: str, dtype: torch.dtype, device: str):
    """A causal LM of `shape` with random weights and a Sigmoid Head (random rows), and its tokenizer."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sighead_eval import SigmoidHeadConfig

    config = AutoConfig.from_pretrained(like)
    for key, value in SHAPES[shape].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model = get_peft_model(base, SigmoidHeadConfig()).eval()
    with torch.no_grad():
        head = model.get_base_model().get_output_embeddings().sigmoid_head_embedding["default"].weight
        head.normal_(0, 0.02)
    tokenizer = AutoTokenizer.from_pretrained(like)
    return model, tokenizer


def records(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """Token-id records of fixed lengths (no padding, so every batch is the same work)."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer)
    out = []
    for _ in range(n):
        ids = torch.randint(100, vocab, (PROMPT_TOKENS + RESPONSE_TOKENS,), generator=g).tolist()
        out.append(
            {
                "prompt_token_ids": ids[:PROMPT_TOKENS],
                "response": "",
                "response_token_ids": ids[PROMPT_TOKENS:],
            }
        )
    return out


def gpu_against_cpu(model, tokenizer) -> dict[str, float]:
    from sighead_eval.estimators import TOKEN_ESTIMATORS
    from sighead_eval.scoring import ScoringOptions, score

    options = ScoringOptions(chat_template=False, batch_size=8, estimators=TOKEN_ESTIMATORS)
    recs = records(tokenizer, 16, seed=1)
    on_gpu = score(model, tokenizer, recs, options, progress=False)  # (where the model is)
    on_cpu = score(copy.deepcopy(model).to("cpu"), tokenizer, recs, options, progress=False)
    worst: dict[str, float] = {}
    for a, b in zip(on_gpu, on_cpu):
        pairs = {
            **{e: (a.log_scores[e], b.log_scores[e]) for e in a.log_scores},
            "entropy": (a.entropy, b.entropy),
        }
        for name, (x, y) in pairs.items():
            worst[name] = max(worst.get(name, 0.0), float(abs(x - y).max()))
    return worst


def force_decoding(model, tokenizer, batch: int, pairs: int, estimators=None) -> dict:
    from sighead_eval.scoring import ScoringOptions, score

    recs = records(tokenizer, 4 * batch)
    options = ScoringOptions(chat_template=False, batch_size=batch, estimators=estimators)
    device = model.get_base_model().device
    ids = torch.tensor([r["prompt_token_ids"] + r["response_token_ids"] for r in recs], device=device)
    base = model.get_base_model()

    def forward():
        with torch.no_grad(), model.disable_adapter():
            for start in range(0, len(ids), batch):
                base(input_ids=ids[start : start + batch], use_cache=False)  # as the scoring pass

    def scored():
        score(model, tokenizer, recs, options, progress=False)

    scored()  # warm: compiles the fused statistics once
    return paired(forward, scored, min_pairs=pairs, max_pairs=pairs)


def generation(model, tokenizer, batch: int, pairs: int) -> dict:
    from sighead_eval.scoring import GenerationOptions, ScoringOptions, eos_ids, generate

    recs = records(tokenizer, batch, seed=2)
    prompts = [{"prompt_token_ids": r["prompt_token_ids"]} for r in recs]
    options = ScoringOptions(chat_template=False, batch_size=batch)
    gen = GenerationOptions(max_new_tokens=64)
    base = model.get_base_model()
    ids = torch.tensor([r["prompt_token_ids"] for r in recs], device=base.device)
    eos = eos_ids(base, tokenizer)  # the end tokens `generate` stops at

    def plain():
        with torch.no_grad(), model.disable_adapter():
            base.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False,
                temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id,
                eos_token_id=eos,
            )  # fmt: skip

    def scored():
        generate(model, tokenizer, prompts, options, gen, progress=False)

    scored()
    return paired(plain, scored, min_pairs=min(pairs, 20), max_pairs=pairs, width=0.03)


def profile(model, tokenizer, batch: int) -> None:
    """torch.profiler's table of one `score` call over one batch (after a warm one)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    from sighead_eval.scoring import ScoringOptions, score

    recs = records(tokenizer, batch, seed=3)
    options = ScoringOptions(chat_template=False, batch_size=batch)
    score(model, tokenizer, recs, options, progress=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profiler(activities=activities) as prof:
        score(model, tokenizer, recs, options, progress=False)
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    events = prof.key_averages()
    print(f"\nprofile of one score() at batch {batch}: {sum(e.count for e in events)} ops")
    print(events.table(sort_by=key, row_limit=18, max_name_column_width=48), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--like", required=True, help="a model directory: config.json and tokenizer")
    parser.add_argument("--shapes", default="135m,1.7b")
    parser.add_argument("--pairs", type=int, default=12, help="paired timings per force-decoding figure")
    parser.add_argument("--gen-pairs", type=int, default=30, help="most paired timings for generation")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out (slow)")
    parser.add_argument("--batches", default="8,64", help="the small and the large batch")
    parser.add_argument("--profile", action="store_true", help="print a kernel table of one large batch")
    parser.add_argument("--skip", default="", help="parts to leave out: cpu (the GPU-CPU check), generation")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_suite.py needs a CUDA GPU (or --device cpu to try it out)")
    small, large = (int(b) for b in args.batches.split(","))
    from sighead_eval.estimators import TOKEN_ESTIMATORS

    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}", flush=True)
    figures: dict = {}
    rows = []
    for shape in args.shapes.split(","):
        start = time.perf_counter()
        f = figures[shape] = {}
        model, tok = build(args.like, shape, torch.float32, args.device)
        if "cpu" not in args.skip:
            f["gpu_vs_cpu"] = gpu_against_cpu(model, tok)
            rows.append(
                (
                    shape,
                    "GPU - CPU, largest abs. difference of log scores",
                    f"{max(f['gpu_vs_cpu'].values()):.1e}",
                    "",
                )
            )
        model = model.to(torch.bfloat16)
        for batch, target in ((small, 0.05), (large, 0.20 if shape == "135m" else 0.10)):
            r = f[f"force_b{batch}"] = force_decoding(model, tok, batch, args.pairs)
            rows.append(
                (
                    shape,
                    f"all estimators / bare forward, batch {batch}",
                    f"{r['ratio']:.3f}x",
                    describe(r, target),
                )
            )
        r = f[f"force_b{large}_combined"] = force_decoding(model, tok, large, args.pairs, TOKEN_ESTIMATORS)
        rows.append(
            (
                shape,
                f"with `combined` (opt-in) / bare forward, batch {large}",
                f"{r['ratio']:.3f}x",
                describe(r),
            )
        )
        if args.profile:
            profile(model, tok, large)
        if "generation" not in args.skip:
            r = f[f"generation_b{large}"] = generation(model, tok, large, args.gen_pairs)
            overhead = f"{100 * (r['ratio'] - 1):+.1f} %"
            rows.append(
                (shape, f"generation overhead, batch {large}, 64 tokens", overhead, describe(r, 0.03))
            )
        f["seconds"] = time.perf_counter() - start
        print(f"[{shape} done in {f['seconds']:.0f} s]", flush=True)
        del model
        torch.cuda.empty_cache()
    print("\n| shape | figure | value | median of paired ratios [95 % interval] |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for shape in (s for s in figures if "gpu_vs_cpu" in figures[s]):
        print(
            f"\n{shape}: GPU - CPU per estimator: "
            + ", ".join(f"{k} {v:.1e}" for k, v in figures[shape]["gpu_vs_cpu"].items())
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
