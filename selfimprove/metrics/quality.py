"""Answer-level quality and diversity for verifiable tasks: pass@k, maj@k, answer entropy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) for one prompt with n samples, c correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}. Lower k or sample more.")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(groups: list[list[int]], k_max: int) -> dict[int, float]:
    """{k: mean pass@k} over prompts (each a list of 1/0 correctness of its samples, all >= k_max long), for k = 1, 2,
    4, ... up to k_max and k_max itself: the curve on which RL's narrowing shows (Yue et al. 2025, arXiv 2504.13837)."""
    ks = sorted({*(2**i for i in range(k_max.bit_length()) if 2**i <= k_max), k_max})
    return {k: float(np.mean([pass_at_k(len(g), sum(g), k) for g in groups])) for k in ks} if groups else {}


def answer_entropy(answers: list) -> float:
    """Plug-in entropy (nats) of one prompt's canonical answers; None answers share one '<invalid>' bucket."""
    if not answers:
        return 0.0
    counts = Counter("<invalid>" if a is None else a for a in answers)
    k = len(answers)
    return float(-sum(v / k * math.log(v / k) for v in counts.values()))


def maj_at_k(answers: list, reference, k: int, rng: np.random.Generator, trials: int = 32) -> float:
    """Share of random k-subsets whose most common valid answer equals the reference (ties broken by rng)."""
    if k > len(answers):
        raise ValueError(f"maj@{k} needs at least {k} samples per prompt, got {len(answers)}.")
    if k == 0:
        return 0.0
    subsets = (
        [list(range(len(answers)))]
        if k == len(answers)
        else [rng.choice(len(answers), k, replace=False) for _ in range(trials)]
    )
    hits = []
    for idx in subsets:
        counts = Counter(answers[i] for i in idx if answers[i] is not None)
        if not counts:
            hits.append(0.0)
            continue
        top = max(counts.values())
        winners = sorted(a for a, v in counts.items() if v == top)
        hits.append(float(winners[int(rng.integers(len(winners)))] == reference))
    return float(np.mean(hits))


def score_stats(scores: list[float], threshold: float) -> dict:
    """One judge's score distribution: mean, 10/50/90th percentiles, share at or above ``threshold``. Empty: zeros."""
    if not len(scores):
        return {"mean": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0, "share_above": 0.0}
    s = np.asarray(scores, dtype=np.float64)
    p10, p50, p90 = np.percentile(s, [10, 50, 90])
    return {
        "mean": float(s.mean()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "share_above": float((s >= threshold).mean()),
    }


def judge_agreement(a: list[float], b: list[float], threshold_a: float = 0.5, threshold_b: float = 0.5) -> dict:
    """Agreement of two judges' accept decisions (score >= threshold) on the same samples: the raw share of equal
    decisions and Cohen's kappa (chance-corrected; scikit-learn). When both judges make one constant decision kappa
    is undefined: then it is 1 if they agree and 0 if not. Empty: agreement 1, kappa 1."""
    from sklearn.metrics import cohen_kappa_score

    x = np.asarray(a, dtype=np.float64) >= threshold_a
    y = np.asarray(b, dtype=np.float64) >= threshold_b
    if not len(x):
        return {"agreement": 1.0, "kappa": 1.0}
    agree = float((x == y).mean())
    if x.min() == x.max() and y.min() == y.max():  # chance agreement is 1 or 0: kappa's formula breaks down
        return {"agreement": agree, "kappa": float(agree == 1.0)}
    return {"agreement": agree, "kappa": float(cohen_kappa_score(x, y))}


def judge_vs_truth(
    scores: list[float],
    truth: list[int],
    threshold: float,
    selected_scores: list[float] = (),
    selected_truth: list[int] = (),
) -> dict:
    """A judge's accept decision (score >= threshold) against ground truth (1 correct, 0 wrong) on the same samples:
    agreement and kappa (judge_agreement), precision (of what it accepts, the share that is correct) and recall (of
    what is correct, the share it accepts), ``gap``: its mean score on the selected samples minus their true
    accuracy (a judge being gamed scores the data it chose ever higher while the truth stays flat), and
    ``accept_gap``: the share of the selected samples it accepts minus their true accuracy. ``gap`` is in the judge's
    units (a reward model's raw score is not a probability, so its level means nothing); ``accept_gap`` is a
    difference of two shares, comparable across judges and runs."""
    from sklearn.metrics import precision_score, recall_score

    accept = [float(s >= threshold) for s in scores]
    out = judge_agreement(accept, [float(t) for t in truth], 0.5, 0.5)
    if scores:
        out["precision"] = float(precision_score(truth, accept, zero_division=0.0))
        out["recall"] = float(recall_score(truth, accept, zero_division=0.0))
    if selected_scores:
        out["gap"] = float(np.mean(selected_scores) - np.mean(selected_truth))
        out["accept_gap"] = float(np.mean(np.asarray(selected_scores) >= threshold) - np.mean(selected_truth))
    return out
