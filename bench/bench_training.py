"""Training cost on the embedded default model; prints its figures.

Variants, each in its own process (so peak memory is its own), on the same batches of the
default head's training data (Wikipedia summaries as chat answers):
- `forward`: the frozen model's body alone (hidden states, no logits): the floor;
- `sampled`: a full Sigmoid Head training step (frozen pass with logits at response positions,
  dominant sets, negatives, BCE, sparse SparseAdam step);
- `full`: the full-vocabulary BCE ablation (dense gradient, dense Adam);
- `cached`: `cache_hidden` training: one frozen pass that also draws every planned epoch's
  negatives, then epochs over the cache without the model.
Targets: sampled >= 80 % of forward's response tokens/s; sampled >= 3x faster than full; cached
epochs >= 20,000 positions/s on 2 cores.

Runs on any device (`--device`, default cuda when available) and prints tokens/s there.

Usage: python bench/bench_training.py [--batches 6] [--batch-size 8] [--device cuda] [--dtype bfloat16]
                                      [--model DIR] [--data sighead:wiki | rows.jsonl]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def load_rows(data: str, n: int) -> list[dict]:
    """The first `n` training rows: a built-in source, or a local JSON Lines file read directly."""
    if data.endswith(".jsonl"):
        with open(data, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        from sighead_eval.training.data import load_records

        rows = load_records(data)
    if len(rows) < n:
        raise SystemExit(f"--data {data}: {len(rows)} rows, the benchmark needs {n}")
    return rows[:n]


def run_cached(
    batches: int, batch_size: int, device: str, dtype: str, model_name, data: str, epochs: int = 3
) -> dict:
    """The cached variant: the frozen pass (with every epoch's negatives), then epochs over it."""
    import tempfile

    import torch

    from sighead_eval.models import load_model
    from sighead_eval.training import TrainConfig, Trainer

    model, tokenizer = load_model(model_name, dtype=dtype, device=device)
    rows = load_rows(data, batch_size * batches + 2)
    config = TrainConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-training-"),
        batch_size=batch_size,
        lr=1e-3,
        dev_max=2,
        epochs=epochs,
        cache_hidden=True,
        device=device,
        dtype=dtype,
    )
    trainer = Trainer(config, model, tokenizer, records=rows, progress=False)
    start = time.perf_counter()
    trainer.build_cache()
    build_seconds = time.perf_counter() - start
    cache, n = trainer.cache, len(trainer.train_set)
    groups = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    start, positions = time.perf_counter(), 0
    for epoch in range(epochs):
        for bi, indices in enumerate(groups):
            loss, count = cache.loss(indices, epoch, trainer.rows)
            loss.backward()
            if bi % config.grad_accum == config.grad_accum - 1 or bi == len(groups) - 1:
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
            positions += count
    return {
        "variant": "cached",
        "build_seconds": build_seconds,
        "epoch_seconds": time.perf_counter() - start,
        "positions": positions,
        "cache_mb": cache.nbytes() / 2**20,
        "device": str(cache.hidden.device),
        "threads": torch.get_num_threads(),
    }


