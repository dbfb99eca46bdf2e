"""The ``filter`` and ``select`` sections: which judged samples are kept, and which of those are trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from selfimprove.core.typed_yaml import option


@dataclass
class FilterConfig:
    enabled: bool = option(
        True, "false keeps every generated sample (Lee et al. report an error avalanche without filtering)."
    )
    min_scores: dict = option(
        {"format": 1.0, "majority": 0.8},
        "Keep a sample only if every named judge scores at least this (keep-correct = {verifier: 1}).",
    )
    best_of_n: int = option(
        0, "After thresholds, keep at most this many top-scoring samples per prompt (0 = off).", ge=0
    )
    min_tokens: int = option(0, "Drop completions shorter than this many generated tokens (0 = off).", ge=0)
    max_tokens: int = option(0, "Drop completions longer than this many generated tokens (0 = off).", ge=0)
    drop_unfinished: bool = option(False, "Drop completions that hit the token limit before EOS.")
    decontaminate_ngram: int = option(
        0,
        "Drop samples whose prompt or completion shares an n-gram (of this many monitor.unit tokens) with an eval or "
        "probe prompt or answer; 0 = off.",
        ge=0,
    )
    pairs: Literal["none", "best_vs_worst", "margin"] = option(
        "none",
        "Build (chosen, rejected) pairs per prompt for DPO: the best kept sample vs the worst sample, or every "
        "kept-vs-other pair whose score gap >= pair_margin.",
    )
    pair_margin: float = option(0.0, "Minimum score gap chosen - rejected (a pair always needs a gap > 0).", ge=0)
    pairs_per_prompt: int = option(
        1, "With pairs 'margin': at most this many pairs per prompt, largest gaps first (0 = all).", ge=0
    )


@dataclass
class SelectConfig:
    dedup: Literal["exact", "minhash", "embedding", "none"] = option(
        "exact",
        "Drop duplicates of samples kept this round or accepted earlier: 'exact' (same prompt + completion); 'minhash' "
        "and 'embedding' also drop near-duplicates (after exact).",
    )
    minhash_threshold: float = option(
        0.8,
        "dedup 'minhash': estimated Jaccard similarity of shingle sets at or above which a sample is a near-duplicate.",
    )
    minhash_ngram: int = option(5, "dedup 'minhash': shingle size in monitor.unit tokens.", ge=1)
    minhash_perm: int = option(128, "dedup 'minhash': permutations per signature.", ge=16)
    embedding_threshold: float = option(
        0.95, "dedup 'embedding': cosine similarity of feature vectors above which a sample is a near-duplicate."
    )
    per_prompt_cap: int = option(1, "At most this many samples per prompt, best scores first (0 = no cap).", ge=0)
    budget: int = option(0, "At most this many samples in total per round (0 = no budget).", ge=0)
    method: Literal["score", "random", "cluster", "deita", "qdit"] = option(
        "score",
        "Sampler under the budget: top scores; a uniform draw blind to the scores; cluster-and-rebalance; Deita "
        "greedy (quality x complexity, similarity <= deita_tau); QDIT facility location with diversity_weight.",
    )
    diversity_weight: float = option(
        0.5, "qdit: lambda in [0, 1]; 0 = pure quality ranking, 1 = pure coverage. 'steer' alarms can raise it."
    )
    features: Literal["ngram", "embedding"] = option(
        "ngram",
        "Vectors for embedding dedup, deita, qdit and feature clusters: TF-IDF n-grams reduced by SVD, or "
        "sentence-transformers embeddings (monitor.embedder).",
    )
    feature_text: Literal["completion", "prompt_completion"] = option("prompt_completion", "Text the vectors describe.")
    feature_dim: int = option(64, "features 'ngram': SVD dimensions.", ge=2)
    cluster_by: Literal["features", "difficulty", "attribute"] = option(
        "features", "cluster: k-means on the vectors, or the task's difficulty levels / attributes."
    )
    clusters: int = option(
        0, "cluster with cluster_by 'features': k-means clusters (0 = sqrt of the candidates).", ge=0
    )
    target_mix: dict = option(
        {},
        "cluster: share of the budget per cluster label, e.g. {3: 0.2, 4: 0.3, 5: 0.5} over difficulty levels; empty = "
        "equal shares (flatten).",
    )
    deita_tau: float = option(
        0.9, "deita: accept a candidate only if its cosine similarity to every accepted sample is <= this.", ge=-1, le=1
    )
    deita_complexity: Literal["difficulty", "length", "none"] = option(
        "difficulty", "deita: the complexity factor of quality x complexity."
    )
    knn: int = option(10, "qdit: neighbours per sample in the similarity graph.", ge=1)
    labels: Literal["self", "oracle"] = option(
        "self",
        "Training label of a selected row: 'self' = the policy's own sample; 'oracle' = the task's reference for the "
        "same prompt (a study's upper-bound arm; needs references). The sample stays in self_completion.",
    )
    oracle_label_noise: float = option(
        0.0,
        "labels 'oracle': share of selected rows whose reference is replaced by a wrong answer of the same shape (a "
        "study's corrupted-label arm).",
        ge=0,
        le=1,
    )

    def check(self) -> list[str]:
        p = []
        if self.method != "score" and not self.budget:
            p.append(f"method={self.method!r} chooses under a budget, but budget=0. Set budget > 0 or method 'score'.")
        if not 0 <= self.diversity_weight <= 1:
            p.append(f"diversity_weight={self.diversity_weight} must be in [0, 1].")
        for name in ("minhash_threshold", "embedding_threshold"):
            if not 0 < getattr(self, name) <= 1:
                p.append(f"{name}={getattr(self, name)} must be in (0, 1].")
        if self.target_mix and self.cluster_by == "features":
            p.append(
                "target_mix names cluster labels, which k-means does not have: use cluster_by 'difficulty' or "
                "'attribute'."
            )
        if self.oracle_label_noise and self.labels != "oracle":
            p.append("oracle_label_noise corrupts reference labels: set labels 'oracle' too, or oracle_label_noise 0.")
        return p
