"""The LM-Polygraph plug-in (`sighead_eval.polygraph`), in its own environment (`tox -e polygraph`):
LM-Polygraph's own evaluation loop, offline, on the embedded model with the shipped head."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "lm_polygraph", reason="LM-Polygraph has a large dependency set of its own: run `tox -e polygraph`"
)

from sighead_eval import polygraph as P  # noqa: E402
from sighead_eval.estimators import aggregate_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "adapters" / "smollm2-135m-instruct-wiki"
EXAMPLE = ROOT / "docs" / "polygraph_config.yaml"


def test_sequence_and_token_estimators_follow_polygraphs_convention():
    rows = [np.log([0.9, 0.5, 0.8]), np.log([0.2, 0.99])]
    stats = {P.stat_name("sigmoid"): rows}
    for aggregation in ("mean", "prod", "sumlog", "meanlog", "min"):
        got = P.load_estimator({"aggregation": aggregation})(stats)
        want = [-aggregate_rows(r[None])[aggregation][0] for r in rows]
        np.testing.assert_allclose(got, want)  # higher = less confident
    tokens = P.load_estimator({"level": "token"})(stats)
    np.testing.assert_allclose(tokens, -np.exp(np.concatenate(rows)))
    assert str(P.SigmoidHeadSequence("hybrid", "prod")) == "SigmoidHead[hybrid_prod]"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"aggregation": "median"}, "unknown aggregation 'median'; known: mean, prod"),
        ({"estimator": "logit"}, "unknown token estimator 'logit'; known: sigmoid"),
        ({"level": "claim"}, "unknown level 'claim'; known: sequence, token"),
    ],
)
def test_bad_estimator_settings_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        P.load_estimator(config)


def test_the_paired_prr_difference_is_zero_for_a_tie_and_positive_for_a_better_ranking():
    rng = np.random.default_rng(0)
    quality = (rng.random(200) < 0.5).astype(float)
    noise = rng.random(200)
    assert P.paired_prr_difference(noise, noise, quality) == (0.0, 0.0, 0.0)
    diff, low, high = P.paired_prr_difference(quality + 0.1 * noise, noise, quality)
    assert 0 < low < diff < high


def test_a_missing_statistic_says_how_to_get_it():
    with pytest.raises(KeyError, match="register SigmoidHeadGreedyProbsCalculator"):
        P.SigmoidHeadSequence()({"greedy_tokens": [[1]]})


def test_unknown_calculator_settings_are_refused():
    with pytest.raises(ValueError, match=r"unknown Sigmoid Head calculator settings \['adaptor'\]"):
        P.load_stat_calculator({"adaptor": "x"}, environment=None)


@pytest.fixture(scope="module")
def run():
    """LM-Polygraph's UEManager over 24 geography questions, the shipped head registered."""
    manager = P.geo_qa_manager(limit=24, adapter=str(ADAPTER), batch_size=8, max_new_tokens=24)
    manager.save_stats += ["input_tokens", P.stat_name("sigmoid")]
    calls = _count_forwards(manager.model.model)
    manager()
    return manager, calls[0]


def _count_forwards(model) -> list[int]:
    from sighead_eval.scoring import unwrap

    calls = [0]

    def hook(*_):
        calls[0] += 1

    unwrap(model).register_forward_hook(hook)
    return calls


@pytest.mark.integration
def test_polygraphs_loop_ranks_the_head_beside_its_own_estimators(run):
    manager, _ = run
    names = {name for (level, name, _, metric) in manager.metrics if metric == "prr_normalized"}
    assert set(P.BASELINES) <= names
    assert {str(P.SigmoidHeadSequence(e, a)) for e, a in P.HEAD_ESTIMATORS} <= names
    for key, value in manager.metrics.items():
        assert math.isfinite(value), key
    table = P.prr_table(manager)
    assert "24 answers" in table and "`SigmoidHead[sigmoid_mean]`" in table and "`Perplexity`" in table
    assert "minus `BoostedProbSequence`" in table and "paired bootstrap interval" in table
    print(table)


