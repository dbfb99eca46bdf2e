"""The in-process Hugging Face backend: transformers ``generate`` batched over length-sorted prompts (left padding, KV
cache), each batch seeded from (seed, batch index) and sharded over accelerate ranks, so any number of processes
gives the single-process samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from selfimprove.core import timing
from selfimprove.core.dist import dist_rank_world, gather_dict, gather_files, my_batches
from selfimprove.core.model import context_length
from selfimprove.core.seeding import child_seed

logger = logging.getLogger(__name__)


@dataclass
class Sampling:
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 32

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def stop_ids(model, tokenizer) -> list[int]:
    """Tokens that end a completion: the tokenizer's EOS and every EOS the model's generation_config names (an
    instruct checkpoint ends turns with one token and documents with another)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(t for t in [tokenizer.eos_token_id, *configured] if t is not None))


def hf_generate(
    model,
    tokenizer,
    prompts: list[str],
    sampling: Sampling,
    seed: int,
    batch_size: int,
    desc: str = "generate",
    add_special_tokens: bool = True,
    shards: Path | None = None,
) -> list[list[dict]]:
    """For each prompt, ``num_samples`` dicts {completion, finished, num_tokens}, in prompt order. Under accelerate
    the ranks' shares are gathered on every rank through the process group, or, with ``shards`` (a folder on a
    filesystem every node mounts), written there, one file per rank, and assembled on rank 0 only."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[dict]] = [[] for _ in prompts]
    greedy = sampling.temperature == 0
    stops = stop_ids(model, tokenizer)
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        num_return_sequences=sampling.num_samples,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops,
    )
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)  # 0 disables top-k
    # Batches are fixed by the length order and seeded by their index; under accelerate each rank takes every
    # world-th batch, so any number of processes produces exactly the single-process samples.
    rank, world = dist_rank_world()
    limit = context_length(model.config)
    bar = dict(desc=desc, unit="batch", leave=False, disable=rank != 0 or None)  # None: no bar in a log or a pipe
    for b, start in tqdm(my_batches(len(order), batch_size), **bar):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
        )
        torch.manual_seed(child_seed(seed, b))
        with torch.inference_mode(), timing.compute():
            out = model.generate(**enc, **within_context(kwargs, enc["input_ids"].shape[1], limit))
        new = out[:, enc["input_ids"].shape[1] :]  # (batch * num_samples, new tokens)
        for row, tokens in enumerate(new.tolist()):
            end = next((i for i, t in enumerate(tokens) if t in stops), None)
            finished = end is not None
            tokens = [t for t in (tokens[:end] if finished else tokens) if t != tokenizer.pad_token_id]
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            results[idx[row // sampling.num_samples]].append(
                {"completion": text, "finished": finished, "num_tokens": len(tokens)}
            )
    return _gather(results, shards) if world > 1 else results


def within_context(kwargs: dict, prompt_len: int, limit: int | None) -> dict:
    """Generation stops at the model's context, as vLLM's does at max_model_len: a batch whose (padded) prompts
    leave fewer positions than max_new_tokens gets what is left (its cut completions are unfinished)."""
    if not limit or prompt_len + kwargs["max_new_tokens"] <= limit:
        return kwargs
    return {**kwargs, "max_new_tokens": max(limit - prompt_len, 1)}


def _gather(results: list[list[dict]], shards: Path | None) -> list[list[dict]]:
    """Every rank's share of the results, merged in prompt order (on rank 0 only, with ``shards``)."""
    mine = {i: r for i, r in enumerate(results) if r}
    merged = gather_dict(mine) if shards is None else gather_files(mine, shards)
    return [merged.get(i, []) for i in range(len(results))]
