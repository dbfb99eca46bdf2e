"""Vendi scores (Friedman & Dieng 2023): the effective number of distinct items of a set, exp of the entropy of its
similarity kernel's normalised spectrum; for texts, of the mean of the n-gram count cosine kernels (definitions and
the exact-or-estimate route: docs/metrics.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from selfimprove.metrics.diversity import Ngrams, ngram_occurrences


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
    texts: list[str] | Ngrams,
    orders=(1, 2, 3, 4),
    q: float = 1.0,
    unit: str = "char",
    max_dim: int | None = None,
    seed: int = 0,
    route: dict | None = None,
) -> float:
    """Vendi score of the mean of the n-gram count cosine kernels, n in ``orders``: Z = [X_1 ... X_m] / sqrt(m).

    Exact (a dense eigenproblem of min(N, #n-grams)^2, through the smaller of the text and the n-gram forms) or
    estimated (``spectral_vendi``, about 1% off, never forming a dense or N x N matrix), whichever
    ``exact_is_cheaper`` predicts to cost less; ``max_dim`` forces a size rule instead (exact while
    min(N, #n-grams) <= max_dim; 0 = always the estimate). Tests and scripts/bench_metrics.py check the estimate
    against the exact score. ``route`` (if given) receives which route ran and the kernel's size.
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
    exact = exact_is_cheaper(Z) if max_dim is None else min(Z.shape) <= max_dim
    if route is not None:
        route.update(route="exact" if exact else "estimate", texts=Z.shape[0], ngrams=Z.shape[1])
    return vendi_from_eigenvalues(_kernel_eigenvalues(Z), q) if exact else spectral_vendi(Z, q, seed=seed)


# LAPACK's dense eigensolver does more flops per second than the estimate's sparse products and Lanczos steps.
# Measured on this 2-core machine with the float32 torch products: the exact route stays cheaper up to min(N,
# #n-grams) ~ 3,000 digit strings (2.1 s vs 3.4 s; at 4,000: 15 s vs 8.8 s), ~2,000-3,000 word texts (0.7 vs 1.5 s at
# 2,000; 1.8 vs 1.1 s at 3,000) and beyond 2,500 reasoning-length texts (2.1 vs 2.5 s); this factor puts the model's
# switch at ~2,000-3,000 for all three (docs/metrics.md).
DENSE_SPEEDUP = 6.0


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
    such, so the products shrink by 3-5x. The products run in float32 through torch's sparse kernels, which use both
    cores: 3-4x faster than scipy's float64 ones, and 1e-7 relative error is far inside the estimate's own
    (docs/metrics.md). Vectors go in and come out as float64 numpy arrays, converted once per slice."""
    import scipy.sparse as sp
    import torch

    n, d = Z.shape
    if d <= n:  # the d x d feature form, formed (sparse): never larger than the texts' own kernel
        A = (Z.T @ Z / n).tocsr()
        T = _torch_csr(A)
        return (lambda V: _in_float32(V, lambda v: T @ v)), d, float(A.diagonal().sum())
    Zc = sp.csc_matrix(Z)
    shared = np.diff(Zc.indptr) >= 2
    Zs, hapax = Zc[:, shared].tocsr(), Zc[:, ~shared]
    h = torch.from_numpy(np.asarray(hapax.multiply(hapax).sum(axis=1), dtype=np.float32))  # a column
    left, right = _torch_csr(Zs), _torch_csr(Zs.T.tocsr())
    return (lambda V: _in_float32(V, lambda v: (left @ (right @ v) + h * v) / n)), n, float(Z.multiply(Z).sum()) / n


def _in_float32(V: np.ndarray, product, width: int = 64) -> np.ndarray:
    """product(v) over float32 torch slices of ``width`` columns of V (each product's intermediate, e.g. Zs^T v with
    a row per shared n-gram, stays small), returned as float64 numpy."""
    import torch

    out = np.empty(V.shape, dtype=np.float64)
    for i in range(0, V.shape[1], width):
        v = torch.from_numpy(np.ascontiguousarray(V[:, i : i + width], dtype=np.float32))
        out[:, i : i + width] = product(v).numpy()
    return out


def _torch_csr(M):
    """A scipy CSR matrix as a float32 torch sparse CSR tensor."""
    import torch

    with warnings.catch_warnings():  # "sparse CSR support is in beta": products are what we use, and tests check them
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype(np.int64)),
            torch.from_numpy(M.indices.astype(np.int64)),
            torch.from_numpy(M.data.astype(np.float32)),
            size=M.shape,
            check_invariants=False,  # scipy's CSR is valid by construction
        )


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
    import scipy.linalg

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
        theta, U = scipy.linalg.eigh_tridiagonal(alpha[: length[c], c], beta[: length[c] - 1, c])
        nodes.append(theta)
        weights.append(U[0] ** 2)
    return nodes, weights
