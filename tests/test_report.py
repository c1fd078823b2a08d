"""Reports of a run: the estimator table, the plots and the HTML page (rendered in headless Chromium)."""

from __future__ import annotations

import html as htmlmod
import shutil
import subprocess

import numpy as np
import pytest

from sighead_eval.estimators import CONFIDENCES as ESTIMATORS
from sighead_eval.estimators import PROBABILITIES
from sighead_eval.harness.confidence import Judged
from sighead_eval.report import estimator_table, plots, table_csv, table_markdown, task_samples
from sighead_eval.report.page import colour, pick_samples, render_page
from sighead_eval.report.table import table_text


def fake_samples(n=40, seed=0, sigmoid_good=True):
    """lm-eval-like sample records: one per (document, estimator), as the harness logs them."""
    rng = np.random.default_rng(seed)
    quality = (np.arange(n) % 2 == 0).astype(float)
    records = []
    for est in ESTIMATORS:
        signal = quality if (est.startswith("sigmoid") == sigmoid_good) else 1 - quality
        conf = np.clip(0.5 + 0.3 * (signal - 0.5) + 0.2 * rng.standard_normal(n), 0.01, 0.99)
        if est not in PROBABILITIES:
            conf = np.log(conf)  # not a probability, same ranking
        for i in range(n):
            out = Judged(response=f"answer {i}", confidence=float(conf[i]), estimator=est)
            if est == "sigmoid_mean":
                out["tokens"] = {"text": ["ans", "wer", f" {i}"], "sigmoid": [0.9, 0.2, float(conf[i])],
                                 "softmax": [0.3, 0.8, 0.5]}  # fmt: skip
            records.append(
                {
                    "doc_id": i,
                    "doc": {"question": f"Question <{i}>?", "answers": ["x"]},
                    "filter": est,
                    "filtered_resps": [out],
                    "prr": (float(conf[i]), float(quality[i])),
                }  # fmt: skip
            )
    return records


def results_of(task, records):
    from sighead_eval import metrics as core
    from sighead_eval.report.samples import pairs_from_samples

    res = {}
    for est, (c, q) in pairs_from_samples(records).items():
        res[f"auroc,{est}"] = core.auroc(c, q)
        res[f"prr,{est}"] = core.prr(c, q)
        res[f"ap,{est}"] = core.ap(c, q)
        if est in PROBABILITIES:
            res[f"ece,{est}"] = core.ece(c, q)
            res[f"brier,{est}"] = core.brier(c, q)
    return {task: res}


def test_task_samples_align_estimators_by_document():
    records = fake_samples(10)
    ts = task_samples("t", list(reversed(records)))  # order in the log does not matter
    assert ts.binary and ts.estimators == list(ESTIMATORS)
    assert ts.quality.tolist() == [1.0, 0.0] * 5
    assert ts.docs[3]["question"] == "Question <3>?" and ts.tokens[3]["text"][-1] == " 3"
    assert ts.confidence["sigmoid_mean"][3] == records[3]["prr"][0]


def test_table_marks_the_best_per_column_with_lower_is_better_for_calibration():
    res = results_of("sighead_x", fake_samples(40))
    table = estimator_table(res, ["sighead_x"])
    assert table["columns"] == [("sighead_x", m) for m in ("auroc", "prr", "ap", "ece", "brier")]
    assert table["best"][("sighead_x", "auroc")].startswith("sigmoid")
    best_ece = table["best"][("sighead_x", "ece")]
    assert res["sighead_x"][f"ece,{best_ece}"] == min(
        v for k, v in res["sighead_x"].items() if k.startswith("ece,")
    )
    md = table_markdown(table)
    row = next(
        line for line in md.splitlines() if line.startswith(f"| {table['best'][('sighead_x', 'auroc')]} ")
    )
    assert "**" in row
    assert (
        "| entropy_mean |" in md and "–" in md.split("| entropy_mean |")[1].splitlines()[0]
    )  # no ECE for entropy
    csv_lines = table_csv(table).splitlines()
    assert csv_lines[0].startswith("estimator,sighead_x:auroc") and len(csv_lines) == 1 + len(ESTIMATORS)
    assert "(* best in its column)" in table_text(table)


