"""Host cost of the scoring path per scored token, and a profile of one `score()` call.

The model is SmolLM2-135M's configuration and tokenizer with a body that costs next to nothing
(hidden 64, one layer, random weights) and its full 49,152-token vocabulary, so what is left
after the forward pass and the estimators' own kernels is the host's work around them: encoding,
batching, index building, copies, Python per output or per token.

1. Host cost: `score()` on 64 records with the frozen pass and the estimators' kernels taken out:
   each batch's `frozen_pass` and `token_scores` are measured alone first, then replaced by their
   precomputed outputs, and `score()` is timed around them. (Subtracting the two from a whole
   `score()` instead leaves the answer inside the noise of seconds of vocabulary-sized kernels.)
   Also with `summary()` of every result, which the lm-eval model attaches to each output (token
   texts and per-token lists). The figure is the median over repeats with its 95 % interval.
   Target: at most 0.3 us per token for `score()`.
2. Profile (`torch.profiler`): per batch, the operators dispatched (on a GPU each is a kernel
   launch or more), the values read back to the host (`aten::_local_scalar_dense`, `nonzero`:
   each a device sync on a GPU) and the copies to the host. `--as-accelerator` runs the branches
   an accelerator takes (no host reads, chunks sized for it) on the CPU, to count them here.

Usage: python bench/bench_host.py [--repeats 15] [--device cpu] [--like DIR] [--as-accelerator]
Runs against whichever `sighead_eval` is importable, so `PYTHONPATH=<older checkout>` measures an
older version of the scoring path with the same script.
"""

from __future__ import annotations

import argparse
import collections
import statistics

import torch
from bench_scoring import PROMPTS
from paired import median_interval, timed

TEXT = (
    "The river rises in the northern hills and runs south through farmland, small towns and a "
    "wide valley before it reaches the sea. Its water feeds the fields, and in spring the floods "
    "bring new soil. Boats once carried grain and timber downstream; today most of the traffic is "
    "leisure craft, and the old mills have become museums, cafes and homes. "
).split()


def records(n: int = 64) -> list[dict]:
    """`n` prompt-response pairs, responses of 40 to 89 words (about 93 tokens on average)."""
    out = []
    for i in range(n):
        words = 40 + (i * 7) % 50
        start = (i * 13) % len(TEXT)
        response = " ".join((TEXT[start:] + TEXT * 3)[:words])
        out.append({"prompt": PROMPTS[i % len(PROMPTS)], "response": response})
    return out


def tiny_body_model(like: str, device: str):
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sighead_eval import SigmoidHeadConfig

    config = AutoConfig.from_pretrained(like)
    body = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1}
    heads = {"num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 64}
    for key, value in {**body, **heads}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config).eval().to(device)
    return get_peft_model(base, SigmoidHeadConfig()).eval(), AutoTokenizer.from_pretrained(like)


class HostCopies(torch.overrides.TorchFunctionMode):
    NAMES = ("cpu", "numpy", "tolist", "item")

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--like", default=None, help="model directory for the config and tokenizer "
                        "(default: the embedded SmolLM2's cache)")  # fmt: skip
    parser.add_argument("--as-accelerator", action="store_true", help="profile the accelerator's branches")
    args = parser.parse_args()

    from sighead_eval.frozen import frozen_pass
    from sighead_eval.models import resolve_model
    from sighead_eval.scoring import (
        ScoringOptions,
        active_head_layer,
        encode_records,
        padding_id,
        score,
        token_scores,
    )

    torch.set_grad_enabled(False)
    model, tokenizer = tiny_body_model(args.like or resolve_model(None), args.device)
    head = active_head_layer(model)
    data = records()
    options = ScoringOptions(batch_size=args.batch_size)
    base = model.get_base_model()
    items = encode_records(base, tokenizer, data, options, need_response=True)
    order = sorted(items, key=lambda it: len(it.prompt_ids) + len(it.response_ids))
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    pad = padding_id(model, tokenizer)
    n_tokens = sum(len(it.response_ids) for it in items)

    def forward():
        return [
            frozen_pass(
                model, [it.prompt_ids + it.response_ids for it in b], [len(it.prompt_ids) for it in b], pad
            )
            for b in batches
        ]

    frozen = forward()

    def estimators():
        for out in frozen:
            scores = token_scores(out.logits, out.targets, out.hidden, head, options)
        return scores

    def scoring():
        return score(model, tokenizer, data, options, progress=False)

    import sighead_eval.scoring as S

    t_forward = statistics.median(timed(forward) for _ in range(3))
    t_est = statistics.median(timed(estimators) for _ in range(3))
    precomputed = [token_scores(o.logits, o.targets, o.hidden, head, options) for o in frozen]
    real = S.frozen_pass, S.token_scores, S.encode_records

    def with_kernels_taken_out(fn, encoded: bool):
        calls = {"frozen": iter(frozen), "scores": iter(precomputed)}
        S.frozen_pass = lambda *a, **k: next(calls["frozen"])
        S.token_scores = lambda *a, **k: next(calls["scores"])
        if encoded:
            S.encode_records = lambda *a, **k: items
        try:
            return fn()
        finally:
            S.frozen_pass, S.token_scores, S.encode_records = real

    runs = {
        "scoring path": lambda: with_kernels_taken_out(scoring, encoded=True),
        "+ text encoding": lambda: with_kernels_taken_out(scoring, encoded=False),
        "+ summary()": lambda: [r.summary() for r in with_kernels_taken_out(scoring, encoded=False)],
    }
    for run in runs.values():  # warm-up (the token table is built once per tokenizer)
        assert len(run()) == len(data)  # the substitution feeds every batch
    figures = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            figures[key].append(timed(run) / n_tokens * 1e6)
    vocab = head.base_layer.weight.shape[0]
    print(f"score() on {len(data)} records, {n_tokens} scored tokens, batch {args.batch_size}, "
          f"{args.device}, {torch.get_num_threads()} threads; a body of hidden 64, 1 layer, "
          f"vocabulary {vocab}")  # fmt: skip
    print(f"  frozen passes alone          {1000 * t_forward:8.1f} ms")
    print(f"  estimators' kernels alone    {1000 * t_est:8.1f} ms")
    for key, values in figures.items():
        med, low, high = median_interval(values)
        target = "   target <= 0.3 us" if key == "scoring path" else ""
        print(f"  host work, {key:<16} {med:8.3f} us/token [{low:.3f}, {high:.3f}] (95 % interval){target}")

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    if args.as_accelerator:
        S.host_reads_are_free = lambda device: False
        options.chunk_rows = S.chunk_rows("cuda", head.base_layer.weight.shape[0])
    with HostCopies() as copies, profile(activities=activities) as prof:
        scoring()
    events = prof.key_averages()
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    reads = sum(e.count for e in events if e.key in ("aten::_local_scalar_dense", "aten::nonzero"))
    kernels = sum(
        e.count for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
    )
    n = len(batches)
    mode = " (the accelerator's branches)" if args.as_accelerator else ""
    print(f"profile of one score() call: {n} batches{mode}")
    print(f"  aten operators per batch     {ops / n:8.1f}")
    if args.device.startswith("cuda"):
        print(f"  GPU kernels per batch        {kernels / n:8.1f}")
    print(
        f"  host reads per batch         {reads / n:8.1f}   (_local_scalar_dense, nonzero: a GPU sync each)"
    )
    print(f"  host copies per batch        {sum(copies.calls.values()) / n:8.1f}   ({dict(copies.calls)})")


if __name__ == "__main__":
    main()
