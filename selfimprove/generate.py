"""Stage 1, generate: sample N completions per prompt from the current policy.

The HF backend batches prompts (left padding, KV cache) and seeds each batch from (seed, round, batch index), so a
redone stage reproduces the same samples. Prompts are sorted by length before batching to cut padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from selfimprove import seeding
from selfimprove.prompts import PromptFormat
from selfimprove.rundir import dist_rank_world, gather_dict, my_batches, save_rows
from selfimprove.seeding import child_seed

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
) -> list[list[dict]]:
    """For each prompt, ``num_samples`` dicts {completion, finished, num_tokens}, in prompt order."""
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
    for b, start in tqdm(my_batches(len(order), batch_size), desc=desc, unit="batch", leave=False, disable=rank != 0):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
        )
        torch.manual_seed(child_seed(seed, b))
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]  # (batch * num_samples, new tokens)
        for row, tokens in enumerate(new.tolist()):
            end = next((i for i, t in enumerate(tokens) if t in stops), None)
            finished = end is not None
            tokens = [t for t in (tokens[:end] if finished else tokens) if t != tokenizer.pad_token_id]
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            results[idx[row // sampling.num_samples]].append(
                {"completion": text, "finished": finished, "num_tokens": len(tokens)}
            )
    return _gather(results) if world > 1 else results


def _gather(results: list[list[dict]]) -> list[list[dict]]:
    """Every rank's share of the results, merged in prompt order on every rank."""
    merged = gather_dict({i: r for i, r in enumerate(results) if r})
    return [merged.get(i, []) for i in range(len(results))]


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
) -> list[list[dict]]:
    """The one generation entry used by the policy, the LLM judge and evaluation. ``backend``: 'hf' (in this process,
    sharded over accelerate ranks), 'vllm' (offline engine in its own process) or 'openai' (an OpenAI-compatible
    server); ``options`` holds the backend's settings (``.vllm`` / ``.openai``). ``fmt`` turns each prompt into the
    model's input (system prompt, few-shot, chat template); with the 'openai' backend and ``api: chat`` the server
    gets the messages and applies its own template, with ``api: completions`` the plain text."""
    fmt = fmt or PromptFormat()
    if backend == "openai":
        from selfimprove.backends.openai_server import openai_generate

        chat = options.openai.api == "chat"
        requests = [fmt.messages(p) if chat else fmt.plain(p) for p in prompts]
        return _on_rank0(lambda: openai_generate(options.openai, model_path, requests, sampling, seed))
    from selfimprove.model import load_tokenizer

    tok = load_tokenizer(model_path)
    if backend == "vllm":
        from selfimprove.backends.vllm_engine import vllm_generate

        ids = fmt.encode(tok, prompts)  # the token ids HF would see: no second BOS from vLLM's own encoding
        return _on_rank0(lambda: vllm_generate(options.vllm, model_path, ids, sampling, seed))
    from selfimprove.model import load_policy

    return hf_generate(
        load_policy(model_path, dtype),
        tok,
        fmt.texts(tok, prompts),
        sampling,
        seed,
        batch_size,
        desc,
        add_special_tokens=not fmt.uses_template(tok),
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


def run_generate(ctx, k: int) -> None:
    """Write round k's prompts and samples (one row per sample, with lineage) to round_k/generate/."""
    from selfimprove.alarms import steered_temperature

    r = ctx.recipe
    prompts = ctx.task.round_prompts(k, ctx.history(k), ctx.excluded_prompts())
    ckpt = ctx.checkpoint(k - 1)
    sampling = Sampling(
        r.generate.num_samples,
        steered_temperature(ctx, k),
        r.generate.top_p,
        r.generate.top_k,
        r.generate.max_new_tokens or ctx.task.max_new_tokens(prompts),
    )
    seed = seeding.int_seed(r.seed, "generate", k)
    with ctx.writing(
        k, "generate", {"checkpoint": ctx.relative(ckpt), "sampling": sampling.as_dict(), "seed": seed}
    ) as (out, meta):
        samples = sample(
            r.generate.backend,
            ckpt,
            [p["prompt"] for p in prompts],
            sampling,
            seed,
            r.generate.batch_size,
            r.model.dtype,
            f"round {k} generate",
            fmt=ctx.prompt_format,
            options=r.generate,
        )
        rows = [
            {
                **p,
                "sample_idx": j,
                **s,
                "round": k,
                "checkpoint": ctx.relative(ckpt),
                **sampling.as_dict(),
                "seed": seed,
            }
            for p, ss in zip(prompts, samples)
            for j, s in enumerate(ss)
        ]
        save_rows(rows, out / "data")
        meta.update(
            prompts=len(prompts),
            samples=len(rows),
            tokens=sum(x["num_tokens"] for x in rows),
            backend=r.generate.backend,
            request_errors=sum(bool(x.get("error")) for x in rows),
        )
