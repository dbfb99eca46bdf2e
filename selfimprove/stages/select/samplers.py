"""Budgeted selection: which of the round's candidates become training data.

Every sampler takes the candidates' scores (quality) and returns the chosen indices, at most ``budget`` of them.
- score: the top scores (ties by candidate order).
- random: a uniform draw, blind to the scores (the control that says whether ranking or balancing does anything).
- cluster: cluster-and-rebalance. Clusters are k-means on feature vectors, or the candidates' difficulty levels or
  task attributes; each cluster gets a quota (its share of ``target_mix``, or an equal share: flattening), filled by
  score; quota a cluster cannot fill passes to the others.
- deita: Deita-style greedy (Liu et al. 2312.15685): candidates in order of quality x complexity, each accepted only
  if its cosine similarity to everything accepted (earlier rounds included) is <= tau.
- qdit: facility location + quality (Bukharin et al. 2311.14736), greedily maximising
  lam * F(S) / |V| + (1 - lam) * sum_{j in S} q_j / budget, F(S) = sum_{i in V} max_{j in S} sim(i, j),
  sim = (1 + cos) / 2 on a k-nearest-neighbour graph, q = scores min-max scaled to [0, 1]. lam = 0 is pure quality
  ranking; lam = 1 pure coverage. Earlier rounds' data count as already covering the pool. F is submodular, so lazy
  greedy is exact greedy.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from selfimprove.metrics.dedup import greedy_max_similarity


def by_score(scores: np.ndarray, budget: int) -> list[int]:
    order = np.lexsort((np.arange(len(scores)), -scores))
    return sorted(order[:budget].tolist()) if budget else list(range(len(scores)))


def at_random(n: int, budget: int, seed: int) -> list[int]:
    if not budget or budget >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, budget, replace=False).tolist())


def quotas(sizes: dict, budget: int, mix: dict | None = None) -> dict:
    """Per-cluster quotas summing to min(budget, total size): shares from ``mix`` (equal when empty), each capped at
    its cluster's size, what a cluster cannot use handed on to the rest in proportion (water-filling)."""
    want = {c: float(mix.get(c, 0.0)) if mix else 1.0 for c in sizes}
    left, open_ = min(budget, sum(sizes.values())), {c for c in sizes if want[c] > 0 and sizes[c] > 0}
    quota = {c: 0 for c in sizes}
    while left > 0 and open_:
        total = sum(want[c] for c in open_)
        share = {c: left * want[c] / total for c in open_}
        give = {c: min(sizes[c] - quota[c], int(np.floor(share[c]))) for c in open_}
        if not any(give.values()):  # fractions only: one each, in order of largest remaining share
            for c in sorted(open_, key=lambda c: (-share[c], str(c)))[:left]:
                give[c] = 1
        for c, g in give.items():
            quota[c] += g
            left -= g
        open_ = {c for c in open_ if quota[c] < sizes[c]}
    return quota


def cluster_rebalance(scores: np.ndarray, labels: list, budget: int, mix: dict | None = None) -> list[int]:
    members = defaultdict(list)
    for i, c in enumerate(labels):
        members[c].append(i)
    quota = quotas({c: len(m) for c, m in members.items()}, budget, mix)
    chosen = []
    for c, idx in members.items():
        idx = sorted(idx, key=lambda i: (-scores[i], i))
        chosen += idx[: quota[c]]
    return sorted(chosen)


def kmeans_labels(X: np.ndarray, clusters: int, seed: int = 0) -> list[int]:
    from sklearn.cluster import MiniBatchKMeans

    clusters = max(1, min(clusters, len(X)))
    return MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=3, batch_size=4096).fit_predict(X).tolist()


def deita(
    X: np.ndarray, scores: np.ndarray, complexity: np.ndarray, budget: int, tau: float, prior: np.ndarray | None = None
) -> list[int]:
    order = np.lexsort((np.arange(len(scores)), -(scores * complexity)))
    return sorted(order[greedy_max_similarity(X[order], tau, prior, limit=budget)].tolist())


def knn_graph(X: np.ndarray, k: int, block: int = 2048, seed: int = 0):
    """Sparse sim(i, j) = (1 + cos) / 2 for j among i's k nearest neighbours (and itself), symmetrised. Neighbours are
    searched inside k-means blocks of about ``block`` rows, so the cost stays near O(n * block * d), not O(n^2 d)."""
    import scipy.sparse as sp

    n = len(X)
    labels = np.asarray(kmeans_labels(X, int(np.ceil(n / block)), seed)) if n > block else np.zeros(n, dtype=int)
    rows, cols, vals = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        sims = (1.0 + X[idx] @ X[idx].T) / 2.0
        kk = min(k + 1, len(idx))
        nn = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        rows.append(np.repeat(idx, kk))
        cols.append(idx[nn].ravel())
        vals.append(np.take_along_axis(sims, nn, 1).ravel())
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    W = W.maximum(W.T)
    W.setdiag(1.0)
    return W.tocsc()


def qdit(
    X: np.ndarray,
    scores: np.ndarray,
    budget: int,
    lam: float,
    k: int = 10,
    prior: np.ndarray | None = None,
    seed: int = 0,
) -> list[int]:
    n = len(X)
    if not budget or budget >= n:
        return list(range(n))
    span = scores.max() - scores.min()
    q = (scores - scores.min()) / span if span > 0 else np.ones(n)
    W = knn_graph(X, k, seed=seed) if lam > 0 else None
    cover = np.zeros(n)
    if lam > 0 and prior is not None and len(prior):
        for start in range(0, n, 4096):  # earlier rounds already cover their neighbourhoods
            cover[start : start + 4096] = (1.0 + (X[start : start + 4096] @ prior.T).max(1)) / 2.0

    def gain(j: int) -> float:
        g = (1 - lam) * q[j] / budget
        if lam > 0:
            lo, hi = W.indptr[j], W.indptr[j + 1]
            g += lam * np.maximum(W.data[lo:hi] - cover[W.indices[lo:hi]], 0.0).sum() / n
        return g

    heap = [(-gain(j), j) for j in range(n)]
    heapq.heapify(heap)
    chosen = []
    while heap and len(chosen) < budget:
        _, j = heapq.heappop(heap)
        g = gain(j)  # gains only shrink as S grows, so a fresh gain still >= the next stale one is the true argmax
        if heap and g < -heap[0][0] - 1e-15:
            heapq.heappush(heap, (-g, j))
            continue
        chosen.append(j)
        if lam > 0:
            lo, hi = W.indptr[j], W.indptr[j + 1]
            idx = W.indices[lo:hi]
            cover[idx] = np.maximum(cover[idx], W.data[lo:hi])
    return sorted(chosen)
