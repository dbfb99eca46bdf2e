"""Diversity metrics over a set of texts (definitions and pitfalls: docs/metrics.md).

Tokenisation is explicit: ``unit="char"`` for digit strings and other character-level tasks, ``"word"`` (whitespace)
for prose. Every metric returns a defined float on empty input, a single text, identical texts and empty strings.
Entropies are in nats.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from itertools import chain

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
    import pandas as pd

    if unit == "char":
        data = "".join(texts).encode("utf-32-le", errors="surrogatepass")
        ids, lengths = np.frombuffer(data, dtype=np.uint32).astype(np.int64), [len(t) for t in texts]
    else:
        split = [t.split() for t in texts]
        ids = pd.factorize(np.fromiter(chain.from_iterable(split), dtype=object))[0].astype(np.int64)
        lengths = [len(s) for s in split]
    return ids, np.repeat(np.arange(len(texts)), lengths)


class Ngrams:
    """A corpus tokenised once, with each order's n-gram occurrences built on first use and kept, so that the metrics
    of one text set share one tokenisation (on 10^4 reasoning-length texts it costs as much as a metric).

    The n-gram ids are built on integer arrays, one (n-1)-gram id + next token -> n-gram id join per order, hashed by
    pandas.factorize, instead of hashing Python strings: sklearn's CountVectorizer with a Python analyzer took 16 of a
    30 s budget on 10^5 texts, and a sort (np.unique) is 3x slower than the hash (docs/metrics.md)."""

    def __init__(self, texts: list[str], unit: str = "char"):
        self.texts, self.unit = texts, unit
        self.ids, self.doc = _token_ids(texts, unit)
        self._code = {1: self.ids}  # _code[n][i] identifies tokens i..i+n-1 (across text ends too)
        self._occurrences: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def lengths(self) -> np.ndarray:
        """Tokens per text."""
        return np.bincount(self.doc, minlength=len(self.texts))

    def occurrences(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(text index, n-gram id) of every n-gram occurrence, ids dense in 0..G-1 in first-seen order."""
        import pandas as pd

        if n not in self._occurrences:
            code = self._codes(n)
            inside = self.doc[: len(code)] == self.doc[n - 1 :]  # drop those across text ends
            self._occurrences[n] = self.doc[: len(code)][inside], pd.factorize(code[inside])[0].astype(np.int64)
        return self._occurrences[n]

    def pairs(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text index, n-gram id, count): each n-gram a text holds, once, with how often the text holds it."""
        doc, gram = self.occurrences(n)
        width = int(gram.max(initial=0)) + 1
        pair, count = np.unique(doc * width + gram, return_counts=True)
        return *np.divmod(pair, width), count

    def _codes(self, n: int) -> np.ndarray:
        import pandas as pd

        if n not in self._code:
            prev, base = self._codes(n - 1), int(self.ids.max(initial=0)) + 1
            self._code[n] = pd.factorize(prev[:-1] * base + self.ids[n - 1 :])[0].astype(np.int64)
        return self._code[n]


def corpus(texts: list[str] | Ngrams, unit: str = "char") -> Ngrams:
    """The texts as an ``Ngrams`` (as given when they already are one)."""
    return texts if isinstance(texts, Ngrams) else Ngrams(texts, unit)


def ngram_occurrences(texts: list[str] | Ngrams, orders, unit: str = "char"):
    """For each order n: (n, text index, n-gram id) of every n-gram occurrence, ids dense in 0..G-1, one id per
    distinct n-gram (the same n-grams as ``grams``)."""
    c = corpus(texts, unit)
    for n in sorted(orders):
        yield n, *c.occurrences(n)


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


def _counts(texts: list[str] | Ngrams, n: int, unit: str) -> np.ndarray:
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


def lexical_suite(texts: list[str] | Ngrams, orders=(1, 2, 3, 4), unit: str = "char", vocab_size: int = 0) -> dict:
    """distinct_n, ngram_entropy_n (and ead_n when vocab_size > 0) for every order, from one tokenisation."""
    out = {}
    for n, _, gram in ngram_occurrences(texts, tuple(orders), unit):
        c = np.bincount(gram).astype(np.float64)
        out[f"distinct_{n}"], out[f"ngram_entropy_{n}"] = _distinct(c), _entropy(c)
        if vocab_size:
            out[f"ead_{n}"] = _ead(c, vocab_size, n)
    return {k: out[k] for n in orders for k in (f"distinct_{n}", f"ngram_entropy_{n}", f"ead_{n}") if k in out}


def self_repetition(texts: list[str] | Ngrams, n: int = 4, unit: str = "char") -> float:
    """Self-repetition (Salkar et al. 2022, as reported by Shaib et al. 2024): mean over texts of
    log(1 + sum over the text's distinct n-grams of the number of *other* texts containing it). 0 = nothing shared;
    higher = more templated. Empty corpus: 0."""
    if not texts:
        return 0.0
    doc, gram, _ = corpus(texts, unit).pairs(n)  # each (text, n-gram) pair once
    in_texts = np.bincount(gram)  # how many texts hold each n-gram
    shared = np.bincount(doc, weights=in_texts[gram] - 1, minlength=len(texts))
    return float(np.mean(np.log1p(shared)))


def homogenisation(texts: list[str], unit: str = "char", sample: int = 100, seed: int = 0) -> float:
    """Homogenisation (Padmakumar & He 2023): mean over texts of the mean ROUGE-L F1 to every other text, in our
    tokenisation (rouge-score's default tokenizer drops non-alphanumerics, i.e. every operator). In [0, 1], higher =
    more alike. O(N^2): at most ``sample`` seeded texts. Fewer than two texts: 0.

    ROUGE-L F1 = 2 LCS / (|a| + |b|) is rapidfuzz's normalised Indel similarity, computed bit-parallel in C++ on both
    cores (tests check it against rouge-score, which took 76 s for 100 texts of 300 words)."""
    from rapidfuzz.distance import Indel
    from rapidfuzz.process import cdist

    if len(texts) < 2:
        return 0.0
    if len(texts) > sample:
        texts = [texts[i] for i in sorted(np.random.default_rng(seed).choice(len(texts), sample, replace=False))]
    seqs = _as_strings(texts, unit)
    sim = cdist(seqs, seqs, scorer=Indel.normalized_similarity, dtype=np.float64, workers=-1)
    empty = np.array([not s for s in seqs])
    sim[empty, :] = sim[:, empty] = 0.0  # rouge-score: no tokens, no overlap (Indel calls two empties equal)
    np.fill_diagonal(sim, 0.0)
    n = len(texts)
    return float(sim.sum() / (n * (n - 1)))


def _as_strings(texts: list[str], unit: str) -> list[str]:
    """Each text as a string of one character per token, so rapidfuzz compares tokens (words map to code points by
    first appearance, skipping the surrogate range)."""
    if unit == "char":
        return list(texts)
    vocab: dict[str, str] = {}
    code = lambda i: chr(i if i < 0xD800 else i + 0x800)  # noqa: E731
    return ["".join(vocab.setdefault(w, code(len(vocab))) for w in t.split()) for t in texts]


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


def self_bleu(texts: list[str] | Ngrams, max_n: int = 3, unit: str = "char", sample: int = 200, seed: int = 0) -> float:
    """Self-BLEU (Zhu et al. 2018): mean BLEU of each text against all the others, uniform weights up to ``max_n``,
    NLTK's sentence_bleu with smoothing method1. Higher = less diverse. At most ``sample`` seeded hypotheses are
    scored, each against every other text. Fewer than two texts: 0.0.

    NLTK recounts every reference's n-grams for every hypothesis (75 s for 200 hypotheses of 300 words against 999
    references). Here the counts are made once: a hypothesis' clip count for an n-gram is the largest count in any
    *other* text, which is the n-gram's top count unless this text alone holds it, then its second (tests check
    the result equals NLTK's)."""
    if len(texts) < 2:
        return 0.0
    picks = (
        np.arange(len(texts))
        if len(texts) <= sample
        else np.sort(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
    )
    c = corpus(texts, unit)
    lengths = c.lengths()
    log_p = np.zeros(len(texts))
    matched_unigrams = None
    for n in range(1, max_n + 1):
        matched, total = _clipped_matches(*c.pairs(n), len(texts))
        if n == 1:
            matched_unigrams = matched
        p = np.where(matched > 0, matched, 0.1) / np.maximum(total, 1)  # method1: epsilon 0.1 for no match
        log_p += np.log(p) / max_n
    scores = [
        0.0 if not lengths[i] or not matched_unigrams[i] else _brevity(lengths, i) * math.exp(log_p[i]) for i in picks
    ]
    return float(np.mean(scores))


def _clipped_matches(text: np.ndarray, g: np.ndarray, count: np.ndarray, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per text (from ``Ngrams.pairs``): its n-grams clipped by the largest count of each in any other text (BLEU's
    modified precision numerator), and its n-gram count."""
    width = int(g.max(initial=0)) + 1
    order = np.lexsort((-count, g))  # per n-gram, its counts from the largest down
    g_sorted, c_sorted = g[order], count[order]
    first = np.ones(len(g_sorted), dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    top = np.zeros(width, dtype=np.int64)
    top[g_sorted[first]] = c_sorted[first]
    second = np.zeros(width, dtype=np.int64)
    has_second = np.zeros(len(g_sorted), dtype=bool)  # a group's first entry whose next is in the same group
    has_second[:-1] = first[:-1] & ~first[1:]
    second[g_sorted[has_second]] = c_sorted[np.flatnonzero(has_second) + 1]
    alone_on_top = (count == top[g]) & (second[g] < top[g])
    clip = np.minimum(count, np.where(alone_on_top, second[g], top[g]))
    return np.bincount(text, clip, n_texts), np.bincount(text, count, n_texts)


def _brevity(lengths: np.ndarray, i: int) -> float:
    """NLTK's brevity penalty for text i against the others: the closest other length (the shorter on a tie)."""
    others = np.delete(lengths, i)
    gap = np.abs(others - lengths[i])
    ref = int(others[gap == gap.min()].min())
    return 1.0 if lengths[i] > ref else math.exp(1 - ref / lengths[i])
