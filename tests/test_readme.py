"""The README's code example runs as written (on the embedded model)."""

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
    lines = capsys.readouterr().out.splitlines()
    first = lines[0].split()
    assert len(first) == 2 and all(0.0 <= float(x) <= 1.0 for x in first)
    assert any("'auroc': 1.0" in line for line in lines)  # the evaluate example: Paris above Madrid
    assert 0.0 <= float(lines[-1]) <= 1.0  # the lm-eval example's ROC-AUC
    assert (tmp_path / "my-head" / "adapter_model.safetensors").is_file()
