"""Generation backends: one entry, ``sample``, for the policy, the LLM judge and evaluation. ``hf`` runs in this
process (selfimprove.backends.hf), ``vllm`` runs the offline engine in its own process (vllm_engine, vllm_worker),
``openai`` talks to any OpenAI-compatible server (openai_server). All return, per prompt, ``num_samples`` dicts
{completion, finished, num_tokens, error}, in prompt order, so every caller sees the same results contract."""

from __future__ import annotations

from pathlib import Path

from selfimprove.backends.hf import Sampling, hf_generate
from selfimprove.backends.openai_server import openai_generate
from selfimprove.backends.vllm_engine import vllm_generate
from selfimprove.core.dist import dist_rank_world
from selfimprove.core.model import load_policy, load_tokenizer
from selfimprove.core.prompts import PromptFormat

__all__ = ["Sampling", "sample"]


def sample(
    backend: str,
    model_path: str,
    prompts: list[str],
    sampling: Sampling,
    seed: int,
    batch_size: int,
    dtype: str = "float32",
    desc: str = "generate",
    fmt: PromptFormat | None = None,
    options=None,
    shards: Path | None = None,
    stats: dict | None = None,
) -> list[list[dict]]:
    """The one generation entry used by the policy, the LLM judge and evaluation. ``backend``: 'hf' (in this process,
    sharded over accelerate ranks), 'vllm' (offline engine in its own process) or 'openai' (an OpenAI-compatible
    server); ``options`` holds the backend's settings (``.vllm`` / ``.openai``). ``fmt`` turns each prompt into the
    model's input (system prompt, few-shot, chat template); with the 'openai' backend and ``api: chat`` the server
    gets the messages and applies its own template, with ``api: completions`` the plain text. ``shards``: the 'hf'
    backend's ranks hand their shares to rank 0 as files in that folder (only rank 0 then gets every result).
    ``stats`` (vllm): receives the engine's mode and timings on the rank that called it (selfimprove.backends
    .vllm_engine)."""
    fmt = fmt or PromptFormat()
    if backend == "openai":
        chat = options.openai.api == "chat"
        requests = [fmt.messages(p) if chat else fmt.plain(p) for p in prompts]
        return _on_rank0(lambda: openai_generate(options.openai, model_path, requests, sampling, seed))

    tok = load_tokenizer(model_path)
    if backend == "vllm":
        ids = fmt.encode(tok, prompts)  # the token ids HF would see: no second BOS from vLLM's own encoding
        return _on_rank0(lambda: vllm_generate(options.vllm, model_path, ids, sampling, seed, stats))

    return hf_generate(
        load_policy(model_path, dtype),
        tok,
        fmt.texts(tok, prompts),
        sampling,
        seed,
        batch_size,
        desc,
        add_special_tokens=not fmt.uses_template(tok),
        shards=shards,
    )


def _on_rank0(work):
    """Server and vLLM backends parallelise on their own: under accelerate, rank 0 calls them and shares the result."""
    rank, world = dist_rank_world()
    if world == 1:
        return work()
    import torch.distributed as dist

    box = [work() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
