"""The README's code example runs as written (on the embedded model), and its headline is the
committed report's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.integration
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should hold a python example"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapters").symlink_to(README.parent / "adapters")  # the examples' relative paths
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    first = capsys.readouterr().out.splitlines()[0].split()
    assert len(first) == 2 and all(0.0 <= float(x) <= 1.0 for x in first)
    assert float(first[0]) < 0.999, "the shipped head should not score like an untrained one"


def test_the_headline_is_the_committed_reports_own():
    """Every figure of the README's headline (and the shipped card's) is generated from the report
    of the run it quotes: the block must be exactly what `headline_block` renders from it."""
    import json

    from sighead_eval.compare import HEADLINE_END, HEADLINE_START, headline_block

    adapter = README.parent / "adapters" / "smollm2-135m-instruct-wiki"
    report = json.loads((adapter / "evaluation.json").read_text())
    pages = {
        README: headline_block(report, compact=True),
        README.parent / "docs" / "results.md": headline_block(report),
        adapter / "README.md": headline_block(report),
    }
    for doc, block in pages.items():
        text = doc.read_text()
        assert text.count(HEADLINE_START) == 1 and text.count(HEADLINE_END) == 1, doc
        assert block in text, f"{doc.name}: the headline differs from headline_block(evaluation.json)"
    assert report["split"] == "both" and {r["metric"] for r in report["preregistered"]["rows"]} == {
        "auroc",
        "prr",
    }


def test_the_second_models_reports_and_the_side_by_side_tables_are_generated():
    """Each Gemma card's headline is its report's; the README's two-model table is `models_block`
    of the committed reports, and the results page's table of the trained heads on both models is
    `levers_block` of them."""
    import json

    from sighead_eval.compare import MODELS_END, MODELS_START, headline_block, levers_block, models_block
    from sighead_eval.report.comparison import TRAINED_MODELS_END, TRAINED_MODELS_START

    adapters = README.parent / "adapters"
    smollm2 = json.loads((adapters / "smollm2-135m-instruct-wiki" / "evaluation.json").read_text())
    untrained = json.loads((adapters / "gemma-3-270m-offset-untrained" / "evaluation.json").read_text())
    trained = json.loads((adapters / "gemma-3-270m-wiki" / "evaluation.json").read_text())
    for name, report, marker in (
        ("gemma-3-270m-offset-untrained", untrained, "**not trained**"),
        ("gemma-3-270m-wiki", trained, "trained positions"),
    ):
        assert report["model"] == "gemma-3-270m" and report["split"] == "both", name
        card = (adapters / name / "README.md").read_text()
        assert headline_block(report) in card and marker in card and "Gemma Terms of Use" in card, name
    assert trained["adapter"] == "gemma-3-270m-wiki"
    text = README.read_text()
    assert text.count(MODELS_START) == 1 and text.count(MODELS_END) == 1
    models = {"SmolLM2": smollm2, "Gemma, untrained": untrained, "Gemma, trained": trained}
    assert models_block(models) in text
    page = (README.parent / "docs" / "results.md").read_text()
    assert page.count(TRAINED_MODELS_START) == 1 and page.count(TRAINED_MODELS_END) == 1
    assert levers_block(models, TRAINED_MODELS_START, TRAINED_MODELS_END) in page


def test_the_levers_table_is_the_committed_reports():
    """The results page's table of the authors' levers is `levers_block` of the reports committed
    under reports/ (each head's card there carries its own headline), in the folders' order."""
    import json

    from sighead_eval.compare import LEVERS_END, LEVERS_START, headline_block, levers_block

    folders = sorted(p for p in (README.parent / "reports").iterdir() if (p / "evaluation.json").is_file())
    assert folders, "reports/ should hold the levers' reports"
    reports = {}
    for folder in folders:
        report = json.loads((folder / "evaluation.json").read_text())
        assert report["split"] == "both" and report["model"].startswith("smollm2")
        assert headline_block(report) in (folder / "README.md").read_text(), folder.name
        reports[folder.name] = report
    text = (README.parent / "docs" / "results.md").read_text()
    assert text.count(LEVERS_START) == 1 and text.count(LEVERS_END) == 1
    assert levers_block(reports) in text
