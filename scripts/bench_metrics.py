"""Cost of the monitor's metric suite at scale. Prints timings and ratios measured side by side in one run.

1. The monitor's text-side suite (selfimprove.metrics.suite.text_diversity, every text measured: vendi_samples = N)
   on N short samples (default 100,000 reversed-addition answers, char tokens): distinct-n / n-gram entropy / EAD
   for n = 1..4, self-repetition, compression ratio, homogenisation (100 sampled texts), self-BLEU (200 sampled
   hypotheses against all N) and the n-gram Vendi score of all N. Target: <= 30 s on a 2-core CPU, printed as a
   ratio to that budget, with the route each metric took and the peak resident memory (target <= 2 GiB).
2. Each estimate against the exact value on sets small enough to compute exactly (n-gram Vendi's spectral route on
   digit strings, word texts and reasoning-length texts; target within 2%).
3. Embedding diversity throughput (selfimprove's encode + mean cosine distance + embedding Vendi) against the raw
   encoder forward pass on the same texts (needs the [embed] extra; skipped without it).
4. The same suite on N word-level texts (default 100,000 of 5-30 words from a Zipf-like 20,000-word vocabulary).
5. The same suite on reasoning-length texts (default 10,000 of 200-400 words, the same vocabulary).

Parts 1, 4 and 5 each run in a child process, so the peak resident memory printed is that suite's own.

    python scripts/bench_metrics.py [--samples 100000] [--word-samples 100000] [--long-samples 10000]
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


def word_samples(n: int, seed: int = 0, vocab: int = 20_000, lengths: tuple[int, int] = (5, 30)) -> list[str]:
    """Texts of ``lengths`` words (inclusive) drawn from a Zipf-like (1/rank) distribution over ``vocab`` words."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    words = rng.choice(vocab, (sizes := rng.integers(lengths[0], lengths[1] + 1, n)).sum(), p=p / p.sum())
    cuts = np.cumsum(sizes)[:-1]
    return [" ".join(f"w{w}" for w in chunk) for chunk in np.split(words, cuts)]


def long_samples(n: int, seed: int = 0) -> list[str]:
    """Reasoning-length texts: 200..400 words each."""
    return word_samples(n, seed, lengths=(200, 400))


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


SUITES = {  # part: (label, texts, unit, EAD vocabulary)
    "1": ("short char-level samples", short_samples, "char", 12),
    "4": ("word-level texts of 5-30 words", word_samples, "word", 20_000),
    "5": ("reasoning-length texts of 200-400 words", long_samples, "word", 20_000),
}


def _suite(part: str, n: int) -> None:
    import resource

    from selfimprove.metrics.suite import SuiteConfig, text_diversity

    label, make, unit, vocab = SUITES[part]
    texts = make(n)
    cfg = SuiteConfig(unit, (1, 2, 3, 4), vocab, 4, vendi_samples=n, homogenisation_samples=100, self_bleu_samples=200)
    (values, routes), dt = timed(text_diversity, texts, cfg)
    print(f"{part}. the monitor's suite on {n:,} {label}: {dt:.2f} s = {dt / 30:.2f} x the 30 s budget")
    for name, value in values.items():
        print(f"   {name:<22} {value:12.5g}   {routes[name]['route']} ({routes[name]['texts']:,} texts)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"   peak resident memory of this process (the suite, its data and imports): {peak:.2f} GiB, target <= 2 GiB")


def suite(part: str, n: int) -> None:
    """One suite in a child process of its own, so the peak resident memory it prints is that suite's alone."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_suite, args=(part, n))
    child.start()
    child.join()


def vendi_accuracy(n: int) -> None:
    """n-gram Vendi's estimate against the exact score on sets small enough for the exact eigendecomposition."""
    from selfimprove.metrics.vendi import ngram_vendi

    sets = [
        (f"{n:,} digit strings", short_samples(n, seed=2), "char"),
        (f"{n // 2:,} word texts of 5-30 words", word_samples(n // 2, seed=2), "word"),
        (f"{n // 4:,} texts of 200-400 words", long_samples(n // 4, seed=2), "word"),
    ]
    print("2. n-gram Vendi, the spectral estimate against the exact score (target within 2%)")
    for label, texts, unit in sets:
        exact, t_exact = timed(ngram_vendi, texts, unit=unit, max_dim=10**9)
        approx, t_approx = timed(ngram_vendi, texts, unit=unit, max_dim=0)  # forces the spectral route
        print(
            f"   {label:<32} exact {exact:10.2f} ({t_exact:5.1f} s)  estimate {approx:10.2f} ({t_approx:5.1f} s)"
            f"  relative error {abs(approx - exact) / exact:.2%}"
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
    parser.add_argument("--samples", type=int, default=100_000, help="Short samples for part 1 (0 = skip).")
    parser.add_argument("--accuracy-samples", type=int, default=4000, help="Digit strings for part 2 (0 = skip).")
    parser.add_argument("--embed-samples", type=int, default=2000, help="Texts for part 3 (0 = skip).")
    parser.add_argument("--word-samples", type=int, default=100_000, help="Word-level texts for part 4 (0 = skip).")
    parser.add_argument("--long-samples", type=int, default=10_000, help="Texts of 200-400 words, part 5 (0 = skip).")
    args = parser.parse_args()
    for part, n in (("1", args.samples), ("4", args.word_samples), ("5", args.long_samples)):
        if n:
            suite(part, n)
    if args.accuracy_samples:
        vendi_accuracy(args.accuracy_samples)
    if args.embed_samples:
        embedding_throughput(args.embed_samples)


if __name__ == "__main__":
    main()
