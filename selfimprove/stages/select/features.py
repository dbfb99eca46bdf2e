"""Vectors for near-duplicate detection and diversity selection: unit-norm rows, one per text.

'ngram': TF-IDF of the text's 1..4-grams (monitor.unit tokens), reduced by truncated SVD (LSA) to ``dim`` dense
dimensions: cheap, offline, and fitted on the texts at hand. 'embedding': a sentence-transformers model (the monitor's
embedder), which understands paraphrase but costs a forward pass per text.
"""

from __future__ import annotations

import numpy as np

from selfimprove.metrics.diversity import grams
from selfimprove.metrics.embedding import load_embedder


def text_features(
    texts: list[str], kind: str = "ngram", dim: int = 64, unit: str = "char", embedder: str = "", seed: int = 0
) -> np.ndarray:
    if not texts:
        return np.zeros((0, max(dim, 1)), dtype=np.float32)
    if kind == "embedding":
        return (
            load_embedder(embedder)
            .encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            .astype(np.float32)
        )
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    def analyzer(t):
        return [g for n in (1, 2, 3, 4) for g in grams(t, n, unit)] or ["\x00empty"]

    X = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True).fit_transform(texts)
    k = min(dim, X.shape[0] - 1, X.shape[1] - 1)
    if k < 2:  # too few texts or n-grams to reduce: the TF-IDF vectors themselves
        return normalize(X).toarray().astype(np.float32)
    Z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(X)
    return normalize(Z).astype(np.float32)
