"""The statistics that say whether a difference is real, on scipy.

- Over seeds (``selfimprove study``): t intervals, ``t(0.975, n-1)``. With 3-5 seeds a percentile bootstrap has only
  a handful of distinct resamples and is no more trustworthy than t, so the study uses t for means and the paired t
  (same seeds in both arms) for differences, beside the exact sign-flip p (no normality assumed), Holm's adjustment
  over a study's declared contrasts, and one verdict word per contrast by ``VERDICT_RULE``; the per-seed values are
  always printed beside them.
- Over shared prompts (``selfimprove compare``): metrics that are means over prompts (eval accuracies, the probe's
  per-prompt answer diversity, pass@k, judge scores) get a paired percentile bootstrap interval of B - A; corpus-level
  metrics (distinct-n, n-gram Vendi, ...) get a paired permutation p instead (swapping a prompt's samples between the
  sides), since resampling with repeats biases them; McNemar's exact test (a two-sided binomial test on the
  discordant pairs) for accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from selfimprove.core import seeding

LEVEL = 0.95


class StatsError(ValueError):
    """Inputs a statistic cannot be computed from as given (e.g. paired lists of different lengths)."""


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _constant(x: np.ndarray) -> bool:
    """Every value the same up to float rounding (0.6 - 0.5 vs 0.7 - 0.6): a t test on them would give p ~ 1e-31."""
    return bool(np.ptp(x) <= 1e-9 * max(1.0, float(np.abs(x).max())))


def _present(v) -> bool:
    return v is not None and math.isfinite(v)


def mean_ci(values: Sequence[float], level: float = LEVEL) -> dict:
    """mean, sample sd, n (missing and NaN values left out) and the t interval of the mean; NaN below two values,
    the mean itself as both bounds when every value is the same."""
    from scipy import stats

    x = _finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 and not _constant(x) else 0.0 if n > 1 else math.nan
    if n > 1 and sd > 0:
        lo, hi = stats.t.interval(level, n - 1, loc=mean, scale=sd / math.sqrt(n))
    elif n > 1:
        lo = hi = mean  # every seed gave the same value
    else:
        lo = hi = math.nan
    return {"mean": mean, "sd": sd, "n": n, "ci_low": float(lo), "ci_high": float(hi)}


def sign_flip_p(d: Sequence[float]) -> float:
    """Two-sided p of the exact sign-flip permutation test of mean(d) = 0 (scipy; every one of the 2^n sign patterns
    while 2^n <= 100,000, else a seeded sample of them). It needs no normality, and cannot go below 2 / 2^n."""
    from scipy import stats

    x = _finite(d)
    if len(x) == 0:
        return math.nan
    if len(x) == 1 or not np.any(np.abs(x) > 1e-12):
        return 1.0  # one value: both sign patterns are as extreme as it (scipy refuses a sample of one)
    res = stats.permutation_test(
        (x,), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=100_000, rng=0
    )
    return float(min(1.0, res.pvalue))


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict:
    """B - A over pairs (the same seed in both arms): the mean difference with its paired t interval, the two-sided
    paired t p-value and the exact sign-flip p. A pair with a value missing or NaN on either side is left out of
    everything; lists of different lengths are refused. When every difference is the same the t test is undefined:
    its p is then the sign-flip p (1 when they are all 0), never NaN."""
    from scipy import stats

    if len(a) != len(b):
        raise StatsError(f"paired values need one per seed on both sides: {len(a)} vs {len(b)}.")
    d = [y - x for x, y in zip(a, b) if _present(x) and _present(y)]
    out = mean_ci(d, level)
    out["sign_flip_p"] = sign_flip_p(d)
    if len(d) < 2:
        out["p_value"] = math.nan
    elif out["sd"] > 0:
        out["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    else:
        out["p_value"] = out["sign_flip_p"]
    out["per_pair"] = d
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (valid under any dependence between the tests): the i-th smallest of m p-values
    times (m - i + 1), made monotone and capped at 1. A NaN stays NaN and does not count as a test. (scipy has only
    Benjamini-Hochberg, ``false_discovery_control``.)"""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out.tolist()


