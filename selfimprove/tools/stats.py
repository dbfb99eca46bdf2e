"""The statistics that say whether a difference is real, on scipy.

- Over seeds (``selfimprove study``): t intervals, ``t(0.975, n-1)``. With 3-5 seeds a percentile bootstrap has only
  a handful of distinct resamples and is no more trustworthy than t, so the study uses t for means and the paired t
  (same seeds in both arms) for differences, and always prints the per-seed values beside them.
- Over shared prompts (``selfimprove compare``): a paired percentile bootstrap, resampling the prompts both
  checkpoints answered, with the metric recomputed on each resample for both sides (so corpus-level diversity
  metrics get an interval too); McNemar's exact test (a two-sided binomial test on the discordant pairs) for
  accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

LEVEL = 0.95


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values: Sequence[float], level: float = LEVEL) -> dict:
    """mean, sample sd, n and the t interval of the mean (NaN bounds below two values)."""
    from scipy import stats

    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and sd > 0:
        lo, hi = stats.t.interval(level, n - 1, loc=mean, scale=sd / math.sqrt(n))
    elif n > 1:
        lo = hi = mean  # every seed gave the same value
    else:
        lo = hi = math.nan
    return {"mean": mean, "sd": sd, "n": n, "ci_low": float(lo), "ci_high": float(hi)}


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict:
    """B - A over pairs (the same seed in both arms): the mean difference with its paired t interval, and the
    two-sided paired t p-value."""
    from scipy import stats

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    d = [y - x for x, y in pairs]
    out = mean_ci(d, level)
    out["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue) if len(d) > 1 and out["sd"] > 0 else math.nan
    out["per_pair"] = d
    return out


def paired_bootstrap(
    stat_a: Callable[[np.ndarray], dict],
    stat_b: Callable[[np.ndarray], dict],
    n_units: int,
    resamples: int,
    seed: int,
    level: float = LEVEL,
) -> dict[str, dict]:
    """Per metric, A, B, B - A and the percentile interval of B - A with both sides computed on the same resample of the
    ``n_units`` shared units (prompts). Each stat maps an index array (with repeats) into the units to a dict of
    metrics; the metrics both sides report on the full set are the ones compared."""
    from scipy import stats

    from selfimprove.core import seeding

    idx = np.arange(n_units)
    full_a, full_b = stat_a(idx), stat_b(idx)
    keys = sorted(set(full_a) & set(full_b))
    out = {
        k: {"a": full_a[k], "b": full_b[k], "delta": full_b[k] - full_a[k], "ci_low": math.nan, "ci_high": math.nan}
        for k in keys
    }
    if n_units < 2 or resamples < 1 or not keys:
        return out

    def delta(i):
        a, b = stat_a(i.astype(int)), stat_b(i.astype(int))
        return np.array([b.get(k, math.nan) - a.get(k, math.nan) for k in keys], dtype=float)

    ci = stats.bootstrap(
        (idx,),
        delta,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        rng=seeding.rng(seed, "bootstrap_ci"),
    ).confidence_interval
    for k, lo, hi in zip(keys, np.atleast_1d(ci.low), np.atleast_1d(ci.high)):
        out[k].update(ci_low=float(lo), ci_high=float(hi))
    return out


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong outcomes: only the discordant problems count; under 'no
    difference' each is equally likely to favour either side, so the p-value is a two-sided binomial test."""
    from scipy import stats

    a_only = sum(bool(x) and not bool(y) for x, y in zip(a_correct, b_correct))
    b_only = sum(bool(y) and not bool(x) for x, y in zip(a_correct, b_correct))
    n = a_only + b_only
    p = float(stats.binomtest(b_only, n, 0.5).pvalue) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p}
