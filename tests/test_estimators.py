"""The estimator registry: each token estimator one entry, every face derived from it. The
authors' two newer scores equal their references; an entry declared by another package through
the `sighead_eval.estimators` entry point reaches the engine, lm-eval, evaluate, LM-Polygraph and
the reports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import write_estimator_plugin

from sighead_eval import estimators as E
from sighead_eval.scoring import ScoringOptions, token_scores


def _rows(n=48, vocab=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vocab, generator=g) * 1.5
    z[: n // 2, :3] += 6.0  # a clear dominant set
    z[n // 2 :, :40] += torch.rand(n - n // 2, 40, generator=g) * 3  # flatter tops
    targets = torch.randint(0, 80, (n,), generator=g)
    targets[:4] = torch.randint(100, vocab, (4,), generator=g)  # ranked far down
    return z, targets


@pytest.mark.parametrize("mode", ["last", "first"])
def test_weighted_boostedprob_equals_boostedprob_0_1_3(mode):
    from boostedprob import calculate_boostedprob

    z, targets = _rows()
    logp = torch.log_softmax(z, -1)
    ours = token_scores(z, targets, options=ScoringOptions(dominant_mode=mode))["weighted_boostedprob"]
    theirs = calculate_boostedprob(
        log_probs=logp[None],
        target=targets[None],
        ue_method="weighted_sum_dominant_mass",
        cut_point_mode=mode,
    )[0]
    assert torch.allclose(ours.exp(), theirs, rtol=1e-5, atol=1e-7)
    # inside the dominant set it keeps the set's order, where BoostedProb gives every member the mass
    assert not torch.allclose(ours, token_scores(z, targets)["boostedprob"])


def _authors_rank_preserving_adjust(A, B, eps=1e-3):
    """The authors' `rank_preserving_adjust` (utils.py), as they wrote it."""
    order = torch.argsort(B, dim=-1, descending=True)
    A_sorted = torch.gather(A, -1, order)
    shifted = A_sorted[..., :-1] * (1 - eps)
    shifted = torch.cat([torch.full_like(A_sorted[..., :1], float("inf")), shifted], dim=-1)
    C_sorted = torch.minimum(A_sorted, torch.cummin(shifted, dim=-1).values)
    C = torch.empty_like(C_sorted)
    C.scatter_(-1, order, C_sorted)
    return C


