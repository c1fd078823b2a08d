"""LM-Polygraph's greedy statistics with the Sigmoid Head's token scores from the same `generate`
call (`SigmoidHeadGreedyProbsCalculator`), and its builder hook (`load_stat_calculator`: a config's
`builder: sighead_eval.polygraph`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lm_polygraph.stat_calculators.greedy_probs import GreedyProbsCalculator

from ..adapter.io import load_adapter
from ..estimators import TOKEN_ESTIMATORS
from ..frozen import wrapped_method
from ..scoring import ScoringOptions, StepScores, active_head_layer


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
            builder=__package__,  # sighead_eval.polygraph, where LM-Polygraph finds the hook
            cfg=config,
            stats=stats,
            dependencies=dependencies,
        )
    )
    return calculators
