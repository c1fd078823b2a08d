"""Dominant-token sets and BoostedProb, checked against the authors' package `boostedprob`."""

from __future__ import annotations

import boostedprob
import pytest
import torch

from sighead_eval.dominant import boosted_log_prob, dominant_tokens, exact_top_k


def _distributions(n: int = 300, vocab: int = 2000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 12.0, n).unsqueeze(-1)  # flat to peaked
    return torch.log_softmax(torch.randn(n, vocab, generator=g) * scale, dim=-1)


@pytest.mark.parametrize("mode", ["last", "first"])
def test_sets_and_scores_agree_with_boostedprob(mode):
    log_probs = _distributions()
    targets = torch.randint(
        0, log_probs.shape[-1], (log_probs.shape[0],), generator=torch.Generator().manual_seed(1)
    )
    targets[::2] = log_probs[::2].argmax(-1)  # half the targets are the top token
    sets = dominant_tokens(log_probs, mode=mode)
    reference_ids = boostedprob.find_dominant(log_probs.clone().unsqueeze(0), cut_point_mode=mode)[0]
    assert torch.equal(sets.size, (reference_ids != -1).sum(-1))
    for n in range(0, log_probs.shape[0], 7):
        ours = set(sets.ids[n][sets.mask[n]].tolist())
        theirs = set(reference_ids[n][reference_ids[n] != -1].tolist())
        assert ours == theirs
    reference = boostedprob.calculate_boostedprob(
        log_probs.clone().unsqueeze(0), targets.unsqueeze(0), cut_point_mode=mode
    )[0]
    ours = boosted_log_prob(log_probs.gather(-1, targets[:, None])[:, 0], targets, sets).exp()
    assert torch.allclose(ours, reference, atol=1e-6)
    assert 0 < sets.size.float().mean() < 50  # the test covers non-trivial sets


def test_exact_top_k_gives_the_full_sort_sets():
    log_probs = _distributions(vocab=5000)
    cut = dominant_tokens(log_probs)
    full = dominant_tokens(log_probs, top_k=5000)
    assert exact_top_k(0.005, 5000) == 202
    assert cut.ids.shape[-1] == 202
    assert torch.equal(cut.size, full.size)
    assert torch.allclose(cut.mass, full.mass)


def test_flat_distribution_has_an_empty_set_and_boostedprob_is_softmax():
    log_probs = torch.log_softmax(torch.zeros(1, 100), -1)
    sets = dominant_tokens(log_probs)
    assert sets.size.item() == 0
    target = torch.tensor([3])
    assert torch.equal(boosted_log_prob(log_probs[:, 3], target, sets), log_probs[0, 3:4])


def test_two_way_split_is_one_dominant_set_worth_its_mass():
    probs = torch.tensor([[0.48, 0.47, 0.01, 0.01, 0.01, 0.01, 0.01]])
    sets = dominant_tokens(probs.log())
    assert sorted(sets.ids[0][sets.mask[0]].tolist()) == [0, 1]
    boosted = boosted_log_prob(probs.log()[:, 1], torch.tensor([1]), sets).exp()
    assert boosted.item() == pytest.approx(0.95, abs=1e-6)


def test_first_and_last_modes_differ_on_nested_drops():
    probs = torch.tensor([[0.6, 0.3, 0.05, 0.0125, 0.0125, 0.0125, 0.0125]])
    assert dominant_tokens(probs.log(), mode="first").size.item() == 1
    assert dominant_tokens(probs.log(), mode="last").size.item() == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_jump": 1.5}, r"`p_jump` should be a number in \[0, 1\], got 1.5"),
        ({"epsilon": -0.1}, r"`epsilon` should be a number in \[0, 1\), got -0.1"),
        ({"mode": "middle"}, r"`mode` should be one of \('last', 'first'\), got 'middle'"),
        ({"top_k": 1}, r"`top_k` should be an integer >= 2 or None \(exact\), got 1"),
    ],
)
def test_bad_rule_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dominant_tokens(torch.zeros(1, 10), **kwargs)


def test_epsilon_zero_needs_an_explicit_top_k():
    log_probs = _distributions()
    with pytest.raises(ValueError, match="`epsilon` = 0 has no exact top-k bound"):
        dominant_tokens(log_probs, epsilon=0.0)
    assert dominant_tokens(log_probs, epsilon=0.0, top_k=64).ids.shape[-1] == 64  # approximate, asked for
