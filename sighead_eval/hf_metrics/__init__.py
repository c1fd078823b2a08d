"""Hugging Face `evaluate` modules. Load with `evaluate.load(sighead_eval.metric_path(name))`."""

from __future__ import annotations

from pathlib import Path

NAMES = ("sigmoid_confidence", "confidence_quality")
SIGMOID_HEAD_CITATION = """@article{dinh2026sigmoid,
  title={Sigmoid Head for Quality Estimation under Language Ambiguity},
  author={Dinh, Tu Anh and Niehues, Jan},
  journal={arXiv preprint arXiv:2601.00680},
  year={2026}
}
"""


def metric_path(name: str) -> str:
    """The directory of an `evaluate` module shipped with the package, for `evaluate.load`."""
    if name not in NAMES:
        import difflib

        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown metric {name!r}; known: {NAMES}.{hint}")
    return str(Path(__file__).resolve().parent / name)
