"""The authors' ranking loss (their commit b755c23): `train --ranking-loss-weight W
--ranking-loss-margin M` adds W x MarginRankingLoss(M)(s_ref, s_dom, 1) over every dominant token
other than the reference, on the head's logits, to the BCE."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_model
from test_training import _config, _head, _run

from sighead_eval.dominant import dominant_tokens
from sighead_eval.training import TrainConfig
from sighead_eval.training.loss import ranking_loss
from sighead_eval.training.negatives import dominant_pairs


def _batch(seed=0, n=12, d=4):
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(n, generator=g)
    dominant = torch.randn(n, d, generator=g)
    valid = torch.rand(n, d, generator=g) > 0.4
    valid[0] = False  # a position without pairs
    return reference, dominant, valid


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_the_ranking_loss_is_the_authors_margin_ranking_loss(margin):
    """Over the valid pairs, torch's MarginRankingLoss with target 1, as the authors call it."""
    reference, dominant, valid = _batch()
    rows, cols = valid.nonzero(as_tuple=True)
    theirs = torch.nn.MarginRankingLoss(margin=margin)(
        reference[rows], dominant[rows, cols], torch.ones(len(rows))
    )
    assert ranking_loss(reference, dominant, valid, margin) == pytest.approx(float(theirs), rel=1e-6)
    by_hand = sum(
        max(0.0, float(dominant[r, c] - reference[r]) + margin) for r, c in zip(rows.tolist(), cols.tolist())
    ) / len(rows)
    assert ranking_loss(reference, dominant, valid, margin) == pytest.approx(by_hand, rel=1e-6)


def test_the_ranking_loss_is_zero_once_the_reference_leads_by_the_margin():
    reference, dominant, valid = _batch()
    leading = dominant.max(1).values + 0.5  # every reference 0.5 ahead of its dominant tokens
    assert float(ranking_loss(leading, dominant, valid, 0.5)) == 0.0
    assert float(ranking_loss(leading - 0.1, dominant, valid, 0.5)) > 0.0
    assert float(ranking_loss(reference, dominant, torch.zeros_like(valid), 0.0)) == 0.0  # no pairs


def test_the_pairs_are_the_dominant_tokens_other_than_the_reference():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 50, generator=g)
    z[:, :3] += 6.0  # three dominant tokens a row
    sets = dominant_tokens(torch.log_softmax(z, -1))
    targets = torch.tensor([0, 1, 2, 10, 0, 11])
    ids, valid = dominant_pairs(sets, targets)
    for row in range(6):
        dominant = set(sets.ids[row][sets.mask[row]].tolist())
        assert set(ids[row][valid[row]].tolist()) == dominant - {int(targets[row])}


def test_its_gradient_touches_only_the_rows_of_the_pairs():
    """The head's (sparse) gradient from the ranking loss alone: the references of positions with
    pairs, and their dominant tokens; nothing else."""
    from peft import get_peft_model

    from sighead_eval import SigmoidHeadConfig
    from sighead_eval.scoring import active_head_layer

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    layer = active_head_layer(model)
    embedding = layer.sigmoid_head_embedding["default"]
    vocab, width = layer.base_layer.weight.shape
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(5, width, generator=g)
    targets = torch.tensor([3, 4, 5, 6, 7])
    ids = torch.tensor([[10, 11], [12, 0], [13, 14], [15, 16], [0, 0]])
    valid = torch.tensor([[True, True], [True, False], [False, False], [True, True], [False, False]])
    logits = layer.head_logits(hidden, torch.cat([targets[:, None], ids], 1))
    ranking_loss(logits[:, 0], logits[:, 1:], valid, margin=100.0).backward()  # every pair active
    grad = embedding.weight.grad.coalesce() if embedding.weight.grad.is_sparse else embedding.weight.grad
    touched = set((grad.to_dense().abs().sum(1) > 0).nonzero().squeeze(1).tolist())
    assert touched == {3, 4, 6, 10, 11, 12, 15, 16}


def test_the_setting_is_checked_and_off_by_default(tmp_path):
    config = _config(tmp_path)
    assert config.ranking_loss_weight == 0 and "ranking_loss_weight" not in config.settings()
    on = _config(tmp_path, ranking_loss_weight=1.0, ranking_loss_margin=0.1)
    assert on.settings()["ranking_loss_weight"] == 1.0 and on.settings()["ranking_loss_margin"] == 0.1
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ranking_loss_weight"):
            _config(tmp_path, ranking_loss_weight=bad)
    with pytest.raises(ValueError, match="full"):
        _config(tmp_path, ranking_loss_weight=1.0, negatives="full")
    assert TrainConfig.from_recipe("authors-2026").ranking_loss_weight == 0  # off, as the authors' default


def test_training_with_it_moves_the_head_and_names_it_on_the_card(tmp_path, tokenizer):
    _run(_config(tmp_path, "plain", max_steps=3), tokenizer)
    _run(
        _config(tmp_path, "ranked", max_steps=3, ranking_loss_weight=5.0, ranking_loss_margin=1.0), tokenizer
    )
    assert not torch.equal(_head(tmp_path / "plain"), _head(tmp_path / "ranked"))
    card = (tmp_path / "ranked" / "README.md").read_text()
    assert "| `ranking_loss_weight` | `5.0` |" in card and "| `ranking_loss_margin` | `1.0` |" in card
    assert "ranking_loss" not in (tmp_path / "plain" / "README.md").read_text()


# Resume with the ranking loss on: tests/test_training.py::test_resumed_run_ends_with_the_same_adapter.


def test_early_stopping_reads_the_whole_dev_objective(tmp_path, tokenizer):
    """With the ranking loss on, the best head is the one with the lowest dev loss, BCE plus the
    weighted ranking loss on the dev positions' own pairs (the authors' trainer reads its eval
    loss), not the BCE alone, which the ranking loss trades away; without it, nothing changes."""
    weight = 5.0
    info = _run(_config(tmp_path, "ranked", ranking_loss_weight=weight, ranking_loss_margin=1.0), tokenizer)
    log = [json.loads(line) for line in (tmp_path / "ranked" / "training_log.jsonl").read_text().splitlines()]
    for entry in log:
        assert entry["dev_ranking"] > 0  # a margin of 1 leaves some pairs short of it
        assert entry["dev_loss"] == pytest.approx(entry["dev_bce"] + weight * entry["dev_ranking"])
    assert info["dev_after"]["dev_loss"] == pytest.approx(min(e["dev_loss"] for e in log))
    assert log[-1]["dev_ranking"] < log[0]["dev_ranking"]  # training lowers it on dev too
    assert "dev loss (BCE plus the weighted ranking loss)" in (tmp_path / "ranked" / "README.md").read_text()
    plain = _run(_config(tmp_path, "plain", max_steps=2), tokenizer)
    assert "dev_loss" not in plain["dev_after"]
