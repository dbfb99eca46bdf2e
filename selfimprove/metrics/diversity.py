"""Diversity metrics over a set of texts (definitions and pitfalls: docs/metrics.md).

Tokenisation is explicit: ``unit="char"`` for digit strings and other character-level tasks, ``"word"`` (whitespace)
for prose. Every metric returns a defined float on empty input, a single text, identical texts and empty strings.
Entropies are in nats.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter

import numpy as np

from selfimprove.core import seeding


def subsample(items: list, m: int) -> list:
    """A fixed-size, seeded subsample, in the items' order: diversity numbers grow with N, so every round is measured
    on the same N. The positions do not depend on the run's seed, so a metric is a function of the texts alone."""
    if len(items) <= m:
        return items
    return [items[i] for i in sorted(seeding.rng(0, "measure").choice(len(items), m, replace=False))]


def tokens(text: str, unit: str = "char") -> list[str]:
    return list(text) if unit == "char" else text.split()


def grams(text: str, n: int, unit: str = "char") -> list[str]:
    """The text's n-grams as hashable strings (word n-grams joined by U+001F); none when it is shorter than n."""
    if unit == "char":
        return [text[i : i + n] for i in range(len(text) - n + 1)]
    toks = text.split()
    return ["\x1f".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def ngram_counts(texts: list[str], n: int, unit: str = "char") -> Counter:
    """Pooled n-gram counts over the corpus."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(grams(t, n, unit))
    return counts


def _distinct(c: Counter) -> float:
    total = sum(c.values())
    return len(c) / total if total else 0.0


def _ead(c: Counter, vocab_size: int, n: int) -> float:
    # The space of n-grams has V**n members; -expm1(C * log1p(-1/S)) is 1 - (1 - 1/S)**C without underflow at large S.
    total, space = sum(c.values()), float(vocab_size) ** n
    return len(c) / (space * -math.expm1(total * math.log1p(-1 / space))) if total and space > 1 else 0.0


def _entropy(c: Counter) -> float:
    total = sum(c.values())
    if not total:
        return 0.0
    p = np.fromiter(c.values(), dtype=np.float64) / total
    return float(-(p * np.log(p)).sum())


def distinct_n(texts: list[str], n: int, unit: str = "char") -> float:
    """Corpus distinct-n (Li et al. 2016): unique n-grams / all n-grams; 0 when there are none."""
    return _distinct(ngram_counts(texts, n, unit))


def ead(texts: list[str], n: int, vocab_size: int, unit: str = "char") -> float:
    """Expectation-adjusted distinct (Liu et al. 2022): unique n-grams / the expected unique count of C uniform draws.

    EAD = N_u / (S * (1 - ((S - 1) / S) ** C)) with S = V**n possible n-grams, V = vocabulary size of the tokenisation
    used (the expected distinct count of C uniform draws from S). Values near 1 mean as diverse as uniform text.
    """
    return _ead(ngram_counts(texts, n, unit), vocab_size, n)


def ngram_entropy(texts: list[str], n: int, unit: str = "char") -> float:
    """Shannon entropy of the pooled n-gram distribution (nats); 0 for no n-grams."""
    return _entropy(ngram_counts(texts, n, unit))


def lexical_suite(texts: list[str], orders=(1, 2, 3, 4), unit: str = "char", vocab_size: int = 0) -> dict:
    """distinct_n, ngram_entropy_n (and ead_n when vocab_size > 0) for every order, one counting pass per order."""
    out = {}
    for n in orders:
        c = ngram_counts(texts, n, unit)
        out[f"distinct_{n}"], out[f"ngram_entropy_{n}"] = _distinct(c), _entropy(c)
        if vocab_size:
            out[f"ead_{n}"] = _ead(c, vocab_size, n)
    return out


def self_repetition(texts: list[str], n: int = 4, unit: str = "char") -> float:
    """Self-repetition (Salkar et al. 2022, as reported by Shaib et al. 2024): mean over texts of
    log(1 + sum over the text's distinct n-grams of the number of *other* texts containing it). 0 = nothing shared;
    higher = more templated. Empty corpus: 0."""
    if not texts:
        return 0.0
    per_text = [set(grams(t, n, unit)) for t in texts]
    df: Counter = Counter()
    for g in per_text:
        df.update(g)
    return float(np.mean([math.log1p(sum(df[x] - 1 for x in g)) for g in per_text]))


def homogenisation(texts: list[str], unit: str = "char", sample: int = 100, seed: int = 0) -> float:
    """Homogenisation (Padmakumar & He 2023): mean over texts of the mean ROUGE-L F1 to every other text, via
    rouge-score with our tokenisation (its default tokenizer drops non-alphanumerics, i.e. every operator). In [0, 1],
    higher = more alike. O(N^2): at most ``sample`` seeded texts. Fewer than two texts: 0."""
    from rouge_score import rouge_scorer

    if len(texts) < 2:
        return 0.0
    if len(texts) > sample:
        texts = [texts[i] for i in sorted(np.random.default_rng(seed).choice(len(texts), sample, replace=False))]
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer(unit))
    n = len(texts)
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):  # ROUGE-L F1 is symmetric
            sim[i, j] = sim[j, i] = scorer.score(texts[i], texts[j])["rougeL"].fmeasure
    return float(sim.sum() / (n * (n - 1)))


class _Tokenizer:
    """rouge-score's tokenizer interface over our char/word units."""

    def __init__(self, unit: str):
        self.unit = unit

    def tokenize(self, text: str) -> list[str]:
        return tokens(text, self.unit)


def coverage(values: list, universe: list) -> dict:
    """How much of a categorical space (difficulty levels, task attributes) a sample set covers: the share of the
    universe's distinct values present, and the entropy of the values' distribution normalised by log |universe|
    (1 = spread evenly over all of it). An empty universe covers itself: both 1."""
    space = set(universe)
    if not space:
        return {"coverage": 1.0, "balance": 1.0}
    counts = Counter(v for v in values if v in space)
    total = sum(counts.values())
    ent = _entropy(counts) / math.log(len(space)) if len(space) > 1 and total else float(bool(total))
    return {"coverage": len(counts) / len(space), "balance": ent}


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


def ngram_vendi(
    texts: list[str],
    orders=(1, 2, 3, 4),
    q: float = 1.0,
    unit: str = "char",
    max_dim: int | None = None,
    seed: int = 0,
) -> float:
    """Vendi score of the mean of the n-gram count cosine kernels, n in ``orders``: Z = [X_1 ... X_m] / sqrt(m).

    Exact (a dense eigenproblem of min(N, #n-grams)^2, through the smaller of the text and the n-gram forms) or
    estimated by stochastic Lanczos quadrature on the sparse Z (``spectral_vendi``, 1-4% off, never forming a dense
    or N x N matrix), whichever ``exact_is_cheaper`` predicts to cost less; ``max_dim`` forces the old size rule
    instead (exact while min(N, #n-grams) <= max_dim; 0 = always the estimate). Tests and scripts/bench_metrics.py
    check the estimate against the exact score.
    """
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    if not texts:
        return 1.0
    blocks = []
    for n in orders:
        try:
            blocks.append(normalize(CountVectorizer(analyzer=(lambda t, n=n: grams(t, n, unit))).fit_transform(texts)))
        except ValueError:  # no text has an n-gram of this order
            continue
    if not blocks:
        return 1.0
    # Not renormalised: a text with no n-gram of some order keeps K_ii < 1, as the mean of the block kernels says.
    Z = sp.hstack(blocks).tocsr() / math.sqrt(len(blocks))
    if exact_is_cheaper(Z) if max_dim is None else min(Z.shape) <= max_dim:
        return vendi_from_eigenvalues(_kernel_eigenvalues(Z), q)
    return spectral_vendi(Z, q, seed=seed)


# LAPACK's dense eigensolver does ~5x more flops per second than the estimate's sparse products and Python-driven
# Lanczos loops (measured on a 2-core machine: the two cost the same at min(N, #n-grams) ~ 2,500; docs/metrics.md)
DENSE_SPEEDUP = 5.0


def exact_is_cheaper(Z, deflate: int = 200, probes: int = 16, steps: int = 32) -> bool:
    """Predicted flops of the exact route (forming the m x m Gram, its eigendecomposition, m = min(N, #n-grams))
    against the estimate's (ARPACK's ~3 restarts of 2k+1 Lanczos vectors and their orthogonalisation, then
    ``probes`` x ``steps`` quadrature steps with reorthogonalisation and deflation), with ``spectral_vendi``'s
    defaults."""
    m, nnz = min(Z.shape), Z.nnz
    row = nnz / max(Z.shape[0], 1)
    exact = 4 / 3 * m**3 + 2 * nnz * row
    ncv = min(2 * deflate + 1, m)
    spectral = 3 * ncv * (2 * nnz + 2 * ncv * m) + probes * steps * (2 * nnz + 2 * steps * m + 4 * deflate * m)
    return exact / DENSE_SPEEDUP <= spectral


def spectral_vendi(Z, q: float = 1.0, deflate: int = 200, probes: int = 16, steps: int = 32, seed: int = 0) -> float:
    """Vendi score of the kernel Z Z^T (rows of Z unit or zero) without a dense eigendecomposition.

    A = Z^T Z / N (or Z Z^T / N, whichever is smaller, applied as a product and never formed when it is the N x N
    one) shares the kernel's nonzero spectrum; tr A is exact. The top
    ``deflate`` eigenvalues, which carry most of the mass, come exactly from ARPACK (scipy eigsh); the rest of
    sum_i f(lambda_i), f(x) = x log x (q = 1) or x^q, is estimated by stochastic Lanczos quadrature (Ubaru, Chen &
    Saad 2017) on A with the top eigenvectors projected out, from ``probes`` seeded Rademacher vectors of ``steps``
    Lanczos steps. Deflating first is what makes the estimate tight (1-4% off in tests and scripts/bench_metrics.py,
    seeded, so the same texts always get the same number); q = inf needs only the top eigenvalue."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, eigsh

    n, d = Z.shape
    if d <= n:  # the d x d feature form, formed (sparse): never larger than the texts' own kernel
        A = Z.T @ Z / n
        A = A.tocsr() if sp.issparse(A) else np.asarray(A)
        trace = float(A.diagonal().sum())
    else:  # more n-grams than texts: the N x N text kernel is only ever applied, as Z (Z^T v) / N, never formed
        Zt = Z.T.tocsr() if sp.issparse(Z) else np.asarray(Z).T
        A = LinearOperator((n, n), dtype=np.float64, matvec=lambda v: Z @ (Zt @ v) / n)
        trace = float(Z.multiply(Z).sum() if sp.issparse(Z) else np.sum(np.square(Z))) / n
    dim = A.shape[0]
    if trace <= 0:
        return 1.0
    k = min(deflate, dim - 2)
    rng = np.random.default_rng(seed)
    top, Q = eigsh(A, k=max(k, 1), which="LA", v0=rng.standard_normal(dim))  # seeded start: repeatable
    top = np.clip(top, 0, None) / trace
    if math.isinf(q):
        return float(1.0 / top.max())
    f = (lambda x: x * np.log(np.where(x > 0, x, 1.0))) if q == 1 else (lambda x: np.power(x, q))

    def project(v):
        return v - Q @ (Q.T @ v)

    rest = LinearOperator((dim, dim), dtype=np.float64, matvec=lambda v: project(A @ project(v)))
    estimates = []
    for _ in range(probes):
        v = project(rng.choice([-1.0, 1.0], dim))
        theta, weights = _lanczos_quadrature(rest, v, min(steps, dim))
        estimates.append(float(v @ v) * float(np.sum(weights * f(np.clip(theta, 0, None) / trace))))
    total = float(np.sum(f(top))) + float(np.mean(estimates))  # sum_i f(lambda_i / tr A)
    return float(np.exp(-total)) if q == 1 else float(np.exp(np.log(max(total, 1e-300)) / (1 - q)))


def _lanczos_quadrature(A, v: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature nodes (Ritz values) and weights of v's spectral measure under A, by Lanczos with full
    reorthogonalisation (steps is small, so its O(steps^2 dim) cost is nothing next to the matvecs)."""
    from scipy.linalg import eigh_tridiagonal

    V = np.zeros((steps, len(v)))
    alpha, beta = np.zeros(steps), np.zeros(max(steps - 1, 0))
    V[0] = v / np.linalg.norm(v)
    for j in range(steps):
        w = A.matvec(V[j])
        alpha[j] = V[j] @ w
        w -= V[: j + 1].T @ (V[: j + 1] @ w)
        if j + 1 == steps:
            break
        b = np.linalg.norm(w)
        if b < 1e-12:  # invariant subspace found: the quadrature is exact with j + 1 nodes
            alpha, beta = alpha[: j + 1], beta[:j]
            break
        beta[j], V[j + 1] = b, w / b
    theta, U = eigh_tridiagonal(alpha, beta)
    return theta, U[0] ** 2


def self_bleu(texts: list[str], max_n: int = 3, unit: str = "char", sample: int = 200, seed: int = 0) -> float:
    """Self-BLEU (Zhu et al. 2018): mean BLEU of each text against all the others, uniform weights up to ``max_n``,
    NLTK smoothing method1. Higher = less diverse. O(N^2), so at most ``sample`` seeded hypotheses are scored (each
    still against every other text). Fewer than two texts: 0.0."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if len(texts) < 2:
        return 0.0
    toks = [tokens(t, unit) for t in texts]
    picks = (
        range(len(texts))
        if len(texts) <= sample
        else sorted(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
    )
    smooth, weights = SmoothingFunction().method1, (1.0 / max_n,) * max_n
    scores = [
        sentence_bleu(toks[:i] + toks[i + 1 :], toks[i], weights=weights, smoothing_function=smooth) if toks[i] else 0.0
        for i in picks
    ]
    return float(np.mean(scores))
