"""Diversity metrics over a set of texts (definitions and pitfalls: shared/reference/qdc_metrics.md).

Tokenisation is explicit: ``unit="char"`` for digit strings and other character-level tasks, ``"word"`` (whitespace)
for prose. Every metric returns a defined float on empty input, a single text, identical texts and empty strings.
Entropies are in nats.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter

import numpy as np


def tokens(text: str, unit: str = "char") -> list[str]:
    return list(text) if unit == "char" else text.split()


def ngram_counts(texts: list[str], n: int, unit: str = "char") -> Counter:
    """Pooled n-gram counts over the corpus; a text shorter than n contributes none."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(tuple(g) for g in _grams(t, n, unit))
    return counts


def distinct_n(texts: list[str], n: int, unit: str = "char") -> float:
    """Corpus distinct-n (Li et al. 2016): unique n-grams / all n-grams; 0 when there are none."""
    c = ngram_counts(texts, n, unit)
    total = sum(c.values())
    return len(c) / total if total else 0.0


def ead(texts: list[str], n: int, vocab_size: int, unit: str = "char") -> float:
    """Expectation-adjusted distinct (Liu et al. 2022): unique n-grams / the expected unique count of C uniform draws.

    EAD = N_u / (V * (1 - ((V - 1) / V) ** C)), V = vocabulary size of the tokenisation used.
    """
    c = ngram_counts(texts, n, unit)
    total = sum(c.values())
    if not total:
        return 0.0
    return len(c) / (vocab_size * (1 - ((vocab_size - 1) / vocab_size) ** total))


def ngram_entropy(texts: list[str], n: int, unit: str = "char") -> float:
    """Shannon entropy of the pooled n-gram distribution (nats); 0 for no n-grams."""
    c = ngram_counts(texts, n, unit)
    total = sum(c.values())
    return float(-sum(v / total * math.log(v / total) for v in c.values())) if total else 0.0


def compression_ratio(texts: list[str]) -> float:
    """bytes(text) / bytes(gzip(text)), texts joined by one space, gzip applied once (cshaib/diversity applies it
    twice). Higher means more repetitive. An empty corpus is 1.0 (nothing to compress). gzip's ~20-byte header
    dominates tiny corpora: compare only corpora of equal size."""
    data = " ".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, mtime=0)) if data else 1.0


def vendi_from_eigenvalues(lam: np.ndarray, q: float = 1.0) -> float:
    """exp of the order-q Renyi entropy of the normalised eigenvalues; 1.0 for an empty spectrum."""
    lam = np.clip(np.asarray(lam, dtype=np.float64), 0.0, None)
    if lam.sum() <= 0:
        return 1.0
    lam = lam / lam.sum()  # zero rows (empty texts) would otherwise break sum(lam) = 1
    lam = lam[lam > 1e-12]
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    if math.isinf(q):
        return float(1.0 / lam.max())
    return float(np.exp(np.log(np.sum(lam**q)) / (1 - q)))


def vendi_from_kernel(K: np.ndarray, q: float = 1.0) -> float:
    """Vendi score (Friedman & Dieng 2023) of an n x n PSD similarity matrix with unit diagonal."""
    K = np.asarray(K, dtype=np.float64)
    if K.size == 0:
        return 1.0
    return vendi_from_eigenvalues(np.linalg.eigvalsh(K / K.shape[0]), q)


def vendi_from_features(X, q: float = 1.0) -> float:
    """Vendi score of the cosine kernel of the rows of X (dense or scipy sparse), in O(n d^2) via the d x d form.

    K/n = X X^T / n and X^T X / n share their nonzero eigenvalues, so the smaller of the two is decomposed.
    """
    from sklearn.preprocessing import normalize

    if X.shape[0] == 0:
        return 1.0
    # unit rows: K_ii = 1 (zero rows stay zero and are renormalised away)
    return vendi_from_eigenvalues(_kernel_eigenvalues(normalize(X)), q)


def _kernel_eigenvalues(X) -> np.ndarray:
    """Eigenvalues of X X^T / n through whichever of X^T X / n (d x d) and X X^T / n (n x n) is smaller."""
    import scipy.sparse as sp

    n = X.shape[0]
    small = (X.T @ X) if X.shape[1] <= n else (X @ X.T)
    small = small.toarray() if sp.issparse(small) else np.asarray(small)
    return np.linalg.eigvalsh(small / n)


def ngram_vendi(texts: list[str], orders=(1, 2, 3, 4), q: float = 1.0, unit: str = "char") -> float:
    """Vendi score of the mean of the n-gram count cosine kernels, n in ``orders``: Z = [X_1 ... X_m] / sqrt(m)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    if not texts:
        return 1.0
    blocks = []
    for n in orders:
        vec = CountVectorizer(analyzer=(lambda t, n=n: ["\x1f".join(g) for g in _grams(t, n, unit)]))
        try:
            blocks.append(normalize(vec.fit_transform(texts)))
        except ValueError:  # no text has an n-gram of this order
            continue
    if not blocks:
        return 1.0
    # Not renormalised: a text with no n-gram of some order keeps K_ii < 1, as the mean of the block kernels says.
    return vendi_from_eigenvalues(_kernel_eigenvalues(sp.hstack(blocks).tocsr() / math.sqrt(len(blocks))), q)


def _grams(text: str, n: int, unit: str):
    toks = tokens(text, unit)
    return [toks[i:i + n] for i in range(len(toks) - n + 1)]


def self_bleu(texts: list[str], max_n: int = 3, unit: str = "char", sample: int = 200, seed: int = 0) -> float:
    """Self-BLEU (Zhu et al. 2018): mean BLEU of each text against all the others, uniform weights up to ``max_n``,
    NLTK smoothing method1. Higher = less diverse. O(N^2), so at most ``sample`` seeded hypotheses are scored (each
    still against every other text). Fewer than two texts: 0.0."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if len(texts) < 2:
        return 0.0
    toks = [tokens(t, unit) for t in texts]
    picks = range(len(texts)) if len(texts) <= sample else sorted(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
    smooth, weights = SmoothingFunction().method1, (1.0 / max_n,) * max_n
    scores = [sentence_bleu(toks[:i] + toks[i + 1:], toks[i], weights=weights, smoothing_function=smooth) if toks[i] else 0.0
              for i in picks]
    return float(np.mean(scores))
