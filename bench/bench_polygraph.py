"""The LM-Polygraph plug-in's cost: LM-Polygraph's evaluation loop with its stock greedy calculator
against the same loop with `SigmoidHeadGreedyProbsCalculator` (the Sigmoid Head's scores recorded
during LM-Polygraph's own `generate` call), on the same questions; prints the figures.

Both runs compute LM-Polygraph's MaximumSequenceProbability; the second adds the head's
estimators. Their greedy texts must be identical (checked). Attention and hidden-state outputs are
off in both, so the figure is the scoring's own cost, not that of those outputs.

Needs the polygraph environment (`tox -e polygraph`, or `pip install "sighead-eval[polygraph]"`).

Usage: python bench/bench_polygraph.py [--limit 16] [--max-pairs 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paired import describe, paired

ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-instruct-wiki"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-pairs", type=int, default=10)
    args = parser.parse_args()

    from lm_polygraph.defaults.register_default_stat_calculators import register_default_stat_calculators
    from lm_polygraph.estimators import MaximumSequenceProbability

    from sighead_eval import polygraph as P

    def manager(head: bool):
        estimators = [MaximumSequenceProbability()]
        if head:
            estimators += [P.SigmoidHeadSequence("sigmoid", "mean"), P.SigmoidHeadSequence("hybrid", "prod")]
        m = P.geo_qa_manager(args.limit, str(ADAPTER), None, args.batch_size, args.max_new_tokens, estimators)
        if not head:  # the stock calculators only, the stock greedy one built as the plug-in's is
            stock = register_default_stat_calculators(
                "Whitebox", output_attentions=False, output_hidden_states=False
            )
            m.stat_calculator_descr = stock
            m.init()
        m.verbose = False
        return m

    stock, plugged = manager(False), manager(True)
    texts = {}

    def run(m, key):
        def go():
            m.gen_metrics.clear(), m.estimations.clear(), m.metrics.clear(), m.stats.clear()
            m()
            texts[key] = list(m.stats["greedy_texts"])

        return go

    result = paired(
        run(stock, "stock"), run(plugged, "plugged"), min_pairs=args.max_pairs, max_pairs=args.max_pairs
    )
    assert texts["stock"] == texts["plugged"], "the greedy texts differ"
    print(f"LM-Polygraph loop, {args.limit} geography questions, batch {args.batch_size}, CPU")
    print(
        f"  stock greedy calculator: {result['base_s']:.2f} s; "
        f"with the Sigmoid Head: {result['other_s']:.2f} s"
    )
    print(f"  the Sigmoid Head's scores over the stock loop: {describe(result)}")
    print("  greedy texts identical: yes; model passes: one generate call per batch in both")


if __name__ == "__main__":
    main()
