"""LM-Polygraph's evaluation loop on the offline geography questions (`sighead_geo_qa`): its
baselines and the Sigmoid Head's estimators on the same greedy outputs, ranked by PRR
(`python -m sighead_eval.polygraph`)."""

from __future__ import annotations

import numpy as np

from ..estimators import REGISTRY
from ..metrics import prr
from ..protocol import resample
from .calculator import register, stat_name
from .uncertainty import SigmoidHeadSequence

#: LM-Polygraph's estimators that need nothing but the greedy pass, beside the Sigmoid Head's.
BASELINES = ("MaximumSequenceProbability", "Perplexity", "MeanTokenEntropy", "BoostedProbSequence")
HEAD_ESTIMATORS = (("sigmoid", "mean"), ("sigmoid", "prod"), ("sigmoid", "min"), ("hybrid", "prod"))


def geo_qa_manager(
    limit: int = 200,
    adapter: str | None = None,
    model: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    estimators: list | None = None,
):
    """An LM-Polygraph `UEManager` over the first `limit` questions of the offline `sighead_geo_qa`
    task (correct = the answer names the ground truth, as the task decides): LM-Polygraph's
    baselines and the Sigmoid Head's estimators on the same greedy outputs, ranked by PRR. Run it
    with `manager()`; `manager.metrics` then holds the figures."""
    from lm_polygraph import estimators as polygraph_estimators
    from lm_polygraph.generation_metrics.generation_metric import GenerationMetric
    from lm_polygraph.ue_metrics import PredictionRejectionArea
    from lm_polygraph.utils.builder_enviroment_stat_calculator import BuilderEnvironmentStatCalculator
    from lm_polygraph.utils.dataset import Dataset
    from lm_polygraph.utils.generation_parameters import GenerationParameters
    from lm_polygraph.utils.manager import UEManager
    from lm_polygraph.utils.model import WhiteboxModel

    from ..harness import task_hooks
    from ..models import load_model
    from ..runs import choose_adapter

    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit should be a positive number of questions, got {limit!r}")
    geo = task_hooks("sighead_geo_qa")
    docs = geo.build_docs()[:limit]
    adapter = choose_adapter(adapter, model)
    base, tokenizer = load_model(model)
    tokenizer.padding_side = "left"  # LM-Polygraph generates a padded batch
    whitebox = WhiteboxModel(
        base,
        tokenizer,
        model_path=model or "smollm2-135m-instruct",
        generation_parameters=GenerationParameters(max_new_tokens=max_new_tokens),
        instruct=tokenizer.chat_template is not None,
    )

    class Correct(GenerationMetric):
        """1 when the answer names the ground truth (`sighead_geo_qa`'s rule), else 0."""

        def __init__(self):
            super().__init__(["greedy_texts"], "sequence")

        def __str__(self) -> str:
            return "Correct"

        def __call__(self, stats, target_texts):
            pairs = zip(stats["greedy_texts"], target_texts)
            return np.array([float(geo.is_correct(docs[int(i)], text)) for text, i in pairs])

    if estimators is None:
        estimators = [getattr(polygraph_estimators, name)() for name in BASELINES]
        estimators += [
            SigmoidHeadSequence(e, a) for e, a in HEAD_ESTIMATORS if adapter or not REGISTRY[e].needs_head
        ]
    return UEManager(
        Dataset([d["question"] for d in docs], [str(i) for i in range(len(docs))], batch_size=batch_size),
        whitebox,
        estimators,
        BuilderEnvironmentStatCalculator(model=whitebox),
        register(
            adapter=str(adapter) if adapter else None, output_attentions=False, output_hidden_states=False
        ),
        [Correct()],
        [PredictionRejectionArea()],
        processors=[],
        ignore_exceptions=False,
        max_new_tokens=max_new_tokens,
        save_stats=[stat_name("boostedprob")],
    )


def prr_table(manager) -> str:
    """The run's PRR per sequence estimator, as Markdown, best first: LM-Polygraph's own
    (`prr_normalized`: its area against random and oracle rejection, random by resampling) and this
    package's `prr` on the same estimations (random as the mean quality, ties in expectation)."""
    quality = np.asarray(manager.gen_metrics[("sequence", "Correct")], dtype=np.float64)
    rows = sorted(
        (
            (name, value, prr(-np.asarray(manager.estimations[("sequence", name)]), quality))
            for (level, name, _, metric), value in manager.metrics.items()
            if level == "sequence" and metric == "prr_normalized"
        ),
        key=lambda row: -row[1],
    )
    lines = [f"{quality.size} answers, accuracy {quality.mean():.3f}", ""]
    lines += ["| estimator | PRR (LM-Polygraph) | PRR (sighead-eval) |", "|---|---|---|"]
    lines += [f"| `{name}` | {theirs:.3f} | {ours:.3f} |" for name, theirs, ours in rows]
    head, rival = str(SigmoidHeadSequence("sigmoid", "mean")), "BoostedProbSequence"
    if ("sequence", head) in manager.estimations and ("sequence", rival) in manager.estimations:
        diff, low, high = paired_prr_difference(
            -np.asarray(manager.estimations[("sequence", head)]),
            -np.asarray(manager.estimations[("sequence", rival)]),
            quality,
        )
        lines += [
            "",
            f"`{head}` minus `{rival}` (both means of token scores, the pair fixed in advance): "
            f"{diff:+.3f} PRR, 95 % paired bootstrap interval [{low:+.3f}, {high:+.3f}] (1,000 resamples "
            "of the outputs).",
        ]
    return "\n".join(lines) + "\n"


def paired_prr_difference(a, b, quality, resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """PRR of confidence `a` minus that of `b` on the same outputs, with a 95 % percentile interval
    from resampling the outputs (the same resample for both: the protocol's resampler, each output
    a unit)."""
    rng = np.random.default_rng(seed)
    outputs = [[[np.array([i]) for i in range(quality.size)]]]
    diffs = []
    for _ in range(resamples):
        [idx] = resample(outputs, rng)
        if np.all(quality[idx] == quality[idx][0]):
            continue  # PRR is undefined on one quality class
        diffs.append(prr(a[idx], quality[idx]) - prr(b[idx], quality[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(prr(a, quality) - prr(b, quality)), float(low), float(high)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sighead_eval.polygraph",
        description="LM-Polygraph's evaluation loop on the offline geography questions: its baselines "
        "and the Sigmoid Head on the same greedy outputs, ranked by PRR.",
    )
    parser.add_argument("--limit", type=int, default=200, help="questions (default 200)")
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", default=None, help="default: the shipped head for the embedded model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        manager = geo_qa_manager(args.limit, args.adapter, args.model, args.batch_size, args.max_new_tokens)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"python -m sighead_eval.polygraph: {err}\n")
    manager()
    print(prr_table(manager), end="")
