"""The recipe-research protocol: per-type and macro metrics, paired bootstrap intervals, the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sighead_eval import compare
from sighead_eval.models import ModelOptions
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


def test_macro_by_type_takes_plain_arrays_as_the_benches_hold_them():
    from sighead_eval.protocol import macro_by_type

    ts = synthetic()
    types = [d["type"] for d in ts.docs]
    correct = [bool(q) for q in ts.quality]  # a list of booleans, as a task's documents give it
    assert macro_by_type(ts.confidence["sigmoid_mean"], correct, types) == compare.per_type(
        ts, "sigmoid_mean", "auroc"
    )
    assert math.isnan(macro_by_type([0.2, 0.9], [1, 1], ["a", "a"])["macro"])  # no type has both classes


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
    with pytest.raises(ValueError, match="--split should be one of dev, test, all, both, got 'train'"):
        compare.run_compare(None, split="train", output=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--outputs"):
        compare.run_compare(None, outputs=str(tmp_path / "nope.json"), output=str(tmp_path))
    with pytest.raises(ValueError, match="--estimators: unknown token estimator"):
        compare.run_compare(None, estimators="sigmoid|nope", output=str(tmp_path))


def test_several_saved_runs_give_one_run_each_task_from_its_file(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"samples": {"t1": [{"doc_id": 0}], "t2": [{"doc_id": 1}]}}))
    b.write_text(json.dumps({"samples": {"t3": [{"doc_id": 2}]}}))
    merged = compare.read_outputs([str(a), str(b)])
    assert merged["samples"] == {"t1": [{"doc_id": 0}], "t2": [{"doc_id": 1}], "t3": [{"doc_id": 2}]}
    b.write_text(json.dumps({"samples": {"t2": [{"doc_id": 9}]}}))
    with pytest.raises(ValueError, match="task 't2' is in both .*a.json and .*b.json"):
        compare.read_outputs([str(a), str(b)])
    with pytest.raises(FileNotFoundError, match="nope.json' does not exist"):
        compare.run_compare(None, outputs=f"{a},{tmp_path / 'nope.json'}", output=str(tmp_path))


def test_rescoring_saved_outputs_reproduces_the_run_and_the_split_is_kept(tiny_dir, tmp_path):
    """A real run on the dev half (tiny model), then the same outputs rescored with the same head:
    the numbers agree, and only dev samples are in either."""
    head, base = str(tiny_dir / "head"), str(tiny_dir / "base")

    def dev_run(name, **kw):
        return compare.run_compare(
            ModelOptions(model=base, adapter=head),
            tasks=["sighead_wiki_facts"],
            split="dev",
            output=str(tmp_path / name),
            bootstrap=20,
            **kw,
        )

    run = dev_run("run")
    saved = str(tmp_path / "run" / "lm_eval_results.json")
    again = dev_run("again", outputs=saved)
    a, b = run["tasks"][0], again["tasks"][0]
    assert a["n"] == b["n"] and 0 < a["n"] < 1504  # the dev half only
    for metric in ("auroc", "prr"):  # float noise from other batch shapes may swap a near-tie
        for est, per in a["metrics"][metric].items():
            assert per["macro"] == pytest.approx(b["metrics"][metric][est]["macro"], abs=1e-3), (metric, est)
    assert (tmp_path / "run" / "table.md").read_text().startswith("# Comparison")
    # the opt-in `combined`, asked for, joins the rows; estimators not asked for leave
    chosen = dev_run("chosen", outputs=saved, estimators="sigmoid|softmax|combined")
    rows = chosen["tasks"][0]["metrics"]["auroc"]
    assert "combined_min" in rows and "combined_min" not in a["metrics"]["auroc"]
    assert "boostedprob_min" not in rows and "boostedprob_min" in a["metrics"]["auroc"]
    assert rows["sigmoid_min"]["macro"] == pytest.approx(
        b["metrics"]["auroc"]["sigmoid_min"]["macro"], abs=1e-9
    )


def paired(n_pairs=40, seed=0):
    """Sentences and their altered versions (one pair each), as the wiki-facts task gives them."""
    rng = np.random.default_rng(seed)
    docs, quality = [], []
    for i in range(n_pairs):
        for label in (1, 0):
            docs.append({"id": f"s{i}#{label}", "type": "year", "pair": f"s{i}"})
            quality.append(float(label))
    q = np.array(quality)
    conf = {"sigmoid_mean": q + rng.standard_normal(q.size), "softmax_prod": rng.standard_normal(q.size)}
    return TaskSamples("sighead_pairs", docs, q, conf, [""] * q.size)


def test_paired_outputs_are_resampled_together():
    ts = paired()
    strata = compare.resampling_units(ts)
    assert len(strata) == 1 and len(strata[0][0]) == 40  # 40 units of two outputs each
    rng = np.random.default_rng(0)
    for _ in range(20):
        [idx] = compare.resample(strata, rng)
        pairs = [ts.docs[i]["pair"] for i in idx]
        originals = [ts.docs[i]["pair"] for i in idx if ts.quality[i] == 1]
        altered = [ts.docs[i]["pair"] for i in idx if ts.quality[i] == 0]
        assert sorted(originals) == sorted(altered)  # each drawn sentence comes with its twin
        assert len(pairs) == 80 and len(set(pairs)) < 40  # drawn with replacement
    # without pairs: each class is resampled on its own, keeping its size
    unpaired = synthetic()
    [easy, hard] = compare.resample(compare.resampling_units(unpaired), rng)
    assert easy.size == 60 and unpaired.quality[easy].sum() == unpaired.quality[:60].sum()


def halves(n_per_type=200, seed=0):
    """Synthetic samples with dev/test halves: on dev the head's `mean` is best, on test `prod`."""
    ts = synthetic(n_per_type=n_per_type, seed=seed, head_edge=2.0)
    for i, d in enumerate(ts.docs):
        d["split"] = "dev" if i % 2 == 0 else "test"
    dev = np.array([d["split"] == "dev" for d in ts.docs])
    rng = np.random.default_rng(seed + 1)
    ts.confidence["sigmoid_prod"] = np.where(dev, rng.standard_normal(dev.size), 3 * ts.quality)
    ts.confidence["softmax_min"] = ts.quality + rng.standard_normal(dev.size)
    ts.confidence["entropy_mean"] = rng.standard_normal(dev.size)
    return ts


