"""Duplicate removal within the round and against every earlier round's data: the select stage's samples and the
propose stage's prompts.

exact: the same (prompt, completion). minhash: estimated Jaccard similarity of the texts' shingle sets >= threshold,
found with datasketch's MinHash LSH and verified on the signatures (LSH alone returns candidates). embedding: cosine
similarity of feature vectors > threshold, checked exactly against everything accepted so far.
Each returns, for the candidates in order, None (keep) or the reason it is a duplicate.
"""

from __future__ import annotations

import numpy as np

from selfimprove.metrics.diversity import grams


def dedup_text(r: dict) -> str:
    return r["prompt"] + "\n" + r["completion"]


def prompt_rows(texts: list[str]) -> list[dict]:
    """Prompt texts as rows with no completion, to compare prompts alone (the propose stage, prompt novelty)."""
    return [{"prompt": t, "completion": ""} for t in texts]


def exact(rows: list[dict], seen: set[tuple[str, str]]) -> list[str | None]:
    seen = set(seen)
    out = []
    for r in rows:
        key = (r["prompt"], r["completion"])
        out.append("duplicate" if key in seen else None)
        seen.add(key)
    return out


def _minhashes(texts: list[str], n: int, unit: str, num_perm: int):
    from datasketch import MinHash

    # A text shorter than one shingle would have none, and every empty set looks identical: use the text itself.
    shingles = [[g.encode("utf-8") for g in (grams(t, n, unit) or [t])] for t in texts]
    return MinHash.bulk(shingles, num_perm=num_perm, seed=1)  # fixed seed: signatures comparable across rounds


def minhash(
    rows: list[dict], prior: list[dict], threshold: float, n: int, unit: str, num_perm: int, within: bool = True
) -> list[str | None]:
    """``within`` False: each row against ``prior`` only, not against the rows before it."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = _minhashes([dedup_text(r) for r in prior + rows], n, unit, num_perm)
    for i, m in enumerate(hashes[: len(prior)]):
        lsh.insert(f"p{i}", m)
    kept = {f"p{i}": m for i, m in enumerate(hashes[: len(prior)])}
    out = []
    for i, m in enumerate(hashes[len(prior) :]):
        if any(kept[key].jaccard(m) >= threshold for key in lsh.query(m)):
            out.append("near_duplicate")
            continue
        if within:
            lsh.insert(f"c{i}", m)
            kept[f"c{i}"] = m
        out.append(None)
    return out


def greedy_max_similarity(
    X: np.ndarray, tau: float, prior: np.ndarray | None = None, limit: int = 0, block: int = 1024
) -> list[int]:
    """Indices of X's rows (unit vectors, taken in order) accepted when each must have cosine similarity <= tau to
    every row accepted before it and to every ``prior`` row; stops after ``limit`` acceptances (0 = none). Blocked:
    one matrix product per block of candidates against what is accepted, then a short exact pass inside the block."""
    n, d = X.shape
    accepted: list[int] = []
    bank = np.zeros((0, d), dtype=X.dtype)
    for start in range(0, n, block):
        Xb = X[start : start + block]
        worst = np.full(len(Xb), -np.inf)
        if prior is not None and len(prior):
            worst = np.maximum(worst, (Xb @ prior.T).max(1))
        if len(bank):
            worst = np.maximum(worst, (Xb @ bank.T).max(1))
        new: list[int] = []
        for i in np.flatnonzero(worst <= tau):
            if new and (Xb[new] @ Xb[i]).max() > tau:
                continue
            new.append(int(i))
            if limit and len(accepted) + len(new) >= limit:
                break
        accepted += [start + i for i in new]
        bank = np.vstack([bank, Xb[new]])
        if limit and len(accepted) >= limit:
            break
    return accepted


def embedding(X: np.ndarray, prior: np.ndarray | None, threshold: float, within: bool = True) -> list[str | None]:
    if not within:
        worst = (X @ prior.T).max(1) if prior is not None and len(prior) and len(X) else np.full(len(X), -np.inf)
        return [None if w <= threshold else "near_duplicate" for w in worst]
    keep = set(greedy_max_similarity(X, threshold, prior))
    return [None if i in keep else "near_duplicate" for i in range(len(X))]
