"""The demo's table (`table.md`: every estimator per task, and the word-level panels) rebuilt from a
saved run, without the model: `python bench/demo_table.py RUN/lm_eval_results.json`.

It checks a refactoring against the code before it: run it with each checkout on `PYTHONPATH`
(`PYTHONPATH=OLD python bench/demo_table.py RUN.json > a.md`, then the same with the new one) and
compare the two files byte for byte.
"""

from __future__ import annotations

import argparse
import json

from sighead_eval.report import table_markdown, task_samples
from sighead_eval.report.table import estimator_table
from sighead_eval.report.words import word_table_markdown

try:
    from sighead_eval.protocol import word_level_rows
except ImportError:  # the code before the protocol package (2026-12-04)
    from sighead_eval.report.words import word_level_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="lm_eval_results.json of a demo or compare run")
    out = json.loads(open(parser.parse_args().run, encoding="utf-8").read())
    names = list(out["samples"])
    per_task = [task_samples(t, out["samples"][t]) for t in names]
    table = estimator_table(out["results"], names)
    counts = {ts.task: ts.quality.size for ts in per_task}
    words = {ts.task: word_level_rows(ts) for ts in per_task}
    panels = "".join("\n" + word_table_markdown(t, rows) for t, rows in words.items() if rows)
    print(table_markdown(table, counts) + panels)


if __name__ == "__main__":
    main()