def test_the_preregistered_comparison_chooses_on_dev_and_reports_test():
    ts = halves()
    chosen = compare.choose_on_dev(compare.subset(ts, "dev"))
    assert chosen["head"] == "sigmoid_mean"  # although `sigmoid_prod` is far better on test
    assert chosen["baseline"] in compare.RIVALS and chosen["baseline"] != "length"
    report = compare.preregistered([ts], iters=200)
    assert report["comparisons"] == 2
    for row in report["rows"]:
        assert row["head"] == "sigmoid_mean" and row["low"] <= row["diff"] <= row["high"]
        test = compare.subset(ts, "test")
        expected = (
            compare.per_type(test, "sigmoid_mean", row["metric"])["macro"]
            - compare.per_type(test, row["baseline"], row["metric"])["macro"]
        )
        assert row["diff"] == pytest.approx(expected)
        assert row["p_holm"] >= row["p"]
    assert report["rows"][0]["verdict"] == "head better"  # an edge of 2 sigma is found


def with_ceiling(ts):
    """`halves()` plus ceiling rows: `ceiling_min` best on dev and strong on test; `ceiling_mean`
    noise on dev and perfect on test (a dev choice must not see that)."""
    rng = np.random.default_rng(7)
    dev = np.array([d["split"] == "dev" for d in ts.docs])
    ts.confidence["ceiling_min"] = 3 * ts.quality + rng.standard_normal(dev.size)
    ts.confidence["ceiling_mean"] = np.where(dev, rng.standard_normal(dev.size), 10 * ts.quality)
    ts.confidence["ceiling_prod"] = rng.standard_normal(dev.size)
    return ts