def test_the_table_is_a_panel_per_task_that_fits_a_terminal_and_says_it_is_pooled():
    tasks = [f"sighead_task{k}" for k in range(4)]
    res = {t: results_of(t, fake_samples(40, seed=k))[t] for k, t in enumerate(tasks)}
    table = estimator_table(res, tasks)
    counts = {t: 40 + k for k, t in enumerate(tasks)}
    text = table_text(table, counts)
    assert max(map(len, text.splitlines())) < 80, "the terminal table should fit 80 columns"
    for k in range(len(tasks)):
        assert f"task{k} ({40 + k} samples)" in text
    md = table_markdown(table, counts)
    assert md.count("### task") == 4 and "pooled over every sample of a task" in md
    assert max(len(line) for line in md.splitlines() if line.startswith("|")) < 100
    page = render_page("demo", "intro", table, [], {})
    assert page.count('<div class="panel">') == 4 and "pooled over every sample" in page


def test_plots_are_png_files_with_content(tmp_path):
    from PIL import Image

    records = fake_samples(40)
    ts = task_samples("sighead_x", records)
    paths = [
        plots.rejection_plot(ts, tmp_path / "r.png"),
        plots.reliability_plot(ts, tmp_path / "c.png"),
        plots.bar_plot(results_of("sighead_x", records), ["sighead_x"], tmp_path / "b.png"),
    ]
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB")).astype(int)
        assert img.shape[0] > 200 and img.shape[1] > 300
        red = ((img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)).sum()
        assert red > 50, f"{p.name}: no Sigmoid Head (red) line or bar drawn"
    assert not list(tmp_path.glob(".*.tmp*"))


def test_plots_keep_their_legends_off_the_data_and_label_their_axes():
    records = fake_samples(40)
    ts = task_samples("sighead_x", records)
    figures = [
        plots.rejection_figure(ts),
        plots.reliability_figure(ts),
        plots.bar_figure(results_of("sighead_x", records), ["sighead_x"]),
    ]
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_visible()]
        legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend() is not None)]
        assert legends, "every plot has a legend"
        for ax in axes:
            assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes: {ax.get_title()}"
            area = ax.get_window_extent(renderer)
            for legend in legends:
                assert not legend.get_window_extent(renderer).overlaps(area), (
                    f"a legend covers {ax.get_title()}"
                )
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_page_shows_tokens_coloured_by_each_signal_and_marks_wrong_answers():
    records = fake_samples(20)
    ts = task_samples("sighead_x", records)
    table = estimator_table(results_of("sighead_x", records), ["sighead_x"])
    page = render_page("demo", "intro", table, [ts], {}, n=6)
    picked = pick_samples(ts, 6)
    assert len(picked) == 6 and sum(ts.quality[picked]) == 3  # half good, half bad
    assert page.count('class="sample wrong"') == 3 and page.count("✗ wrong") == 3
    assert (
        f"background:{colour(0.9)}" in page and f"background:{colour(0.3)}" in page
    )  # sigmoid and softmax rows
    assert htmlmod.escape("Question <") in page and "Question <" not in page  # escaped
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert colour(0) == "hsl(0, 75%, 78%)" and colour(1) == "hsl(120, 75%, 78%)"


