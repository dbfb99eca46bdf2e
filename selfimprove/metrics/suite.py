"""The text-side diversity suite of one sample set, as the monitor computes it: one tokenisation shared by every
n-gram metric, gzip on a second thread (zlib releases the GIL), and the route each metric took.

Routes: ``exact`` (all texts, the metric's definition), ``estimate`` (n-gram Vendi's spectral estimate, chosen when
its predicted flops are fewer than the exact eigendecomposition's), ``subsample`` (a seeded subsample of the size the
recipe sets: the pairwise metrics cost N^2, and n-gram Vendi grows with N, so every round is measured on the same N).
scripts/bench_metrics.py times the suite at 10^5 short and 10^4 reasoning-length texts (docs/benchmarks.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from selfimprove.metrics.diversity import (
    Ngrams,
    compression_ratio,
    homogenisation,
    lexical_suite,
    self_bleu,
    self_repetition,
    subsample,
)
from selfimprove.metrics.vendi import ngram_vendi


@dataclass(frozen=True)
class SuiteConfig:
    """The suite's settings (the monitor's section supplies them)."""

    unit: str = "char"
    orders: tuple[int, ...] = (1, 2, 3, 4)
    ead_vocab_size: int = 0
    self_repetition_n: int = 4
    vendi_samples: int = 1000
    homogenisation_samples: int = 100
    self_bleu_samples: int = 0


def text_diversity(texts: list[str], cfg: SuiteConfig) -> tuple[dict, dict]:
    """({metric: value}, {metric: route}) of the texts; a route is {route, texts, of} (texts < of: a subsample)."""
    with ThreadPoolExecutor(1) as pool:
        gzip = pool.submit(compression_ratio, texts)
        whole = Ngrams(texts, cfg.unit)
        out = lexical_suite(whole, cfg.orders, cfg.unit, cfg.ead_vocab_size)
        out["self_repetition"] = self_repetition(whole, cfg.self_repetition_n, cfg.unit)
        routes = {k: _route("exact", len(texts), len(texts)) for k in [*out, "compression_ratio"]}
        sample = subsample(texts, cfg.vendi_samples)
        part = whole if len(sample) == len(texts) else Ngrams(sample, cfg.unit)
        vendi: dict = {}
        out["ngram_vendi"] = ngram_vendi(part, unit=cfg.unit, route=vendi)
        routes["ngram_vendi"] = _route(vendi.get("route", "exact"), len(sample), len(texts))
        if cfg.homogenisation_samples:
            out["homogenisation"] = homogenisation(texts, cfg.unit, cfg.homogenisation_samples)
            routes["homogenisation"] = _route("exact", min(len(texts), cfg.homogenisation_samples), len(texts))
        if cfg.self_bleu_samples:  # hypotheses from the Vendi subsample, each against all of it
            out["self_bleu"] = self_bleu(part, unit=cfg.unit, sample=cfg.self_bleu_samples)
            routes["self_bleu"] = _route("exact", min(len(sample), cfg.self_bleu_samples), len(texts))
        out["compression_ratio"] = gzip.result()
    return out, routes


def _route(kind: str, measured: int, total: int) -> dict:
    return {"route": f"subsample+{kind}" if measured < total else kind, "texts": measured, "of": total}
