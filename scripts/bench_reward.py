"""Reward-model scoring throughput: the `reward` judge against a bare batched forward of the same model on the same
rows, measured side by side in one run. Prints rows/s and the ratio (target: judge time <= 1.3x bare).

The judge's time is everything it does for a round (load the model and tokenizer from the folder, apply the chat
template, sort by length, tokenise and pad each batch, forward, read the scores). The bare loop gets the model
already loaded and the rows already tokenised into the judge's own batches (length-sorted, padded to each batch's
longest), and times only the forwards; a naive bare loop in the rows' given order shows what sorting saves.

    python scripts/bench_reward.py [--rows 1000] [--batch-size 64] [--hidden 128] [--layers 2] [--repeats 3]

The model is a Qwen2 sequence classifier (1 label, random weights) with a byte-level BPE tokenizer and a chat
template, both built here; the rows are prompt + completion pairs of 10-120 words (GSM8K-like lengths).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def build(hidden: int, layers: int) -> tuple[str, list[dict]]:
    import numpy as np

    from selfimprove.smoke.tiny_models import TinySize, build_bpe_tokenizer, build_tiny_model

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)] + [str(i) for i in range(100)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()

    def text(n: int) -> str:
        return " ".join(rng.choice(words, size=n, p=zipf))

    rows = [
        {"prompt": text(int(rng.integers(10, 60))), "completion": text(int(rng.integers(10, 60)))} for _ in range(3000)
    ]
    tok = build_bpe_tokenizer([r["prompt"] + " " + r["completion"] for r in rows[:500]], vocab_size=1024)
    size = TinySize(hidden_size=hidden, intermediate_size=4 * hidden, num_layers=layers, num_heads=4, num_kv_heads=4)
    path = build_tiny_model("qwen2", tok, Path(tempfile.mkdtemp(prefix="bench-rm-")), size=size, classifier=True)
    return str(path), rows


def judge_time(path: str, rows: list[dict], batch_size: int) -> tuple[float, list[float]]:
    from selfimprove.stages.judge.reward_model import reward_model

    env = SimpleNamespace(
        cfg=SimpleNamespace(
            reward_model=SimpleNamespace(path=path, batch_size=batch_size, max_length=1024, dtype="float32")
        )
    )
    t = time.perf_counter()
    scores = reward_model(env, rows)
    return time.perf_counter() - t, scores


def bare_time(path: str, rows: list[dict], batch_size: int, sort: bool) -> tuple[float, list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from selfimprove.stages.judge.reward_model import _texts

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    texts = _texts(tok, rows)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    encoded = [tok([texts[i] for i in idx], return_tensors="pt", padding=True) for idx in batches]
    scores: dict[int, float] = {}
    t = time.perf_counter()
    with torch.inference_mode():
        for idx, enc in zip(batches, encoded):
            scores.update(zip(idx, model(**enc).logits[:, 0].tolist()))
    return time.perf_counter() - t, [scores[i] for i in range(len(texts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="Each timing is the best of this many (noisy machines).")
    args = ap.parse_args()

    import logging

    from transformers.utils import logging as hf_logging

    logging.disable(logging.WARNING)
    hf_logging.disable_progress_bar()
    path, rows = build(args.hidden, args.layers)
    rows = rows[: args.rows]
    judge = min((judge_time(path, rows, args.batch_size) for _ in range(args.repeats)), key=lambda x: x[0])
    bare = min((bare_time(path, rows, args.batch_size, True) for _ in range(args.repeats)), key=lambda x: x[0])
    naive = min((bare_time(path, rows, args.batch_size, False) for _ in range(args.repeats)), key=lambda x: x[0])
    # same scores: the judge adds no work the bare loop does not do (up to float noise from other batch padding)
    close = max(abs(a - b) for a, b in zip(judge[1], bare[1])) < 1e-4
    n = len(rows)
    print(
        f"reward judge, {n} rows, batch {args.batch_size}, Qwen2 classifier h{args.hidden} x {args.layers} layers:\n"
        f"  judge (load + template + tokenise + forward) {judge[0]:.2f} s ({n / judge[0]:,.0f} rows/s)\n"
        f"  bare forward, the judge's sorted batches     {bare[0]:.2f} s ({n / bare[0]:,.0f} rows/s)\n"
        f"  bare forward, rows in given order            {naive[0]:.2f} s ({n / naive[0]:,.0f} rows/s)\n"
        f"  ratio judge / bare sorted: {judge[0] / bare[0]:.2f}x (target <= 1.3x); "
        f"judge / bare unsorted: {judge[0] / naive[0]:.2f}x; same scores: {close}"
    )


if __name__ == "__main__":
    main()
