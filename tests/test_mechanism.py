"""The mechanism experiment as a regression test of the whole training path: a synthetic language
with known validity, heads trained by the project's trainer, scores against METHOD.md's analysis."""

from __future__ import annotations

import pytest

from sighead_eval import mechanism as m


@pytest.fixture(scope="module")
def experiment():
    return m.run()


def test_regimes_are_what_the_analysis_describes():
    from sighead_eval.dominant import dominant_tokens

    p, valid = m.regime_distributions()
    sets = dominant_tokens(__import__("torch").tensor(p).log().float())
    assert sets.size.tolist() == [10, 25, 1, 2]  # cluster, block, the winner, the winner and the wrong token
    assert p[2, 1] > p[1, 24]  # the tail's wrong token is more probable than a valid block token
    assert valid.sum(1).tolist() == [10, 25, 1, 1]


def test_the_converged_head_scores_as_predicted(experiment):
    _, results = experiment
    head = results["paper"].sigmoid  # (context, answer token)
    assert head[0, :10].min() > 0.9  # a cluster of valid synonyms: ~1
    assert head[1, :25].min() > 0.8  # a flat valid block, down to p = 0.028: ~1
    assert head[2, 1:21].max() < 0.3  # a smooth wrong tail after a winner: low, even at p = 0.05
    assert head[2, 1] < head[1, 24]  # ... so it ranks above the softmax's order
    assert head[3, 1] > 0.8  # the blind spot: a dominant wrong token of 2 % escapes


def test_the_paper_recipe_beats_the_softmax_and_its_ablations_pooled(experiment):
    rows, _ = experiment
    paper = rows["Sigmoid Head (paper)"]["pooled"]
    assert paper > rows["softmax"]["pooled"] + 0.05
    for ablation in ("no dominant exclusion", "random negatives", "full-vocabulary BCE"):
        assert paper > rows[f"Sigmoid Head ({ablation})"]["pooled"] + 0.02, ablation
    assert rows["Sigmoid Head (paper)"]["sequence min"] > rows["softmax"]["sequence min"]
    assert rows["boostedprob"]["blind"] == pytest.approx(0.5)  # the wrong token gets the set's mass
    table = m.markdown(rows)
    assert table.startswith("| estimator | tail | blind | pooled |")