def test_the_ceilings_family_is_chosen_on_dev_and_corrected_apart_from_the_heads():
    ts = halves()
    before = compare.preregistered([ts], iters=200)
    ts = with_ceiling(ts)
    assert compare.choose_on_dev(compare.subset(ts, "dev"))["ceiling"] == "ceiling_min"
    after = compare.preregistered([ts], iters=200)
    mech = compare.family([ts], "mechanism", iters=200)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "_boot"} for r in rows]  # noqa: E731
    assert strip(after["rows"]) == strip(before["rows"])  # the ceiling leaves the head's family alone
    assert mech["comparisons"] == 2
    test = compare.subset(ts, "test")
    for row in mech["rows"]:
        assert row["head"] == "ceiling_min" and row["baseline"] == before["rows"][0]["baseline"]
        expected = (
            compare.per_type(test, "ceiling_min", row["metric"])["macro"]
            - compare.per_type(test, row["baseline"], row["metric"])["macro"]
        )
        assert row["diff"] == pytest.approx(expected)
    assert mech["rows"][0]["verdict"] == "ceiling better"
    with pytest.raises(ValueError, match="unknown comparison family 'ceiling'; known: mechanism, hybrid"):
        compare.family([ts], "ceiling")


def with_rows(ts, estimator, good, trap, other, seed):
    """`estimator`'s three aggregations: `good` best on dev and good on test, `trap` noise on dev
    and perfect on test (a dev choice must not see that), `other` noise."""
    dev = np.array([d["split"] == "dev" for d in ts.docs])
    rng = np.random.default_rng(seed)
    ts.confidence[f"{estimator}_{good}"] = 2 * ts.quality + rng.standard_normal(dev.size)
    ts.confidence[f"{estimator}_{trap}"] = np.where(dev, rng.standard_normal(dev.size), 10 * ts.quality)
    ts.confidence[f"{estimator}_{other}"] = rng.standard_normal(dev.size)
    return ts


def test_the_hybrid_family_is_chosen_on_dev_and_joins_the_gap_table():
    ts = with_rows(with_ceiling(halves()), "hybrid", "prod", "mean", "min", seed=3)
    assert "hybrid_prod" not in compare.RIVALS
    fam = compare.family([ts], "hybrid", iters=100)
    assert [r["head"] for r in fam["rows"]] == ["hybrid_prod", "hybrid_prod"]  # not the test-best mean
    test = compare.subset(ts, "test")
    report = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 50,
        "preregistered": compare.preregistered([ts], iters=50),
        "mechanism": compare.family([ts], "mechanism", iters=50), "hybrid": fam,
        "calibration": {ts.task: compare.calibration(compare.subset(ts, "dev"), test)},
        "tasks": [compare.compare_task(test, iters=20)],
    }  # fmt: skip
    lines = compare.gap_table(report)
    assert lines[0] == "| task (error type) | H | B | C | HC | H − B | C − B | HC − B | H − C |"
    vb = compare.per_type(test, fam["rows"][0]["baseline"], "auroc")["macro"]
    vhc = compare.per_type(test, "hybrid_prod", "auroc")["macro"]
    cells = lines[2].strip("| ").split(" | ")
    assert cells[4] == f"{vhc:.3f} `hybrid_prod`" and cells[7] == f"{vhc - vb:+.3f}"
    block = compare.headline_block(report)
    assert " HC |" in block and "HC: the hybrid" in block and "hybrid_prod` minus" in block


def test_the_authors_newer_estimators_are_families_of_their_own_where_computed():
    """`weighted_boostedprob` and `combined`: each chosen on dev against the same rival, Holm-corrected
    on its own, a column of the gap table and a line of the legend; a report without them reads as
    before."""
    ts = with_ceiling(halves())
    before = {name: compare.family([ts], name, iters=50) for name in ("mechanism", "hybrid")}
    ts = with_rows(ts, "weighted_boostedprob", "mean", "prod", "min", seed=5)
    assert "weighted_boostedprob_mean" not in compare.RIVALS
    fam = compare.family([ts], "weighted", iters=50)
    assert [r["head"] for r in fam["rows"]] == ["weighted_boostedprob_mean"] * 2  # not the test-best prod
    assert fam["rows"][0]["verdict"].startswith("weighted_boostedprob")
    for name, old in before.items():  # the other families are left as they were
        strip = [{k: v for k, v in r.items() if k != "_boot"} for r in old["rows"]]
        assert [
            {k: v for k, v in r.items() if k != "_boot"} for r in compare.family([ts], name, iters=50)["rows"]
        ] == strip
    test = compare.subset(ts, "test")
    report = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 50,
        "preregistered": compare.preregistered([ts], iters=50), **before, "weighted": fam,
        "calibration": {ts.task: compare.calibration(compare.subset(ts, "dev"), test)},
        "tasks": [compare.compare_task(test, iters=20)],
    }  # fmt: skip
    assert compare.gap_table(report)[0] == (
        "| task (error type) | H | B | C | WB | H − B | C − B | WB − B | H − C |"  # no hybrid rows here
    )
    block = compare.headline_block(report)
    assert "WB: the weighted BoostedProb aggregation chosen on dev" in block
    assert "CB:" not in block  # `combined` was not computed
    del report["weighted"]
    assert "WB" not in compare.headline_block(report)


