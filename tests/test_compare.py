"""The recipe-research protocol: per-type and macro metrics, paired bootstrap intervals, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sighead_eval import compare
from sighead_eval.report.samples import TaskSamples


def synthetic(n_per_type=60, seed=0, head_edge=1.0):
    """Two types with different accuracy; the head separates good from bad by `head_edge`."""
    rng = np.random.default_rng(seed)
    docs, quality = [], []
    for t, acc in (("easy", 0.8), ("hard", 0.3)):
        for i in range(n_per_type):
            docs.append({"id": f"{t}-{i}", "type": t})
            quality.append(float(rng.random() < acc))
    q = np.array(quality)
    noise = lambda: rng.standard_normal(q.size)  # noqa: E731
    conf = {
        "sigmoid_mean": head_edge * q + noise(),
        "sigmoid_prod": 0.5 * q + noise(),
        "sigmoid_min": noise(),
        "softmax_mean": 0.3 * q + noise(),
        "softmax_prod": 0.3 * q + noise(),
        "boostedprob_mean": 0.3 * q + noise(),
        "boostedprob_prod": 0.3 * q + noise(),
        "length": noise(),
    }
    return TaskSamples("sighead_x", docs, q, conf, [""] * q.size)


def test_per_type_and_macro_agree_with_scikit_learn():
    ts = synthetic()
    per = compare.per_type(ts, "sigmoid_mean", "auroc")
    for t in ("easy", "hard"):
        idx = [i for i, d in enumerate(ts.docs) if d["type"] == t]
        assert per[t] == pytest.approx(roc_auc_score(ts.quality[idx], ts.confidence["sigmoid_mean"][idx]))
    assert per["macro"] == pytest.approx((per["easy"] + per["hard"]) / 2)


def test_a_type_with_one_class_is_left_out_of_the_macro():
    ts = synthetic()
    ts.docs.append({"id": "odd", "type": "solo"})
    ts.quality = np.append(ts.quality, 1.0)
    ts.confidence = {k: np.append(v, 0.0) for k, v in ts.confidence.items()}
    assert "solo" not in compare.type_groups(ts)
    assert set(compare.per_type(ts, "softmax_mean", "prr")) == {"easy", "hard", "macro"}


def test_paired_bootstrap_finds_a_real_gap_and_not_a_fake_one():
    strong = synthetic(head_edge=2.0)
    diff, lo, hi = compare.paired_bootstrap(strong, "sigmoid_mean", "softmax_prod", "auroc", iters=300)
    assert lo > 0 and lo <= diff <= hi
    same = synthetic()
    same.confidence["twin"] = same.confidence["softmax_prod"].copy()
    diff, lo, hi = compare.paired_bootstrap(same, "twin", "softmax_prod", "auroc", iters=100)
    assert diff == 0 and lo == 0 and hi == 0  # paired: identical estimators never differ
    none = synthetic(head_edge=0.3)
    _, lo, hi = compare.paired_bootstrap(none, "sigmoid_mean", "softmax_prod", "auroc", iters=300)
    assert lo < 0 < hi


def test_bootstrap_is_seeded():
    ts = synthetic()
    a = compare.paired_bootstrap(ts, "sigmoid_prod", "softmax_mean", "prr", iters=50, seed=3)
    assert a == compare.paired_bootstrap(ts, "sigmoid_prod", "softmax_mean", "prr", iters=50, seed=3)


def test_the_table_reports_every_head_row_against_every_baseline_with_a_verdict():
    task = compare.compare_task(synthetic(head_edge=2.0), iters=200)
    assert set(task["metrics"]) == {"auroc", "prr"}
    assert "length" in task["metrics"]["auroc"]  # the length-only baseline sits beside the others
    diffs = task["differences"]["auroc"]
    assert len(diffs) == 3 * 4 and "sigmoid_mean - softmax_prod" in diffs  # the baselines present
    report = {"adapter": "a", "model": "m", "split": "dev", "date": "d", "bootstrap": 200, "tasks": [task]}
    text = compare.markdown(report)
    assert "| sigmoid_mean - softmax_prod |" in text and "head better" in text
    assert "types: easy (n=60" in text and "| estimator | easy | hard | macro |" in text
    assert all(not math.isnan(v["macro"]) for v in task["metrics"]["prr"].values())


def test_summary_puts_every_recipe_beside_the_baselines():
    ts = synthetic(head_edge=2.0)
    report = {"tasks": [compare.compare_task(ts, iters=20)]}
    text = compare.summary_markdown(
        {"strong": report, "weak": {"tasks": [compare.compare_task(synthetic(), iters=20)]}}
    )
    assert text.splitlines()[0] == "| recipe | estimator | x ROC-AUC | x PRR |"
    assert "| strong | sigmoid_mean |" in text and "| weak | sigmoid_min |" in text
    assert "| baseline | softmax_prod |" in text and "| baseline | length |" in text


def test_compare_refuses_a_bad_split_before_model_work(tmp_path):
    with pytest.raises(ValueError, match="--split should be dev, test or all"):
        compare.run_compare(None, split="train", output=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--outputs"):
        compare.run_compare(None, outputs=str(tmp_path / "nope.json"), output=str(tmp_path))


def test_rescoring_saved_outputs_reproduces_the_run_and_the_split_is_kept(tiny_dir, tmp_path):
    """A real run on the dev half (tiny model), then the same outputs rescored with the same head:
    the numbers agree, and only dev samples are in either."""
    head, base = str(tiny_dir / "head"), str(tiny_dir / "base")
    run = compare.run_compare(
        head,
        model=base,
        tasks=["sighead_wiki_facts"],
        split="dev",
        output=str(tmp_path / "run"),
        bootstrap=20,
    )
    again = compare.run_compare(
        head,
        model=base,
        tasks=["sighead_wiki_facts"],
        split="dev",
        output=str(tmp_path / "again"),
        outputs=str(tmp_path / "run" / "lm_eval_results.json"),
        bootstrap=20,
    )
    a, b = run["tasks"][0], again["tasks"][0]
    assert a["n"] == b["n"] and 0 < a["n"] < 1504  # the dev half only
    for metric in ("auroc", "prr"):  # float noise from other batch shapes may swap a near-tie
        for est, per in a["metrics"][metric].items():
            assert per["macro"] == pytest.approx(b["metrics"][metric][est]["macro"], abs=1e-3), (metric, est)
    assert (tmp_path / "run" / "table.md").read_text().startswith("# Comparison")