@pytest.mark.parametrize("cpu_branches", [True, False])
def test_combined_equals_the_authors_adjustment(cpu_branches, monkeypatch):
    """At the scored token, the authors' adjustment of the head's vocabulary-wide scores by the
    softmax's order; on rows whose token the sorted top covers and on those it does not."""
    from conftest import build_model
    from peft import get_peft_model

    from sighead_eval import SigmoidHeadConfig
    from sighead_eval.scoring import active_head_layer
    from sighead_eval.scoring import tokens as T

    model = get_peft_model(build_model("llama"), SigmoidHeadConfig())
    layer = active_head_layer(model)
    with torch.no_grad():
        layer.sigmoid_head_embedding["default"].weight.normal_(0, 0.5)
    vocab, width = layer.base_layer.weight.shape
    z, targets = _rows(vocab=vocab)
    hidden = torch.randn(z.shape[0], width, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(T, "host_reads_are_free", lambda device: cpu_branches)
    with torch.no_grad():
        out = token_scores(z, targets, hidden, layer, ScoringOptions(estimators="sigmoid|combined"))
        A = torch.sigmoid(layer.head_logits(hidden, None))  # (n, V)
    expected = _authors_rank_preserving_adjust(A, torch.softmax(z, -1)).gather(-1, targets[:, None])[:, 0]
    assert torch.allclose(out["combined"].exp(), expected, rtol=1e-5, atol=1e-7)
    assert (out["combined"] <= out["sigmoid"] + 1e-7).all()
    assert (out["combined"] < out["sigmoid"] - 1e-4).any()  # the adjustment bites somewhere
    argmax = z.argmax(-1) == targets
    assert torch.equal(out["combined"][argmax], out["sigmoid"][argmax])  # nothing ranks above it
    # a confident head at the argmax keeps its own score (no cap at 1 - eps)
    targets = z.argmax(-1)
    with torch.no_grad():
        layer.sigmoid_head_embedding["default"].weight[targets[0]] = hidden[0] * (
            20.0 / hidden[0].norm() ** 2
        )
        sure = token_scores(
            z[:1], targets[:1], hidden[:1], layer, ScoringOptions(estimators="sigmoid|combined")
        )
    assert sure["sigmoid"].exp().item() > 0.999999
    assert torch.equal(sure["combined"], sure["sigmoid"])


def test_opt_in_and_head_estimators_are_computed_only_where_asked_and_possible():
    z, targets = _rows()
    stats = {"entropy", "dominant_size", "dominant_mass", "greedy"}
    assert set(token_scores(z, targets)) - stats == {
        e for e in E.DEFAULT_ESTIMATORS if not E.REGISTRY[e].needs_head
    }
    only = token_scores(z, targets, options=ScoringOptions(estimators="softmax"))
    assert set(only) - stats == {"softmax"}
    with pytest.raises(ValueError, match="unknown token estimator.*'sigmod'"):
        ScoringOptions(estimators="sigmod|softmax")


def test_every_face_lists_the_registry():
    """No face keeps a list of its own: each reads the registry."""
    from sighead_eval.report.plots import FAMILY_COLOURS
    from sighead_eval.spans import SPAN_ESTIMATORS

    assert tuple(FAMILY_COLOURS)[: len(E.TOKEN_ESTIMATORS)] == E.TOKEN_ESTIMATORS
    assert len(set(FAMILY_COLOURS.values())) == len(FAMILY_COLOURS)  # every estimator its own colour
    assert SPAN_ESTIMATORS == (*E.TOKEN_ESTIMATORS, "entropy")
    assert E.HEAD_ESTIMATORS == tuple(e.name for e in E.REGISTRY.values() if e.needs_head)
    assert set(E.RIVAL_CONFIDENCES).isdisjoint(E.HEAD_CONFIDENCES + E.CEILING_CONFIDENCES)
    for name in E.TOKEN_ESTIMATORS:
        assert E.split_confidence(f"{name}_min") == (name, "min")
        assert E.check_running_confidence(f"{name}_min") == (name, "min")


def test_a_plugin_estimator_reaches_every_face(tmp_path, tiny_dir):
    """An estimator declared by another package (an entry point of group `sighead_eval.estimators`)
    is scored by the engine and reaches lm-eval (the model's scores, the templates' filters),
    evaluate and the report's table (LM-Polygraph's statistics: tests/test_polygraph.py, in its own
    environment)."""
    write_estimator_plugin(tmp_path)
    script = textwrap.dedent(
        f"""
        import json, math, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from sighead_eval import estimators as E
        from sighead_eval.harness import templates
        from sighead_eval.harness.confidence import Confidence, ScoredStr
        from sighead_eval.report.plots import FAMILY_COLOURS
        from sighead_eval.scoring import score
        from sighead_eval.models import load_model
        from transformers import AutoTokenizer

        model, _ = load_model({str(tiny_dir / "base")!r}, adapter={str(tiny_dir / "head")!r})
        tok = AutoTokenizer.from_pretrained({str(tiny_dir / "base")!r})
        [r] = score(model, tok, [{{"prompt": "Hi", "response": "Paris is big."}}], progress=False)
        seq = r.summary()["sequence"]
        judged = Confidence(estimator="halved_mean").apply([[ScoredStr("x", r.summary())]], [{{}}])
        import evaluate, sighead_eval
        from sighead_eval.report.table import estimator_table
        metric = evaluate.load(sighead_eval.metric_path("sigmoid_confidence"))
        hf = metric.compute(predictions=["Paris is big."], sources=["Hi"], model={str(tiny_dir / "base")!r},
                            adapter={str(tiny_dir / "head")!r})
        table = estimator_table({{"t": {{"auroc,halved_mean": 0.7, "auroc,softmax_mean": 0.6}}}})
        print(json.dumps({{
            "registry": "halved" in E.TOKEN_ESTIMATORS and "halved_mean" in E.CONFIDENCES,
            "engine": math.isclose(seq["halved_prod"], seq["softmax_prod"] / 2 ** r.summary()["n_tokens"],
                                   rel_tol=1e-5),
            "lm_eval_template": "estimator: halved_mean" in templates.render("_binary_template"),
            "lm_eval_filter": judged[0]["confidence"] == seq["halved_mean"],
            "evaluate": math.isclose(hf["scores"]["halved_mean"][0], seq["halved_mean"], rel_tol=1e-5),
            "report": "halved_mean" in table["rows"] and "halved" in FAMILY_COLOURS,
        }}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reached = json.loads(done.stdout.strip().splitlines()[-1])
    assert reached == dict.fromkeys(reached, True) and len(reached) == 6, reached
