"""The study's statistics against hand computations and scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from selfimprove.tools.stats import StatsError, holm, mean_ci, paired_difference, sign_flip_p, verdict

pytestmark = pytest.mark.unit


def test_paired_difference_by_hand_and_against_scipy():
    a, b = [0.50, 0.60, 0.55, 0.40, 0.70], [0.60, 0.65, 0.70, 0.45, 0.72]
    d = paired_difference(a, b)
    diffs = [0.10, 0.05, 0.15, 0.05, 0.02]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((x - 0.074) ** 2 for x in diffs) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4)
    assert d["per_pair"] == pytest.approx(diffs) and d["n"] == 5
    assert (d["mean"], d["sd"]) == (pytest.approx(mean), pytest.approx(sd))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert d["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert d["sign_flip_p"] == pytest.approx(2 / 32)  # all five positive: 2 of the 32 sign patterns are as extreme


def test_sign_flip_p_enumerates_every_pattern():
    # d = (3, -1, 2): |mean| >= 4/3 for patterns with sums in {4, 6, -4, -6}: (+,+,+)=4... by hand: sums of +-3 +-1 +-2
    sums = [s1 * 3 + s2 * 1 + s3 * 2 for s1 in (1, -1) for s2 in (1, -1) for s3 in (1, -1)]
    assert sign_flip_p([3, -1, 2]) == pytest.approx(sum(abs(s) >= 4 for s in sums) / 8)
    assert sign_flip_p([1, 1, 1]) == pytest.approx(0.25)  # the floor at three seeds
    assert sign_flip_p([0, 0, 0]) == 1.0 and math.isnan(sign_flip_p([]))
    assert sign_flip_p([2.5]) == 1.0  # one seed: +2.5 and -2.5 are equally extreme


def test_missing_and_nan_pairs_are_dropped_the_same_way_everywhere():
    d = paired_difference([0.1, None, 0.3, 0.2, 0.4], [0.2, 0.9, math.nan, 0.4, 0.5])
    assert d["per_pair"] == pytest.approx([0.1, 0.2, 0.1]) and d["n"] == 3
    assert d["p_value"] == pytest.approx(stats.ttest_1samp([0.1, 0.2, 0.1], 0).pvalue)
    assert not math.isnan(d["ci_low"]) and not math.isnan(d["p_value"])


def test_unequal_lengths_are_refused():
    with pytest.raises(StatsError, match="3 vs 2"):
        paired_difference([1, 2, 3], [1, 2])


def test_zero_variance_gives_no_nan_and_no_tiny_p():
    same = paired_difference([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])  # +0.1 every seed
    assert same["sd"] == pytest.approx(0, abs=1e-12) or same["sd"] == 0
    assert same["p_value"] == pytest.approx(0.25) and same["sign_flip_p"] == pytest.approx(0.25)
    none = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert none["p_value"] == 1.0 and (none["ci_low"], none["ci_high"]) == (0.0, 0.0)
    assert mean_ci([2.0, 2.0, 2.0])["ci_low"] == 2.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 over m = 3: 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06; NaN is not a test
    assert holm([0.04, 0.01, math.nan, 0.03]) == pytest.approx([0.06, 0.03, math.nan, 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


@pytest.mark.parametrize(
    "diff, p, expect, word",
    [
        ({"ci_low": 0.1, "ci_high": 0.3}, 0.01, "greater", "supported"),
        ({"ci_low": 0.1, "ci_high": 0.3}, 0.01, "less", "contradicted"),
        ({"ci_low": -0.3, "ci_high": -0.1}, 0.01, "less", "supported"),
        ({"ci_low": -0.1, "ci_high": 0.3}, 0.01, "greater", "inconclusive"),  # the interval holds 0
        ({"ci_low": 0.1, "ci_high": 0.3}, 0.06, "greater", "inconclusive"),  # Holm p not below 0.05
        ({"ci_low": math.nan, "ci_high": math.nan}, math.nan, "greater", "inconclusive"),
    ],
)
def test_verdict_rule(diff, p, expect, word):
    assert verdict(diff, p, expect) == word


def test_t_interval_covers_at_its_level():
    """On normal data with a known mean, the 95% paired t interval holds the truth in about 95% of studies."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        a = rng.normal(0, 1, 5)
        d = paired_difference(a, a + rng.normal(0.3, 0.5, 5))
        hits += d["ci_low"] <= 0.3 <= d["ci_high"]
    assert 0.93 <= hits / 2000 <= 0.97


def test_bootstrap_of_a_per_prompt_mean_covers_the_truth():
    """Per-prompt differences with a known mean: the 95% percentile interval holds it in about 95% of draws."""
    from selfimprove.tools.stats import bootstrap_mean_difference

    rng = np.random.default_rng(1)
    hits = 0
    for i in range(400):
        a = rng.normal(0, 1, 100)
        got = bootstrap_mean_difference(a, a + rng.normal(0.2, 1, 100), 2000, i)
        hits += got["ci_low"] <= 0.2 <= got["ci_high"]
        assert got["ci_low"] <= got["delta"] <= got["ci_high"]
    assert 0.92 <= hits / 400 <= 0.98
    nan = bootstrap_mean_difference([1.0, np.nan, 2.0], [2.0, 5.0, np.nan], 100, 0)
    assert nan["units"] == 1 and nan["delta"] == 1.0


def test_paired_permutation_is_calibrated_for_a_corpus_metric():
    """Distinct-2 of two corpora sampled alike: p < 0.05 in about 5% of studies (no more); a real difference (one
    side draws from fewer letters) is found. A bootstrap with repeated texts would have biased distinct-2 down."""
    from selfimprove.metrics.diversity import distinct_n
    from selfimprove.tools.stats import paired_permutation

    def texts(rng, letters):
        return ["".join(rng.choice(list(letters), 6)) for _ in range(3)]  # one prompt's three samples

    def study(rng, letters_b):
        a = [texts(rng, "abcdef") for _ in range(30)]
        b = [texts(rng, letters_b) for _ in range(30)]

        def stat(swap):
            side_a = [t for x, y, s in zip(a, b, swap) for t in (y if s else x)]
            side_b = [t for x, y, s in zip(a, b, swap) for t in (x if s else y)]
            return {"d2": distinct_n(side_a, 2)}, {"d2": distinct_n(side_b, 2)}

        return paired_permutation(stat, 30, 199, int(rng.integers(1 << 30)))["d2"]

    rng = np.random.default_rng(0)
    null = [study(rng, "abcdef")["p_value"] for _ in range(200)]
    assert np.mean(np.asarray(null) < 0.05) <= 0.09
    shifted = study(rng, "abc")
    assert shifted["p_value"] <= 0.01 and shifted["delta"] < 0 and math.isnan(shifted["ci_low"])