def test_the_gap_table_quotes_each_dev_choice_per_task_and_error_type():
    ts = with_ceiling(halves())
    for i, d in enumerate(ts.docs):
        d["error"] = "none" if ts.quality[i] == 1 else ("plausible" if i % 4 < 2 else "implausible")
    test = compare.subset(ts, "test")
    report = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 50,
        "preregistered": compare.preregistered([ts], iters=50),
        "mechanism": compare.family([ts], "mechanism", iters=50),
        "calibration": {ts.task: compare.calibration(compare.subset(ts, "dev"), test)},
        "tasks": [compare.compare_task(test, iters=20)], "errors": {ts.task: compare.error_breakdown(test)},
    }  # fmt: skip
    lines = compare.gap_table(report)
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| x", "| x (implausible)", "| x (plausible)"]
    h, b = report["preregistered"]["rows"][0]["head"], report["preregistered"]["rows"][0]["baseline"]
    vh = compare.per_type(test, h, "auroc")["macro"]
    vb = compare.per_type(test, b, "auroc")["macro"]
    vc = compare.per_type(test, "ceiling_min", "auroc")["macro"]
    cells = lines[2].strip("| ").split(" | ")
    assert cells[1:4] == [f"{vh:.3f} `{h}`", f"{vb:.3f} `{b}`", f"{vc:.3f} `ceiling_min`"]
    assert cells[4:] == [f"{vh - vb:+.3f}", f"{vc - vb:+.3f}", f"{vh - vc:+.3f}"]
    implausible = report["errors"][ts.task]["implausible"]["auroc"]
    assert lines[3].split(" | ")[1] == f"{implausible[h]:.3f} `{h}`"
    block = compare.headline_block(report)
    assert " C |" in block and "C: the ceiling aggregation chosen on dev" in block and lines[2] in block


def test_models_side_by_side_quote_each_models_own_gaps_and_significance():
    """`models_block`: one row per task and error type, each model's H − B, C − B, HC − B from its
    own report (its own dev choices), a star only on a task whose family comparison is
    significant; a model without a family gets dashes."""
    ts = with_ceiling(halves())
    for i, d in enumerate(ts.docs):
        d["error"] = "none" if ts.quality[i] == 1 else "plausible"
    test = compare.subset(ts, "test")
    base = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 50,
        "preregistered": compare.preregistered([ts], iters=50),
        "tasks": [compare.compare_task(test, iters=20)], "errors": {ts.task: compare.error_breakdown(test)},
    }  # fmt: skip
    first = {**base, "mechanism": compare.family([ts], "mechanism", iters=50)}
    second = json.loads(json.dumps(base))
    second["preregistered"]["rows"][0]["verdict"] = "head better"  # as if significant
    for r in (*second["tasks"], *second["preregistered"]["rows"]):  # a base-model variant: the same row
        r["task"] = "sighead_x_base"
    second["errors"] = {"sighead_x_base": second["errors"]["sighead_x"]}
    block = compare.models_block({"A": first, "B2": second})
    lines = block.splitlines()
    assert lines[0] == compare.MODELS_START and lines[-1] == compare.MODELS_END
    assert (
        lines[2]
        == "| task (error type) | A: H − B | A: C − B | A: HC − B | B2: H − B | B2: C − B | B2: HC − B |"
    )
    _, rows = compare.gap_rows(first)
    (_, _, _, task_row), (_, _, _, error_row) = rows
    cells = lines[4].strip("| ").split(" | ")
    gap = task_row["H"] - task_row["B"]
    star = "*" if first["preregistered"]["rows"][0]["verdict"] != "no significant difference" else ""
    assert cells[0] == "x" and cells[1] == f"{gap:+.3f}{star}" and cells[3] == "–"
    assert cells[2].startswith(f"{task_row['C'] - task_row['B']:+.3f}")
    assert cells[4] == f"{gap:+.3f}*" and cells[5:] == ["–", "–"]
    assert len(lines) == 2 + 2 + 2 + 2  # markers and blanks, header, two rows
    error_cells = lines[5].strip("| ").split(" | ")
    assert error_cells[0] == "x (plausible)" and error_cells[4] == f"{error_row['H'] - error_row['B']:+.3f}"


