"""The LM-Polygraph face: the Sigmoid Head's token scores from LM-Polygraph's own generation pass,
and estimators that rank its outputs by them.

LM-Polygraph (IINemo/lm-polygraph) builds stat calculators and estimators from any module named in
its configuration: `builder: sighead_eval.polygraph` calls `load_stat_calculator(cfg, env)`, and an
estimator named `sighead_eval.polygraph` calls `load_estimator(cfg)`. Nothing upstream changes.

- `SigmoidHeadGreedyProbsCalculator` is LM-Polygraph's `GreedyProbsCalculator`, unchanged, run
  under this package's `StepScores`: while LM-Polygraph's one `generate` call runs, every step's
  logits and head input are scored as they come out. It adds the `sighead_{estimator}_log_likelihoods`
  statistics (one array of natural-log token scores per output, for `sigmoid`, `softmax`,
  `boostedprob`, `ceiling` and `hybrid`), so no second model call is made. Registered after
  LM-Polygraph's defaults, it also provides their greedy statistics, so it replaces the default
  calculator rather than running beside it.
- `SigmoidHeadSequence` ranks outputs by an aggregation of those scores; `SigmoidHeadToken` gives
  LM-Polygraph's token-level uncertainties. Both follow LM-Polygraph's convention: higher means
  less confident (the negated confidence).

Like LM-Polygraph's own estimators, they score every generated token, the end token included.
Install with `pip install "sighead-eval[polygraph]"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from lm_polygraph.estimators.estimator import Estimator
    from lm_polygraph.stat_calculators.greedy_probs import GreedyProbsCalculator
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "sighead_eval.polygraph needs LM-Polygraph: pip install 'sighead-eval[polygraph]'"
    ) from err

from .adapter.io import load_adapter
from .estimators import REGISTRY, SEQUENCE_AGGREGATIONS, TOKEN_ESTIMATORS, aggregate_rows
from .frozen import wrapped_method
from .scoring import ScoringOptions, StepScores, active_head_layer


def stat_name(estimator: str) -> str:
    """The LM-Polygraph statistic holding `estimator`'s log token scores."""
    if estimator not in TOKEN_ESTIMATORS:
        raise ValueError(f"unknown token estimator {estimator!r}; known: {', '.join(TOKEN_ESTIMATORS)}")
    return f"sighead_{estimator}_log_likelihoods"


SIGHEAD_STATS = [stat_name(e) for e in TOKEN_ESTIMATORS]


class SigmoidHeadGreedyProbsCalculator(GreedyProbsCalculator):
    """LM-Polygraph's greedy statistics, plus every token estimator of this package, from the same
    `generate` call. Without a Sigmoid Head on the model, the `sigmoid` and `hybrid` statistics are
    absent (and the estimators that need them fail, saying so)."""

    @staticmethod
    def meta_info() -> tuple[list[str], list[str]]:
        stats, dependencies = GreedyProbsCalculator.meta_info()
        return [*stats, *SIGHEAD_STATS], dependencies

    def __init__(
        self,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        n_alternatives: int = 10,
        options: ScoringOptions | None = None,
    ):
        super().__init__(output_attentions, output_hidden_states, n_alternatives)
        self.options = options or ScoringOptions()

    def __call__(self, dependencies, texts, model, max_new_tokens: int = 100, **kwargs) -> dict[str, Any]:
        if getattr(model, "model_type", None) != "CausalLM":
            raise ValueError(
                f"the Sigmoid Head scores decoder-only models (LM-Polygraph model_type 'CausalLM'); "
                f"got {getattr(model, 'model_type', type(model).__name__)!r}"
            )
        seen: dict[str, Any] = {}

        def recording(generate):  # LM-Polygraph's own generate: its processors and defaults
            def call(**args):
                out = generate(**args)
                seen["sequences"], seen["width"] = out.sequences, args["input_ids"].shape[1]
                return out

            return call

        with wrapped_method(model, "generate", recording), StepScores(model.model, self.options) as steps:
            stats = super().__call__(dependencies, texts, model, max_new_tokens)
        generated = seen["sequences"][:, seen["width"] :]
        host = steps.finish(generated)
        width = generated.shape[1]
        for estimator in TOKEN_ESTIMATORS:
            if estimator in host:
                stats[stat_name(estimator)] = [
                    host[estimator][i * width : i * width + len(tokens)]
                    for i, tokens in enumerate(stats["greedy_tokens"])
                ]
        return stats


