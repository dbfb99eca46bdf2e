"""Cost of the monitor's metric suite at scale. Prints timings and ratios measured side by side in one run.

1. The full lexical + n-gram Vendi suite on N short samples (default 100,000 reversed-addition answers, char
   tokens): distinct-n / n-gram entropy / EAD for n = 1..4, self-repetition, compression ratio, homogenisation and
   self-BLEU on their seeded subsamples, and the n-gram Vendi score of all N (spectral route). Target: <= 30 s on
   a 2-core CPU, printed as a ratio to that budget.
2. Accuracy of the spectral n-gram Vendi route against the exact eigendecomposition on a smaller set.
3. Embedding diversity throughput (selfimprove's encode + mean cosine distance + embedding Vendi) against the raw
   encoder forward pass on the same texts (needs the [embed] extra; skipped without it).
4. The same suite on N word-level texts (default 100,000 of 5-30 words from a Zipf-like 20,000-word vocabulary, so
   there are far more n-gram features than texts and the spectral route works on the N x N text side): time and
   the peak resident memory of a child process that does only this, against the 30 s budget.

    python scripts/bench_metrics.py [--samples 100000] [--embed-samples 2000] [--word-samples 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def short_samples(n: int, seed: int = 0) -> list[str]:
    """Digit strings of 2..12 characters, as the addition task's answers."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 13, n)
    digits = rng.integers(0, 10, lengths.sum()).astype(str)
    cuts = np.cumsum(lengths)[:-1]
    return ["".join(chunk) for chunk in np.split(digits, cuts)]


def word_samples(n: int, seed: int = 0, vocab: int = 20_000) -> list[str]:
    """Texts of 5..30 words drawn from a Zipf-like (1/rank) distribution over ``vocab`` words."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    words = rng.choice(vocab, (lengths := rng.integers(5, 31, n)).sum(), p=p / p.sum())
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(f"w{w}" for w in chunk) for chunk in np.split(words, cuts)]


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def lexical_and_vendi(texts: list[str], unit: str = "char", vocab_size: int = 12, label: str = "1.") -> float:
    from selfimprove.metrics.diversity import (
        compression_ratio,
        homogenisation,
        lexical_suite,
        ngram_vendi,
        self_bleu,
        self_repetition,
    )

    rng = np.random.default_rng(1)
    sub = [texts[i] for i in rng.choice(len(texts), min(1000, len(texts)), replace=False)]
    steps = [
        ("distinct/entropy/EAD n=1..4", lambda: lexical_suite(texts, (1, 2, 3, 4), unit, vocab_size)),
        ("self-repetition (n=4)", lambda: self_repetition(texts, 4, unit)),
        ("compression ratio", lambda: compression_ratio(texts)),
        ("homogenisation (100 sampled)", lambda: homogenisation(texts, unit, sample=100)),
        ("self-BLEU (200 of 1,000 sampled)", lambda: self_bleu(sub, unit=unit, sample=200)),
        (f"n-gram Vendi (all {len(texts):,})", lambda: ngram_vendi(texts, unit=unit)),
    ]
    total = 0.0
    print(f"{label} metric suite on {len(texts):,} {unit}-level samples")
    for name, fn in steps:
        value, dt = timed(fn)
        total += dt
        shown = f"{value:.4g}" if isinstance(value, float) else f"{len(value)} values"
        print(f"   {name:<36} {dt:7.2f} s   ({shown})")
    print(f"   {'total':<36} {total:7.2f} s   = {total / 30:.2f} x the 30 s budget")
    return total


def _word_suite(n: int) -> None:
    lexical_and_vendi(word_samples(n), unit="word", vocab_size=20_000, label="4.")


def word_level(n: int) -> None:
    """Part 4 in a child process, so its peak resident memory is its own (ru_maxrss of the waited-for child)."""
    import multiprocessing
    import resource

    child = multiprocessing.get_context("spawn").Process(target=_word_suite, args=(n,))
    child.start()
    child.join()
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    print(f"   peak resident memory of the word-level suite (child process): {peak_gib:.2f} GiB")


def vendi_accuracy(n: int) -> None:
    from selfimprove.metrics.diversity import ngram_vendi

    texts = short_samples(n, seed=2)
    exact, t_exact = timed(ngram_vendi, texts, max_dim=10**9)
    approx, t_approx = timed(ngram_vendi, texts, max_dim=0)  # forces the spectral route
    print(
        f"2. n-gram Vendi on {n:,} samples: exact {exact:.2f} ({t_exact:.1f} s), spectral {approx:.2f} "
        f"({t_approx:.1f} s): relative error {abs(approx - exact) / exact:.2%}"
    )


def embedding_throughput(n: int) -> None:
    try:
        from selfimprove.metrics.embedding import embedding_diversity, load_embedder

        embedder = load_embedder()
    except ImportError as err:
        print(f"3. embedding throughput skipped: {err}")
        return
    import torch

    texts = [f"the answer to problem {i} is {t}" for i, t in enumerate(short_samples(n, seed=3))]
    embedding_diversity(texts[:64], embedder)  # warm-up
    _, ours = timed(embedding_diversity, texts, embedder)
    encoder = embedder[0].auto_model
    tok = embedder.tokenizer
    by_length = sorted(texts, key=len)  # as sentence-transformers does, so both pad alike
    batches = [
        tok(by_length[i : i + 256], padding=True, truncation=True, return_tensors="pt") for i in range(0, n, 256)
    ]
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            encoder(**b)
    raw = time.perf_counter() - t
    print(
        f"3. embeddings of {n:,} texts: selfimprove {n / ours:,.0f} texts/s (tokenise + encode + pool + metrics), "
        f"raw encoder forward {n / raw:,.0f} texts/s: ratio {raw / ours:.2f} of raw throughput"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000, help="Short samples for the suite.")
    parser.add_argument(
        "--accuracy-samples", type=int, default=4000, help="Samples for the exact-vs-spectral Vendi check."
    )
    parser.add_argument(
        "--embed-samples", type=int, default=2000, help="Texts for the embedding throughput check (0 = skip)."
    )
    parser.add_argument("--word-samples", type=int, default=100_000, help="Word-level texts for part 4 (0 = skip).")
    args = parser.parse_args()
    lexical_and_vendi(short_samples(args.samples))
    vendi_accuracy(args.accuracy_samples)
    if args.embed_samples:
        embedding_throughput(args.embed_samples)
    if args.word_samples:
        word_level(args.word_samples)


if __name__ == "__main__":
    main()