ALPHA = 0.05
VERDICT_RULE = (
    f"supported: Holm-adjusted p < {ALPHA} and the 95% t interval of the paired difference excludes 0 on the side the "
    "study expects; contradicted: the same on the other side; inconclusive: anything else (including fewer than 2 "
    "pairs)."
)


def verdict(diff: dict, holm_p: float, expect: str) -> str:
    """One word per declared contrast, by VERDICT_RULE; ``expect`` is 'greater' (B > A) or 'less'."""
    lo, hi = diff.get("ci_low", math.nan), diff.get("ci_high", math.nan)
    if not (_present(holm_p) and holm_p < ALPHA and _present(lo) and _present(hi)):
        return "inconclusive"
    side = "greater" if lo > 0 else "less" if hi < 0 else None
    if side is None:
        return "inconclusive"
    return "supported" if side == expect else "contradicted"


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


def bootstrap_mean_difference(a: Sequence[float], b: Sequence[float], resamples: int, seed: int, level=LEVEL) -> dict:
    """B - A of a per-unit metric (one value per prompt on each side, NaN where a side has none): the mean paired
    difference over the units both sides have, and its percentile bootstrap interval (scipy, vectorised: the units'
    differences are computed once and only resampled). The metric is a mean over units, so a unit drawn twice in a
    resample counts twice without biasing it."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    d = y[keep] - x[keep]
    out = {
        "a": float(x[keep].mean()) if keep.any() else math.nan,
        "b": float(y[keep].mean()) if keep.any() else math.nan,
    }
    out.update(delta=float(d.mean()) if len(d) else math.nan, ci_low=math.nan, ci_high=math.nan, units=int(len(d)))
    if len(d) > 1 and resamples > 0 and np.ptp(d) > 0:
        ci = stats.bootstrap(
            (d,),
            np.mean,
            n_resamples=resamples,
            confidence_level=level,
            method="percentile",
            vectorized=True,
            rng=seeding.rng(seed, "bootstrap_ci"),
        ).confidence_interval
        out.update(ci_low=float(ci.low), ci_high=float(ci.high))
    elif len(d) > 1:
        out.update(ci_low=out["delta"], ci_high=out["delta"])  # every unit differs by the same amount
    return out


def paired_permutation(stat: Callable[[np.ndarray], tuple[dict, dict]], n_units: int, permutations: int, seed: int):
    """Two-sided paired permutation p of B - A for corpus-level metrics, which a resample with repeated texts would
    bias (a text drawn twice lowers distinct-n): ``stat(swap)`` returns the metrics of (A', B'), where unit i's
    samples change sides when ``swap[i]``. Under "A and B sample alike" every swap pattern is as likely as none;
    p = (1 + #{|delta'| >= |delta|}) / (1 + permutations), so it never reads 0. No interval: a corpus metric's value
    depends on the corpus size, so no resample of another size or with repeats estimates it."""
    a, b = stat(np.zeros(n_units, dtype=bool))
    keys = sorted(set(a) & set(b))
    observed = {k: b[k] - a[k] for k in keys}
    hits = dict.fromkeys(keys, 0)
    rng = seeding.rng(seed, "bootstrap_ci", 1)
    for _ in range(permutations):
        pa, pb = stat(rng.random(n_units) < 0.5)
        for k in keys:
            hits[k] += abs(pb[k] - pa[k]) >= abs(observed[k]) - 1e-12
    return {
        k: {
            "a": a[k],
            "b": b[k],
            "delta": observed[k],
            "ci_low": math.nan,
            "ci_high": math.nan,
            "p_value": (1 + hits[k]) / (1 + permutations) if permutations else math.nan,
        }
        for k in keys
    }


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong outcomes: only the discordant problems count; under 'no
    difference' each is equally likely to favour either side, so the p-value is a two-sided binomial test."""
    from scipy import stats

    a_only = sum(bool(x) and not bool(y) for x, y in zip(a_correct, b_correct))
    b_only = sum(bool(y) and not bool(x) for x, y in zip(a_correct, b_correct))
    n = a_only + b_only
    p = float(stats.binomtest(b_only, n, 0.5).pvalue) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p}
