"""Paired timings: two commands timed alternately, reported as the median of the per-pair ratios
with a distribution-free 95 % interval for that median (order statistics of the binomial).

One pair's two timings share the machine's state at that moment, so their ratio cancels most of
the drift that makes independent medians of whole runs disagree by several percent.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the interval between the order statistics that cover the median with
    at least `level` probability, whatever the distribution (needs 6 values or more at 95 %)."""
    xs = sorted(values)
    n = len(xs)
    if n < 6:
        return statistics.median(xs), xs[0], xs[-1]
    # the largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2; interval [x_(k), x_(n-k+1)]
    tail, k, cumulative = (1 - level) / 2, 0, 0.0
    while True:
        p = math.comb(n, k) / 2**n
        if cumulative + p > tail:
            break
        cumulative += p
        k += 1
    k = max(k, 1)
    return statistics.median(xs), xs[k - 1], xs[n - k]


def paired(
    base: Callable[[], object],
    other: Callable[[], object],
    min_pairs: int = 10,
    max_pairs: int = 60,
    width: float | None = None,
) -> dict:
    """Times `base` and `other` alternately (which goes first alternates too) and returns the
    per-pair ratios `other / base`: their median and 95 % interval, the pairs run, and both
    medians in seconds. With `width`, stops once the interval is narrower than `width` (as a
    ratio, e.g. 0.01 for one percent) after `min_pairs`, else at `max_pairs`."""
    base(), other()  # warm-up
    a, b, ratios = [], [], []
    for i in range(max_pairs):
        if i % 2:
            tb, ta = timed(other), timed(base)
        else:
            ta, tb = timed(base), timed(other)
        a.append(ta)
        b.append(tb)
        ratios.append(tb / ta)
        if width is not None and i + 1 >= min_pairs:
            _, low, high = median_interval(ratios)
            if high - low < width:
                break
        elif width is None and i + 1 >= min_pairs:
            break
    med, low, high = median_interval(ratios)
    return {
        "ratio": med,
        "low": low,
        "high": high,
        "pairs": len(ratios),
        "base_s": statistics.median(a),
        "other_s": statistics.median(b),
    }


def describe(result: dict, target: float | None = None) -> str:
    """`+1.23 % [+0.50, +1.90] (median of 20 paired ratios)`, with the target if given."""
    text = (
        f"{100 * (result['ratio'] - 1):+6.2f} % [{100 * (result['low'] - 1):+.2f}, "
        f"{100 * (result['high'] - 1):+.2f}] (median of {result['pairs']} paired ratios, 95 % interval)"
    )
    if target is not None:
        text += f"   target <= {100 * target:+.0f} %"
    return text