def run_variant(
    variant: str, batches: int, batch_size: int, device: str, dtype: str, model_name, data: str
) -> dict:
    import tempfile

    import torch

    from sighead_eval.models import load_model
    from sighead_eval.training import TrainConfig, Trainer

    model, tokenizer = load_model(model_name, dtype=dtype, device=device)
    rows = load_rows(data, batch_size * (batches + 1) + 2)
    config = TrainConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-training-"),
        negatives="full" if variant == "full" else "dominant",
        batch_size=batch_size,
        lr=1e-3,
        dev_max=2,
        device=device,
        dtype=dtype,
    )
    trainer = Trainer(config, model, tokenizer, records=rows, progress=False)
    n = len(trainer.train_set)
    groups = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)][: batches + 1]

    def step(indices, bi):
        if variant == "forward":
            from sighead_eval.frozen import right_pad

            batch = [trainer.train_set[i] for i in indices]
            ids, mask = right_pad([e.ids for e in batch], trainer.pad)
            with torch.no_grad():
                model.base_model(input_ids=ids.to(trainer.device), attention_mask=mask.to(trainer.device))
            return sum(e.n_targets for e in batch)
        loss, tokens = trainer._batch_loss(bi, indices)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        return tokens

    step(groups[0], 0)  # warm-up
    start, tokens = time.perf_counter(), 0
    for bi, indices in enumerate(groups[1:], 1):
        tokens += step(indices, bi)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before caching frozen outputs
    head_seconds = None
    if variant != "forward":
        # The head step alone, from frozen outputs computed beforehand (what caching hidden states buys).
        def frozen(indices):
            return trainer.frozen([trainer.train_set[i] for i in indices])

        cached = [frozen(indices) for indices in groups[1:]]
        start = time.perf_counter()
        for bi, outputs in enumerate(cached, 1):
            loss = trainer.head_loss(outputs, 0, bi)
            loss.backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        head_seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "seconds": seconds,
        "head_seconds": head_seconds,
        "tokens": tokens,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variant", choices=["forward", "sampled", "full", "cached"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", help="frozen model's precision (bfloat16 on a GPU)")
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2)")
    parser.add_argument(
        "--data",
        default="sighead:wiki",
        help="training rows: a built-in source or a local .jsonl",
    )
    args = parser.parse_args()
    from sighead_eval.models import resolve_device

    device = resolve_device(args.device)
    if args.variant == "cached":
        print(
            json.dumps(run_cached(args.batches, args.batch_size, device, args.dtype, args.model, args.data))
        )
        return
    if args.variant:
        print(
            json.dumps(
                run_variant(
                    args.variant, args.batches, args.batch_size, device, args.dtype, args.model, args.data
                )
            )
        )
        return
    results = {}
    for variant in ("forward", "sampled", "full", "cached"):
        cmd = [sys.executable, __file__, "--variant", variant, "--batches", str(args.batches),
               "--batch-size", str(args.batch_size), "--device", device, "--dtype", args.dtype,
               "--data", args.data]  # fmt: skip
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    s, u, c = results["sampled"], results["full"], results.pop("cached")
    rate = {k: v["tokens"] / v["seconds"] for k, v in results.items()}
    print(
        f"{args.batches} batches of {args.batch_size} chat examples ({args.data}), "
        f"{s['tokens']} response tokens, "
        f"{args.model or 'the embedded SmolLM2'} on {device} ({args.dtype})"
    )
    labels = {
        "forward": "frozen forward only (no logits)",
        "sampled": "Sigmoid Head step (sampled)",
        "full": "full-vocabulary BCE step",
    }
    for key, label in labels.items():
        print(f"  {label:32s} {rate[key]:7.0f} tokens/s   peak RSS {results[key]['peak_rss_mb']:6.0f} MB")
    share = 100 * rate["sampled"] / rate["forward"]
    print(f"  sampled / forward                {share:6.1f} %  (target >= 80 %)")
    speedup = rate["sampled"] / rate["full"]
    print(f"  sampled speed-up over full       {speedup:6.2f} x  end to end (target >= 3x)")
    head_speedup = u["head_seconds"] / s["head_seconds"]
    sampled_s, full_s = s["head_seconds"], u["head_seconds"]
    print(f"  head step alone: sampled {sampled_s:.2f} s, full {full_s:.2f} s: {head_speedup:.2f} x")
    print(f"  peak memory, full - sampled      {u['peak_rss_mb'] - s['peak_rss_mb']:+6.0f} MB")
    per_epoch = c["positions"] / 3
    print(
        f"  cached: frozen pass with 3 epochs' negatives {per_epoch / c['build_seconds']:7.0f} positions/s; "
        f"epochs over the cache {c['positions'] / c['epoch_seconds']:7.0f} positions/s (target >= 20,000) "
        f"on {c['device']}, {c['threads']} threads; cache {c['cache_mb']:.1f} MB, {per_epoch:.0f} positions"
    )


if __name__ == "__main__":
    main()
