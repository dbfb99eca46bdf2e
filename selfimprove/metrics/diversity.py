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


def _token_ids(texts: list[str], unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Every token of the corpus as an integer (a code point, or a word's index in first-seen order), and the index
    of the text it belongs to."""
    if unit == "char":
        data = "".join(texts).encode("utf-32-le", errors="surrogatepass")
        ids, lengths = np.frombuffer(data, dtype=np.uint32).astype(np.int64), [len(t) for t in texts]
    else:
        split = [t.split() for t in texts]
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for s in split for w in s), dtype=np.int64)
        lengths = [len(s) for s in split]
    return ids, np.repeat(np.arange(len(texts)), lengths)


def ngram_occurrences(texts: list[str], orders, unit: str = "char"):
    """For each order n: (n, text index, n-gram id) of every n-gram occurrence, ids dense in 0..G-1, one id per
    distinct n-gram (the same n-grams as ``grams``).

    The n-gram ids are built on integer arrays, one (n-1)-gram id + next token -> n-gram id join per order, instead
    of hashing Python strings: sklearn's CountVectorizer with a Python analyzer took 16 of a 30 s budget on 10^5
    texts (docs/metrics.md)."""
    ids, doc = _token_ids(texts, unit)
    base, code = int(ids.max(initial=0)) + 1, ids
    for n in range(1, max(orders, default=0) + 1):
        if n > 1:  # code[i] identifies tokens i..i+n-2 (across text ends too; those are dropped below)
            code = np.unique(code[:-1] * base + ids[n - 1 :], return_inverse=True)[1].reshape(-1)
        if n in orders:
            inside = doc[: len(code)] == doc[n - 1 :]
            gram = np.unique(code[inside], return_inverse=True)[1].reshape(-1)
            yield n, doc[: len(code)][inside], gram


def _distinct(counts: np.ndarray) -> float:
    total = counts.sum()
    return len(counts) / total if total else 0.0


def _ead(counts: np.ndarray, vocab_size: int, n: int) -> float:
    # The space of n-grams has V**n members; -expm1(C * log1p(-1/S)) is 1 - (1 - 1/S)**C without underflow at large S.
    total, space = int(counts.sum()), float(vocab_size) ** n
    return len(counts) / (space * -math.expm1(total * math.log1p(-1 / space))) if total and space > 1 else 0.0


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if not total:
        return 0.0
    p = counts / total
    return float(-(p * np.log(p)).sum())


def _counts(texts: list[str], n: int, unit: str) -> np.ndarray:
    """Pooled count of every distinct n-gram of the corpus."""
    ((_, _, gram),) = ngram_occurrences(texts, (n,), unit)
    return np.bincount(gram).astype(np.float64)


def distinct_n(texts: list[str], n: int, unit: str = "char") -> float:
    """Corpus distinct-n (Li et al. 2016): unique n-grams / all n-grams; 0 when there are none."""
    return _distinct(_counts(texts, n, unit))


def ead(texts: list[str], n: int, vocab_size: int, unit: str = "char") -> float:
    """Expectation-adjusted distinct (Liu et al. 2022): unique n-grams / the expected unique count of C uniform draws.

    EAD = N_u / (S * (1 - ((S - 1) / S) ** C)) with S = V**n possible n-grams, V = vocabulary size of the tokenisation
    used (the expected distinct count of C uniform draws from S). Values near 1 mean as diverse as uniform text.
    """
    return _ead(_counts(texts, n, unit), vocab_size, n)


def ngram_entropy(texts: list[str], n: int, unit: str = "char") -> float:
    """Shannon entropy of the pooled n-gram distribution (nats); 0 for no n-grams."""
    return _entropy(_counts(texts, n, unit))


def lexical_suite(texts: list[str], orders=(1, 2, 3, 4), unit: str = "char", vocab_size: int = 0) -> dict:
    """distinct_n, ngram_entropy_n (and ead_n when vocab_size > 0) for every order, from one tokenisation."""
    out = {}
    for n, _, gram in ngram_occurrences(texts, tuple(orders), unit):
        c = np.bincount(gram).astype(np.float64)
        out[f"distinct_{n}"], out[f"ngram_entropy_{n}"] = _distinct(c), _entropy(c)
        if vocab_size:
            out[f"ead_{n}"] = _ead(c, vocab_size, n)
    return {k: out[k] for n in orders for k in (f"distinct_{n}", f"ngram_entropy_{n}", f"ead_{n}") if k in out}


def self_repetition(texts: list[str], n: int = 4, unit: str = "char") -> float:
    """Self-repetition (Salkar et al. 2022, as reported by Shaib et al. 2024): mean over texts of
    log(1 + sum over the text's distinct n-grams of the number of *other* texts containing it). 0 = nothing shared;
    higher = more templated. Empty corpus: 0."""
    if not texts:
        return 0.0
    ((_, doc, gram),) = ngram_occurrences(texts, (n,), unit)
    width = int(gram.max(initial=0)) + 1
    doc, gram = np.divmod(np.unique(doc * width + gram), width)  # each (text, n-gram) pair once
    in_texts = np.bincount(gram)  # how many texts hold each n-gram
    shared = np.bincount(doc, weights=in_texts[gram] - 1, minlength=len(texts))
    return float(np.mean(np.log1p(shared)))


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
    ent = (
        _entropy(np.fromiter(counts.values(), dtype=np.float64)) / math.log(len(space))
        if len(space) > 1 and total
        else float(bool(total))
    )
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
    estimated (``spectral_vendi``, about 1% off, never forming a dense or N x N matrix), whichever
    ``exact_is_cheaper`` predicts to cost less; ``max_dim`` forces a size rule instead (exact while
    min(N, #n-grams) <= max_dim; 0 = always the estimate). Tests and scripts/bench_metrics.py check the estimate
    against the exact score.
    """
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    if not texts:
        return 1.0
    blocks = [
        normalize(sp.csr_matrix((np.ones(len(doc)), (doc, gram)), shape=(len(texts), int(gram.max()) + 1)))
        for _, doc, gram in ngram_occurrences(texts, tuple(orders), unit)
        if len(gram)  # no text has an n-gram of this order
    ]
    if not blocks:
        return 1.0
    # Not renormalised: a text with no n-gram of some order keeps K_ii < 1, as the mean of the block kernels says.
    Z = sp.hstack(blocks).tocsr() / math.sqrt(len(blocks))
    if exact_is_cheaper(Z) if max_dim is None else min(Z.shape) <= max_dim:
        return vendi_from_eigenvalues(_kernel_eigenvalues(Z), q)
    return spectral_vendi(Z, q, seed=seed)


# LAPACK's dense eigensolver does more flops per second than the estimate's sparse products. Measured on a 2-core
# machine, the two routes cost the same at min(N, #n-grams) ~ 1,000 (word texts) to ~ 1,200 (digit strings), and
# this factor puts the model's switch there (docs/metrics.md).
DENSE_SPEEDUP = 2.0


def exact_is_cheaper(
    Z, deflate: int = 100, oversample: int = 100, power: int = 3, probes: int = 16, steps: int = 32
) -> bool:
    """Predicted flops of the exact route (forming the m x m Gram, its eigendecomposition, m = min(N, #n-grams))
    against the estimate's (forming the n-gram Gram when it is the smaller side, power + 2 products and power + 1
    QRs of a block of deflate + oversample vectors, probes x steps quadrature products with reorthogonalisation and
    deflation), with ``spectral_vendi``'s defaults."""
    m, nnz = min(Z.shape), Z.nnz
    row = nnz / max(Z.shape[0], 1)
    gram = 2 * nnz * row
    exact = 4 / 3 * m**3 + gram
    block = min(deflate + oversample, m)
    product = min(m * m, nnz * row) if Z.shape[1] <= Z.shape[0] else 2 * nnz  # one A v
    spectral = (gram if Z.shape[1] <= Z.shape[0] else 0) + 2 * product * ((power + 2) * block + probes * steps)
    spectral += 4 * (power + 1) * m * block**2 + probes * steps * (2 * steps * m + 4 * deflate * m)
    return exact / DENSE_SPEEDUP <= spectral


def _kernel_operator(Z):
    """(apply, dim, trace) of A = Z^T Z / N or Z Z^T / N, whichever is smaller; ``apply`` takes a block of vectors.

    The N x N text kernel is only ever applied, never formed, and n-grams that occur in one text only are split off
    first: they add only to its diagonal (K = Zs Zs^T + diag(h)), and on word-level text most 3- and 4-grams are
    such, so the products shrink by 3-5x (docs/metrics.md)."""
    import scipy.sparse as sp

    n, d = Z.shape
    if d <= n:  # the d x d feature form, formed (sparse): never larger than the texts' own kernel
        A = (Z.T @ Z / n).tocsr()
        return (lambda V: np.asarray(A @ V)), d, float(A.diagonal().sum())
    Zc = sp.csc_matrix(Z)
    shared = np.diff(Zc.indptr) >= 2
    Zs, hapax = Zc[:, shared].tocsr(), Zc[:, ~shared]
    Zst = Zs.T.tocsr()
    h = np.asarray(hapax.multiply(hapax).sum(axis=1)).ravel()

    def apply(V):
        out = np.empty_like(V)
        for i in range(0, V.shape[1], 32):  # in slices: Zs^T V has a row per shared n-gram
            v = np.ascontiguousarray(V[:, i : i + 32])
            out[:, i : i + 32] = (Zs @ (Zst @ v) + h[:, None] * v) / n
        return out

    return apply, n, float(Z.multiply(Z).sum()) / n


def spectral_vendi(
    Z,
    q: float = 1.0,
    deflate: int = 100,
    oversample: int = 100,
    power: int = 3,
    probes: int = 16,
    steps: int = 32,
    seed: int = 0,
    rel_tol: float = 0.01,
    max_probes: int = 128,
) -> float:
    """Vendi score of the kernel Z Z^T (rows of Z unit or zero) without a dense eigendecomposition.

    A (``_kernel_operator``) shares the kernel's nonzero spectrum; tr A is exact. The top ``deflate`` eigenpairs,
    which carry most of the mass, come from randomized subspace iteration (Halko, Martinsson & Tropp 2011: a seeded
    block of deflate + oversample vectors, ``power`` iterations, Rayleigh-Ritz); the rest of sum_i f(lambda_i),
    f(x) = x log x (q = 1) or x^q, is estimated by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) on A with
    those Ritz vectors projected out, from batches of ``probes`` seeded Rademacher vectors of ``steps`` Lanczos
    steps, run side by side so that every product is a block product, until the probes' standard error puts the
    score within ``rel_tol`` (relative, one standard error) or ``max_probes`` are spent. Deflating first is what makes
    the estimate tight; seeded, so the same texts always get the same number. q = inf needs only the top
    eigenvalue."""
    import scipy.linalg

    apply, dim, trace = _kernel_operator(Z)
    if trace <= 0:
        return 1.0
    rng = np.random.default_rng(seed)
    block = min(deflate + oversample, dim)
    Y = apply(rng.standard_normal((dim, block)))
    for _ in range(power):  # LU-normalised between products, as sklearn's randomized_range_finder: half a QR's cost
        Y = apply(scipy.linalg.lu(Y, permute_l=True, check_finite=False)[0])
    Q = scipy.linalg.qr(Y, mode="economic", check_finite=False)[0]
    theta, U = np.linalg.eigh(_symmetric(Q.T @ apply(Q)))
    if block == dim:  # the block spans the whole space: the Ritz values are the spectrum
        return vendi_from_eigenvalues(theta, q)
    top = np.argsort(theta)[::-1][:deflate]
    theta, Q = np.clip(theta[top], 0, None) / trace, Q @ U[:, top]
    if math.isinf(q):
        return float(1.0 / theta.max())
    f = (lambda x: x * np.log(np.where(x > 0, x, 1.0))) if q == 1 else (lambda x: np.power(x, q))

    def rest(V):  # A with the top eigenvectors projected out
        V = V - Q @ (Q.T @ V)
        V = apply(V)
        return V - Q @ (Q.T @ V)

    head, tail = float(np.sum(f(theta))), []
    while True:  # batches of probes until the standard error of the Vendi score is within rel_tol
        V = rng.choice([-1.0, 1.0], (dim, probes))
        V -= Q @ (Q.T @ V)
        nodes, weights = _lanczos_quadrature(rest, V, min(steps, dim))
        tail += [(v @ v) * np.sum(w * f(np.clip(x, 0, None) / trace)) for v, x, w in zip(V.T, nodes, weights)]
        total = head + float(np.mean(tail))  # sum_i f(lambda_i / tr A)
        # d log(Vendi) = -d total (q = 1) or d total / ((1 - q) total)
        error = np.std(tail, ddof=1) / math.sqrt(len(tail)) / (1.0 if q == 1 else abs(1 - q) * max(total, 1e-300))
        if error <= rel_tol or len(tail) >= max_probes:
            break
    return float(np.exp(-total)) if q == 1 else float(np.exp(np.log(max(total, 1e-300)) / (1 - q)))


def _symmetric(B: np.ndarray) -> np.ndarray:
    return (B + B.T) / 2


def _lanczos_quadrature(apply, V: np.ndarray, steps: int) -> tuple[list, list]:
    """Gauss quadrature nodes (Ritz values) and weights of each column's spectral measure under the operator, by
    Lanczos with full reorthogonalisation, one independent recurrence per column run in lock step so that each step
    is one block product (steps is small, so the O(steps^2 dim) reorthogonalisation is nothing next to them)."""
    from scipy.linalg import eigh_tridiagonal

    dim, k = V.shape
    basis = np.zeros((k, steps, dim))  # basis[c, j]: column c's j-th Lanczos vector
    alpha, beta = np.zeros((steps, k)), np.zeros((steps, k))
    length = np.full(k, steps)  # a column whose recurrence breaks down stops there: its quadrature is then exact
    norms = np.linalg.norm(V, axis=0)
    basis[:, 0] = (V / np.where(norms > 0, norms, 1.0)).T
    for j in range(steps):
        W = apply(np.ascontiguousarray(basis[:, j].T)).T.copy()
        alpha[j] = np.einsum("ci,ci->c", basis[:, j], W)
        done = basis[:, : j + 1]
        W -= (np.swapaxes(done, 1, 2) @ (done @ W[:, :, None]))[:, :, 0]
        if j + 1 == steps:
            break
        beta[j] = np.linalg.norm(W, axis=1)
        length[(beta[j] < 1e-12) & (length == steps)] = j + 1
        live = length == steps
        basis[:, j + 1] = np.where(live[:, None], W / np.where(live, beta[j], 1.0)[:, None], 0.0)
    nodes, weights = [], []
    for c in range(k):
        theta, U = eigh_tridiagonal(alpha[: length[c], c], beta[: length[c] - 1, c])
        nodes.append(theta)
        weights.append(U[0] ** 2)
    return nodes, weights


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
