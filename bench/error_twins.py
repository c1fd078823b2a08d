"""Each error type of `sighead_geo_paraphrase` against its own length-matched true twins (the
subtasks' definition: the `contrast` answers for contradictions, the fact's own phrasings for
wrong entities), from a saved run: macro ROC-AUC over question kinds, test half, per estimator.

For runs of task versions 2.0 and 2.1, whose logged documents lack the `twin` field, `compare`'s
error breakdown sets each error type against every true answer, short bare ones included, so
answer length separates contradictions there; against the twins it cannot (the `length` row is
printed as the check). From version 2.2 on, `compare` uses the twins itself; this script fills
the field in and runs the protocol's own breakdown (`protocol.error_breakdown`, what `compare` runs).

Usage: python bench/error_twins.py RUN/lm_eval_results.json [--estimators a,b,...]
"""

from __future__ import annotations

import argparse
import json

DEFAULT = "sigmoid_min,sigmoid_prod,boostedprob_prod,ceiling_prod,hybrid_min,softmax_min,length"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="lm_eval_results.json of a run with sighead_geo_paraphrase samples")
    parser.add_argument("--estimators", default=DEFAULT)
    args = parser.parse_args()

    from sighead_eval.protocol import error_breakdown, subset
    from sighead_eval.report.samples import task_samples

    saved = json.loads(open(args.run, encoding="utf-8").read())
    ts = task_samples("sighead_geo_paraphrase", saved["samples"]["sighead_geo_paraphrase"])
    for d in ts.docs:  # what version 2.2 logs: a contradiction's twin is its `contrast` answer
        d.setdefault("twin", "contradiction" if d["phrasing"] == "contrast" else "")
    table = error_breakdown(subset(ts, "test"))
    names = [e for e in args.estimators.split(",") if e in ts.confidence]
    print(f"sighead_geo_paraphrase, test half, each error type against its twins: {', '.join(names)}")
    for err in ("contradiction", "implausible", "plausible"):
        print(f"{err:<14} " + "  ".join(f"{name} {table[err]['auroc'][name]:.3f}" for name in names))


if __name__ == "__main__":
    main()