def test_levers_side_by_side_quote_each_heads_gaps_to_its_rival_and_its_ceiling():
    """`levers_block`: per task and error type, each head's H − B (starred where significant) and
    H − C from its own report; then each head's significant comparisons and its word level."""
    ts = with_ceiling(halves())
    test = compare.subset(ts, "test")
    report = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 50,
        "preregistered": compare.preregistered([ts], iters=50),
        "mechanism": compare.family([ts], "mechanism", iters=50),
        "tasks": [compare.compare_task(test, iters=20)],
    }  # fmt: skip
    other = json.loads(json.dumps(report, default=lambda o: None))
    other["preregistered"]["rows"][0]["verdict"] = "head better"  # as if significant
    block = compare.levers_block({"plain": report, "lever": other})
    lines = block.splitlines()
    assert lines[0] == compare.LEVERS_START and lines[-1] == compare.LEVERS_END
    assert lines[2] == "| task (error type) | plain: H − B | plain: H − C | lever: H − B | lever: H − C |"
    _, rows = compare.gap_rows(report)
    value = rows[0][3]
    cells = lines[4].strip("| ").split(" | ")
    star = "*" if report["preregistered"]["rows"][0]["verdict"] != "no significant difference" else ""
    assert (
        cells[1] == f"{value['H'] - value['B']:+.3f}{star}" and cells[2] == f"{value['H'] - value['C']:+.3f}"
    )
    assert cells[3] == f"{value['H'] - value['B']:+.3f}*" and cells[4] == cells[2]
    hits = sum(r["verdict"] != "no significant difference" for r in other["preregistered"]["rows"])
    assert "- lever:" in lines and f"  - H against B: {compare.significant_summary(other)}" in lines
    assert compare.significant_summary(other).startswith(f"{hits} of 2")
    assert any(line.startswith("  - C against B:") for line in lines)


def test_holm_and_the_bootstrap_p_value_by_hand():
    from sighead_eval import metrics as core

    assert core.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert core.bootstrap_p_value(np.array([0.1, 0.2, -0.1, 0.3])) == pytest.approx(0.5)
    assert core.bootstrap_p_value(np.ones(100)) == pytest.approx(0.01)  # never 0: one resample's worth


def test_calibration_is_fitted_on_dev_and_measured_on_test():
    ts = halves()
    ts.confidence["softmax_mean"] = np.where(ts.quality == 1, 0.02, 0.01)  # ranks well, calibrates badly
    cal = compare.calibration(compare.subset(ts, "dev"), compare.subset(ts, "test"))
    row = cal["softmax_mean"]
    assert row["ece"] < row["raw_ece"] and row["brier"] < row["raw_brier"]
    assert "raw_ece" not in cal["entropy_mean"] and "ece" in cal["entropy_mean"]  # not a probability


def test_the_report_labels_exploration_and_quotes_its_own_numbers():
    ts = halves()
    pre = compare.preregistered([ts], iters=100)
    report = {
        "adapter": "h", "model": "m", "split": "both", "date": "d", "bootstrap": 100, "preregistered": pre,
        "calibration": {ts.task: compare.calibration(compare.subset(ts, "dev"), compare.subset(ts, "test"))},
        "tasks": [compare.compare_task(compare.subset(ts, "test"), iters=20)],
    }  # fmt: skip
    text = compare.markdown(report)
    assert "## Pre-registered comparison (test half)" in text and "## Exploration (test half" in text
    assert "| sigmoid_mean |" in text and " H |" in text and " B |" in text
    for row in pre["rows"]:
        assert f"{row['diff']:+.3f}" in text and f"{row['p_holm']:.3f}" in text


