"""A causal LM with random weights, shaped like a given model: for the speed benchmarks on a
machine without the model's weights (speed does not depend on the weights' values).

The config and tokenizer are read from a local model directory (the embedded SmolLM2's cache
directory, for instance); `--set key=value` overrides config fields, to build a larger model of
the same family with the same tokenizer.

Usage:
  python bench/random_model.py --like ~/.cache/sighead_eval/smollm2-135m-instruct-0.1.2 --output /tmp/smol
  python bench/random_model.py --like DIR --output /tmp/smol-1.7b --set hidden_size=2048 \
      --set intermediate_size=8192 --set num_hidden_layers=24 --set num_attention_heads=32 \
      --set num_key_value_heads=32
"""

from __future__ import annotations

import argparse
import json
import time


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes key=value (such as hidden_size=2048), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--like", required=True, help="local model directory: config.json, tokenizer")
    parser.add_argument("--output", required=True, help="directory to write the random model into")
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[])
    parser.add_argument("--dtype", default="bfloat16", help="precision of the saved weights")
    parser.add_argument("--device", default="cpu", help="where to initialise (cuda: faster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(args.like)
    for key, value in args.overrides:
        if not hasattr(config, key):
            raise SystemExit(f"--set {key}: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    model.save_pretrained(args.output)
    AutoTokenizer.from_pretrained(args.like).save_pretrained(args.output)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.output}: random {type(model).__name__}, {params / 1e6:.0f}M parameters, "
          f"{args.dtype}, written in {time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
