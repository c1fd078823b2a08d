"""The documentation: its Python examples run as written, its links resolve, and nothing in the
repository points outside it."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_blocks(path: Path, tmp_path: Path, monkeypatch) -> None:
    """Run a page's Python blocks in order, in one namespace, from a scratch directory that sees the
    repository's `adapters/` (the examples' relative paths)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapters").symlink_to(ROOT / "adapters")
    namespace = {"__name__": "docs"}
    for block in python_blocks(path):
        exec(compile(block, str(path), "exec"), namespace)


def _floats(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", line)]


# What each page's examples must print: a check that fails if the example silently does something else.
EXPECTED = {
    "python.md": lambda lines: (
        len(_floats(lines[0])) == 2
        and all(0.0 <= x <= 1.0 for x in _floats(lines[0]))
        and "' capital'" in lines[1]  # the first record's token texts
        and float(lines[3]) > 0.99  # the fresh head scores about 1.0, as the page says
    ),
    "evaluate.md": lambda lines: (
        any("'auroc': 1.0" in line for line in lines)  # Paris above Madrid
        and lines[-1] == "1.0 1.0"  # the token-level example's MCC and F1-MULT
    ),
    "lm-eval.md": lambda lines: 0.0 <= float(lines[-1]) <= 1.0,
    "selective.md": lambda lines: (
        lines[0].split()[0] in ("True", "False")
        and int(lines[0].split()[1]) >= (0 if lines[0].startswith("True") else -1)
        and all(" sigmoid 0." in line or " sigmoid 1." in line for line in lines[1:])
        and len(lines) >= 2
    ),
}


def test_every_page_with_python_examples_has_a_check():
    with_code = {p.name for p in PAGES if python_blocks(p)}
    assert with_code == set(EXPECTED), "a page's examples run untested, or a check names no page"


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_doc_examples_run(name, tmp_path, monkeypatch, capsys):
    run_blocks(DOCS / name, tmp_path, monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    assert lines and EXPECTED[name](lines), f"{name} printed {lines!r}"


def slug(heading: str) -> str:
    """Python-Markdown's `toc` anchor for a heading (what mkdocs links to)."""
    text = re.sub(r"`|\*\*", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    found = {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"></a>', text))


def test_slug_matches_python_markdown():
    import markdown

    heading = "Scale: GPUs, several GPUs, models bigger than one GPU (`--device auto`)"
    md = markdown.Markdown(extensions=["toc"])
    html = md.convert(f"# {heading}")
    assert f'id="{slug(heading)}"' in html


def test_readme_links_resolve():
    """The README is not part of the site, so mkdocs does not check it: its relative links must name
    files that exist and, where they give one, an anchor of that page."""
    readme = ROOT / "README.md"
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README should link to its docs"
    for link in local:
        target, _, anchor = link.partition("#")
        path = (ROOT / target).resolve()
        assert path.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README links to #{anchor}, which {target} does not have"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"the README has {len(lines)} lines; the reference belongs in docs/"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in out]


def test_nothing_refers_outside_the_repository():
    # the patterns are split so that this file does not match itself
    outside = re.compile(r"\.\./" + "shared|" + "/wo" + "rk/|" + r"\.\./" + r"\.library")
    offenders = []
    for path in _tracked_files():
        if path.suffix in {".safetensors", ".png", ".gz"} or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in outside.finditer(text)]
    assert not offenders, offenders