def test_error_types_are_reported_each_against_the_true_outputs():
    ts = synthetic(n_per_type=90)
    for i, d in enumerate(ts.docs):
        d["error"] = "none" if ts.quality[i] == 1 else ("plausible" if i % 2 else "implausible")
    # the head tells true from implausible perfectly, and plausible not at all
    implausible = np.array([d["error"] == "implausible" for d in ts.docs])
    ts.confidence["sigmoid_mean"] = np.where(
        implausible, -5.0, np.random.default_rng(42).random(ts.quality.size)
    )
    table = compare.error_breakdown(ts)
    assert set(table) == {"implausible", "plausible"}
    assert table["implausible"]["auroc"]["sigmoid_mean"] == pytest.approx(1.0)
    assert 0.3 < table["plausible"]["auroc"]["sigmoid_mean"] < 0.7
    report = {"errors": {"sighead_x": table}}
    lines = compare.error_table(report)
    assert lines[0].startswith("## x by error type") and any("| sigmoid_mean | " in line for line in lines)
    assert compare.error_breakdown(synthetic()) == {}  # no error types: no table


def test_each_error_type_meets_its_own_true_twins():
    """A contradiction is set against the true answers naming it as their twin, a wrong entity
    against the true answers naming no twin: a score that only tells long from short answers
    (contradictions and their twins are long) separates contradictions from every true answer but
    not from their twins."""
    rng = np.random.default_rng(3)
    docs, quality, length = [], [], []
    for i in range(240):
        kind = ("bare", "contrast", "contradiction", "plausible")[i % 4]
        error = kind if kind in ("contradiction", "plausible") else "none"
        doc = {"id": str(i), "type": "capital", "split": "test", "error": error}
        if kind == "contrast":
            doc["twin"] = "contradiction"
        docs.append(doc)
        quality.append(int(error == "none"))
        length.append(-(30 if kind in ("contrast", "contradiction") else 5) + rng.normal(0, 0.1))
    ts = TaskSamples("sighead_x", docs, np.array(quality), {"length": np.array(length)}, [])
    assert compare.twins(ts, "contradiction").sum() == 60
    assert compare.twins(ts, "plausible").sum() == 60
    assert not (compare.twins(ts, "contradiction") & compare.twins(ts, "plausible")).any()
    table = compare.error_breakdown(ts)
    assert 0.35 < table["contradiction"]["auroc"]["length"] < 0.65  # twins: no length signal
    assert 0.35 < table["plausible"]["auroc"]["length"] < 0.65
    everyone = np.array([d["error"] in ("none", "contradiction") for d in docs])
    assert roc_auc_score(ts.quality[everyone], ts.confidence["length"][everyone]) > 0.7  # the old rule's
    no_twins = TaskSamples("sighead_x", [{k: v for k, v in d.items() if k != "twin"} for d in docs],
                           ts.quality, ts.confidence, [])  # fmt: skip
    assert compare.twins(no_twins, "plausible").sum() == 120  # no twins named: every true answer