def load_stat_calculator(config: Mapping[str, Any], environment) -> SigmoidHeadGreedyProbsCalculator:
    """LM-Polygraph's builder hook. `config` keys: `adapter` (a Sigmoid Head directory, attached to
    the environment's model unless one is attached already), `output_attentions` and
    `output_hidden_states` (default on, as LM-Polygraph's own greedy calculator in `polygraph_eval`,
    so its attention- and embedding-based estimators keep working), `n_alternatives`, `p_jump`,
    `epsilon`."""
    config = dict(config or {})
    known = {"adapter", "output_attentions", "output_hidden_states", "n_alternatives", "p_jump", "epsilon"}
    unknown = sorted(set(config) - known - {"obj"})
    if unknown:
        raise ValueError(f"unknown Sigmoid Head calculator settings {unknown}; known: {sorted(known)}")
    model = environment.model
    if config.get("adapter"):
        attach(model, config["adapter"])
    rule = {k: float(config[k]) for k in ("p_jump", "epsilon") if config.get(k) is not None}
    return SigmoidHeadGreedyProbsCalculator(  # attentions and hidden states on, as polygraph_eval's own
        output_attentions=bool(config.get("output_attentions", True)),
        output_hidden_states=bool(config.get("output_hidden_states", True)),
        n_alternatives=int(config.get("n_alternatives", 10)),
        options=ScoringOptions(**rule),
    )


def attach(model, adapter) -> None:
    """Attach the Sigmoid Head at `adapter` to an LM-Polygraph `WhiteboxModel`, in place. The base
    model's logits and generations do not change."""
    if active_head_layer(model.model) is None:
        model.model = load_adapter(model.model, adapter).eval()


def register(available: list | None = None, **config) -> list:
    """LM-Polygraph's default stat calculators with this one added last, so that it provides the
    greedy statistics too: the list to give `UEManager(available_stat_calculators=...)`."""
    from lm_polygraph.defaults.register_default_stat_calculators import register_default_stat_calculators
    from lm_polygraph.utils.factory_stat_calculator import StatCalculatorContainer

    stats, dependencies = SigmoidHeadGreedyProbsCalculator.meta_info()
    calculators = list(available) if available is not None else register_default_stat_calculators("Whitebox")
    calculators.append(
        StatCalculatorContainer(
            name="SigmoidHeadGreedyProbsCalculator",
            builder=__name__,
            cfg=config,
            stats=stats,
            dependencies=dependencies,
        )
    )
    return calculators


class SigmoidHeadSequence(Estimator):
    """Sequence uncertainty: minus an aggregation (`mean`, `prod`, `sumlog`, `meanlog`, `min`) of a
    token estimator's scores (`sigmoid`, `hybrid`, `ceiling`, `boostedprob`, `softmax`)."""

    def __init__(self, estimator: str = "sigmoid", aggregation: str = "mean"):
        if aggregation not in SEQUENCE_AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {aggregation!r}; known: {', '.join(SEQUENCE_AGGREGATIONS)}"
            )
        self.stat = stat_name(estimator)
        self.estimator, self.aggregation = estimator, aggregation
        super().__init__([self.stat], "sequence")

    def __str__(self) -> str:
        return f"SigmoidHead[{self.estimator}_{self.aggregation}]"

    def __call__(self, stats: Mapping[str, Any]) -> np.ndarray:
        rows = _rows(stats, self.stat)
        return -np.array([aggregate_rows(row[None])[self.aggregation][0] for row in rows])


class SigmoidHeadToken(Estimator):
    """Token uncertainty: minus each generated token's score, outputs concatenated."""

    def __init__(self, estimator: str = "sigmoid"):
        self.stat = stat_name(estimator)
        self.estimator = estimator
        super().__init__([self.stat], "token")

    def __str__(self) -> str:
        return f"SigmoidHeadToken[{self.estimator}]"

    def __call__(self, stats: Mapping[str, Any]) -> np.ndarray:
        rows = _rows(stats, self.stat)
        return -np.exp(np.concatenate(rows)) if rows else np.zeros(0)


def _rows(stats: Mapping[str, Any], stat: str) -> list[np.ndarray]:
    if stat not in stats:
        raise KeyError(
            f"{stat} was not computed: register SigmoidHeadGreedyProbsCalculator (builder "
            "sighead_eval.polygraph) after LM-Polygraph's defaults, with a Sigmoid Head adapter for the "
            "sigmoid and hybrid scores"
        )
    return [np.asarray(row, dtype=np.float64) for row in stats[stat]]


def load_estimator(config: Mapping[str, Any]) -> Estimator:
    """LM-Polygraph's estimator hook. `config`: `estimator` (default `sigmoid`), `level`
    (`sequence`, the default, or `token`) and, at sequence level, `aggregation` (default `mean`)."""
    config = dict(config or {})
    level = config.pop("level", "sequence")
    if level == "sequence":
        return SigmoidHeadSequence(**config)
    if level == "token":
        return SigmoidHeadToken(**config)
    raise ValueError(f"unknown level {level!r}; known: sequence, token")


# -- LM-Polygraph's evaluation loop on the offline geography questions ------------------------------
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

    from .harness import task_hooks
    from .models import load_model
    from .runs import choose_adapter

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
    from .metrics import prr

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
    from resampling the outputs (the same resample for both)."""
    from .metrics import prr

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, quality.size, quality.size)
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


if __name__ == "__main__":
    main()