def test_the_page_joins_a_character_split_over_byte_level_tokens():
    """`Port-Íloula`: `Í` is two UTF-8 bytes, each its own token, each decoding alone to `�`."""
    from sighead_eval.report.page import token_groups

    word = "Port-Íloula"
    ids = list(word.encode())  # one token per byte
    text = [bytes([b]).decode("utf-8", errors="replace") for b in ids]
    assert "\ufffd" in "".join(text)

    def decode(span):
        return bytes(span).decode("utf-8", errors="replace")

    groups = token_groups(text, ids, decode)
    assert "".join(g for g, _ in groups) == word
    assert ("Í", [5, 6]) in groups
    assert token_groups(text, ids, None) == [(p, [i]) for i, p in enumerate(text)]  # no tokenizer: as is

    records = fake_samples(20)
    for r in records:
        out = r["filtered_resps"][0]
        if "tokens" in out:
            n = len(ids)
            out["tokens"] = {"text": text, "id": ids, "sigmoid": [0.9] * n, "softmax": [0.5] * n}
    ts = task_samples("sighead_x", records)
    table = estimator_table(results_of("sighead_x", records), ["sighead_x"])
    page = render_page("demo", "intro", table, [ts], {}, n=4, decode=decode)
    assert ">Í</span>" in page and "\ufffd" not in page


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (CI installs Debian's `chromium`)")
def test_page_and_plots_render_in_headless_chromium(tmp_path):
    from PIL import Image

    records = fake_samples(20)
    ts = task_samples("sighead_x", records)
    res = results_of("sighead_x", records)
    figures = {"": [plots.bar_plot(res, ["sighead_x"], tmp_path / "b.png")],
               "sighead_x": [plots.rejection_plot(ts, tmp_path / "r.png")]}  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render_page("demo", "intro", estimator_table(res, ["sighead_x"]), [ts], figures, n=6))
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,4000",
        f"--screenshot={shot}", page.as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (4000, 1200)
    # the token backgrounds: light red (low confidence) and light green (high) both appear
    light_red = ((img[..., 0] > 230) & (img[..., 1] < 200) & (img[..., 1] > 150) & (img[..., 2] < 200)).sum()
    light_green = ((img[..., 1] > 220) & (img[..., 0] < 200) & (img[..., 2] < 200)).sum()
    assert light_red > 200 and light_green > 200
    # the embedded plots drew: saturated red of the Sigmoid Head's curve and bar
    assert ((img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)).sum() > 200
    # the page did not render blank or as an error page
    assert (img.std(axis=(0, 1)) > 20).all()


def test_reports_and_compare_do_not_import_lm_eval_or_the_harness():
    """The faces call inwards: reading results back needs neither lm-eval nor its integration."""
    import subprocess
    import sys

    code = (
        "import sys, sighead_eval.report, sighead_eval.compare, sighead_eval.report.plots; "
        "bad = [m for m in sys.modules if m.startswith(('lm_eval', 'sighead_eval.harness'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_word_level_rows_and_the_underlined_error_span():
    """A task whose documents label an error span gets word-level figures from the logged token
    scores, and its page underlines the labelled tokens."""
    from sighead_eval.report.words import bad_tokens, word_level_rows, word_table_text

    records = []
    for i in range(24):
        altered = i % 2 == 1
        text = ["The", " year", " was", " 1707" if altered else " 1701", "."]
        sigmoid = [0.9, 0.8, 0.9, 0.1 if altered else 0.7, 0.9]
        softmax = [0.9, 0.8, 0.9, 0.6, 0.9]
        out = Judged(response="".join(text), confidence=0.5, estimator="sigmoid_mean")
        out["tokens"] = {"text": text, "sigmoid": sigmoid, "softmax": softmax}
        doc = {"prompt": f"Q{i}", "sentence": "".join(text), "faithful": int(not altered),
               "fact_span": [12, 17],
               "fact": text[3].strip(), "split": "dev" if i < 12 else "test"}  # fmt: skip
        records.append({"doc_id": i, "doc": doc, "filter": "sigmoid_mean", "filtered_resps": [out],
                        "prr": (0.5, float(not altered))})  # fmt: skip
    ts = task_samples("sighead_wiki_facts", records)
    rows = word_level_rows(ts)
    assert set(rows) == {"sigmoid", "softmax"}  # the estimators the tokens carry
    assert rows["sigmoid"]["bad_auroc"] == pytest.approx(1.0) and rows["sigmoid"]["mcc"] == pytest.approx(1.0)
    assert rows["softmax"]["bad_auroc"] < rows["sigmoid"]["bad_auroc"]
    assert bad_tokens(ts.docs[1], ts.tokens[1]["text"], ts.responses[1]) == {3}
    assert bad_tokens(ts.docs[0], ts.tokens[0]["text"], ts.responses[0]) == set()
    panel = word_table_text("sighead_wiki_facts", rows)
    assert panel.startswith("wiki_facts, word level") and "sigmoid" in panel
    assert max(map(len, panel.splitlines())) < 80
    page = render_page("demo", "intro", {"tasks": [], "columns": [], "rows": {}, "best": {}}, [ts], {},
                       n=4, words={"sighead_wiki_facts": rows})  # fmt: skip
    assert (
        "wiki_facts, word level" in page and page.count('class="t bad"') == 2 * 2 + 1
    )  # 2 wrong shown x 2 rows, and the legend
    assert word_level_rows(task_samples("x", fake_samples(8))) == {}  # no labelled spans: no panel