@pytest.mark.integration
def test_polygraphs_boostedprob_equals_this_packages(run):
    manager, _ = run
    theirs = np.asarray(manager.estimations[("sequence", "BoostedProbSequence")])
    ours = -np.array([np.exp(r).mean() for r in manager.stats[P.stat_name("boostedprob")]])
    assert theirs.shape == ours.shape == (24,)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


@pytest.mark.integration
def test_the_head_scores_ride_on_polygraphs_one_generation_pass(run):
    """One calculator generates (ours replaces the stock greedy one), the model runs once a step, and
    the scores recorded during generation equal force-decoding the same tokens."""
    from lm_polygraph.stat_calculators.greedy_probs import GreedyProbsCalculator

    from sighead_eval.scoring import score

    manager, forwards = run
    greedy = [c for c in manager.stat_calculators if isinstance(c, GreedyProbsCalculator)]
    assert [type(c) for c in greedy] == [P.SigmoidHeadGreedyProbsCalculator]
    steps = 0
    for start in range(0, 24, 8):  # each batch runs one forward per generated step
        steps += max(len(t) for t in manager.stats["greedy_tokens"][start : start + 8])
    assert forwards == steps

    model, tokenizer = manager.model.model, manager.model.tokenizer
    pad = tokenizer.pad_token_id
    for i in (0, 5, 17):
        padded = manager.stats["input_tokens"][i]
        prompt = padded[next(j for j, t in enumerate(padded) if t != pad) :]  # left padding off
        tokens = manager.stats["greedy_tokens"][i]
        forced = score(
            model,
            tokenizer,
            [{"prompt_token_ids": prompt, "response_token_ids": tokens, "prompt": "", "response": ""}],
            progress=False,
        )[0]
        recorded = manager.stats[P.stat_name("sigmoid")][i]
        np.testing.assert_allclose(recorded, forced.log_scores["sigmoid"], atol=1e-4)


@pytest.mark.integration
def test_the_example_config_builds_through_polygraphs_own_factories(run):
    """The copyable config's stat calculator and estimators, built as `polygraph_eval` builds them."""
    from lm_polygraph.utils.builder_enviroment_stat_calculator import BuilderEnvironmentStatCalculator
    from lm_polygraph.utils.factory_estimator import FactoryEstimator
    from lm_polygraph.utils.factory_stat_calculator import FactoryStatCalculator, StatCalculatorContainer
    from omegaconf import OmegaConf

    manager, _ = run
    config = OmegaConf.load(EXAMPLE)
    assert "auto" in config.stat_calculators
    [entry] = [s for s in config.stat_calculators if s != "auto"]
    container = StatCalculatorContainer(
        name=entry.name,
        cfg=entry.cfg,
        stats=entry.stats,
        dependencies=entry.dependencies,
        builder=entry.builder,
    )
    assert set(container.stats) == set(P.SigmoidHeadGreedyProbsCalculator.meta_info()[0])
    entry.cfg.adapter = str(ADAPTER)  # the example's relative path, from the repository root
    [calculator] = FactoryStatCalculator(BuilderEnvironmentStatCalculator(manager.model))([container])
    assert isinstance(calculator, P.SigmoidHeadGreedyProbsCalculator)
    built = [FactoryEstimator()(e.name, e.get("cfg", {})) for e in config.estimators]
    assert {str(e) for e in built} >= {"SigmoidHead[sigmoid_mean]", "BoostedProbSequence"}


def test_a_plugin_estimator_reaches_the_polygraph_statistics(tmp_path):
    """An estimator another package declares (entry point group `sighead_eval.estimators`) is one of
    the statistics the LM-Polygraph calculator provides."""
    import subprocess
    import sys

    from conftest import write_estimator_plugin

    write_estimator_plugin(tmp_path)
    script = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        "from sighead_eval.polygraph import SIGHEAD_STATS, stat_name; "
        "print(stat_name('halved') in SIGHEAD_STATS, stat_name('softmax') in SIGHEAD_STATS)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