def test_curves_score_heads_as_the_engine_does_and_read_snapshots(tiny_dir, tmp_path):
    """One frozen pass, then each head by dot products: the head rows equal a full rescoring by
    `compare` of the same outputs; a run's snapshots come out ordered by tokens."""
    import shutil

    from sighead_eval.curves import find_heads, run_curves

    head, base = tiny_dir / "head", str(tiny_dir / "base")
    run = compare.run_compare(
        ModelOptions(model=base, adapter=str(head)),
        tasks=["sighead_wiki_facts"],
        split="dev",
        output=str(tmp_path / "run"),
        bootstrap=20,
    )
    snaps = tmp_path / "train" / "snapshots"
    for tokens in (200, 30):
        shutil.copytree(head, snaps / f"tokens-{tokens:010d}")
    heads = find_heads([str(tmp_path / "train"), str(head)])
    assert [(h.run, h.tokens) for h in heads] == [("train", 30), ("train", 200), ("head", None)]
    report = run_curves(
        str(tmp_path / "run" / "lm_eval_results.json"),
        [str(tmp_path / "train"), str(head)],
        split="dev",
        model=base,
        output=str(tmp_path / "curves"),
    )
    [task] = run["tasks"]
    rows = report["tasks"]["sighead_wiki_facts"]["rows"]
    assert report["tasks"]["sighead_wiki_facts"]["n"] == task["n"]
    for row in rows[1:]:
        for metric in ("auroc", "prr"):
            for est, value in row[metric].items():
                assert value == pytest.approx(task["metrics"][metric][est]["macro"], abs=1e-3), (metric, est)
    assert {"sigmoid_min", "hybrid_min"} <= set(rows[1]["auroc"])  # each compared with compare's above
    assert "| best hybrid |" in (tmp_path / "curves" / "curves.md").read_text()
    assert rows[0]["auroc"]["softmax_prod"] == pytest.approx(
        task["metrics"]["auroc"]["softmax_prod"]["macro"]
    )
    assert (tmp_path / "curves" / "curves.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="neither"):
        find_heads([str(tmp_path)])


def test_compare_both_reports_coverage_at_the_quoted_risks():
    ts = halves(n_per_type=800)  # enough dev outputs for a non-vacuous guarantee
    rng = np.random.default_rng(5)
    p = rng.beta(5, 1, ts.quality.size)
    ts.quality = (rng.random(p.size) < p).astype(float)  # a calibrated head: correct with probability p
    ts.confidence["sigmoid_mean"] = p
    section = compare.selective_section([ts])
    row = section["tasks"][ts.task]["rows"]["sigmoid_mean"]
    assert "softmax_min" not in section["tasks"][ts.task]["rows"]  # not a probability in this stand-in
    assert 0 < row["test_coverage"] < 1 and row["test_risk"] <= 0.1 + 0.05
    lines = compare.selective_table({"selective": section})
    assert "coverage at risk 0.05 | coverage at risk 0.1 | coverage at risk 0.2" in "\n".join(lines)
    import json

    json.dumps(section, allow_nan=False)  # plain JSON: no inf or NaN


def word_samples(n_pairs=60, seed=0):
    """Sentences and their altered copies with token scores: the head low on the swapped token,
    the softmax and the rest noise."""
    from sighead_eval.harness.data import split_of

    rng = np.random.default_rng(seed)
    docs, quality, tokens, responses = [], [], [], []
    for i in range(n_pairs):
        for faithful in (1, 0):
            text = ["The", " year", " was", " 1707", "."]
            bad = 3
            sig = list(0.6 + 0.3 * rng.random(5))
            if not faithful:
                sig[bad] = 0.2 * rng.random()
            tok = {"text": text, "sigmoid": sig, "entropy": list(rng.random(5))}
            for e in ("softmax", "boostedprob", "ceiling"):
                tok[e] = list(rng.random(5))
            tok["hybrid"] = [a * b for a, b in zip(sig, tok["ceiling"])]
            split = split_of(f"words/{i}")
            docs.append({"id": f"s{i}#{faithful}", "type": "year", "pair": f"s{i}", "split": split,
                         "faithful": faithful, "fact_span": [12, 17]})  # fmt: skip
            quality.append(float(faithful))
            tokens.append(tok)
            responses.append("".join(text))
    q = np.array(quality)
    return TaskSamples("sighead_wiki_facts", docs, q, {"sigmoid_mean": q}, responses, tokens)


def test_the_word_level_comparison_chooses_its_rival_on_dev_and_corrects_each_family():
    from sighead_eval.report.words import (
        WORD_RIVALS,
        word_comparison,
        word_comparison_lines,
        word_headline_lines,
    )

    section = word_comparison([word_samples(), halves()], iters=200)  # the second labels no spans
    (task,) = section["tasks"]
    assert task["task"] == "sighead_wiki_facts" and task["baseline"] in WORD_RIVALS
    assert task["table"]["sigmoid"]["bad_auroc"] > 0.95 and task["table"]["softmax"]["bad_auroc"] < 0.8
    (head,) = section["families"]["head"]
    assert head["verdict"] == "head better" and head["p_holm"] < 0.05 and head["low"] > 0
    (ceiling,) = section["families"]["ceiling"]
    assert ceiling["verdict"] == "no significant difference"  # noise against noise
    text = "\n".join(word_comparison_lines(section))
    assert "## Word level" in text and "`sigmoid` minus" in text and " B |" in text
    json.dumps(section, allow_nan=False)
    headline = "\n".join(word_headline_lines(section))
    assert "| token estimator | wiki_facts: BAD ROC-AUC | wiki_facts: MCC |" in headline
    assert f"- `sigmoid`: wiki_facts {head['diff']:+.3f} (head better" in headline
    assert word_headline_lines({}) == []
    roles = {"head": [], "ceiling": [], "hybrid": [], "weighted_boostedprob": [], "combined": []}
    assert word_comparison([halves()]) == {
        "alpha": 0.05,
        "metric": "bad_auroc",
        "tasks": [],
        "families": roles,
    }
