"""Any OpenAI-compatible server (`vllm serve`, SGLang, TGI, hosted APIs) through the official ``openai`` client.

One request per sample, each with its own seed (seed, prompt, sample), so a server that honours seeds (vLLM does)
reproduces a redone stage. Requests run concurrently under a semaphore (``concurrency``); the client retries
connection errors, 408/409/429 and 5xx with exponential backoff (``max_retries``) and gives each try ``timeout_s``.
A request that still fails is counted, not fatal: its sample comes back empty, unfinished, with the error text.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

from selfimprove.core import timing
from selfimprove.core.config import OpenAIConfig
from selfimprove.core.errors import MissingExtra
from selfimprove.core.seeding import child_seed

SERVER_ERRORS = (urllib.error.URLError, OSError, ValueError, KeyError)  # nothing usable answered GET /models


def served_models(base_url: str, api_key: str = "EMPTY", timeout: float = 10.0) -> list[str]:
    """The model names ``GET base_url/models`` lists; raises one of SERVER_ERRORS when nothing usable answers."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return [m["id"] for m in json.load(resp)["data"]]


def _client(cfg: OpenAIConfig):
    try:
        from openai import AsyncOpenAI
    except ImportError as err:
        raise MissingExtra(
            "generation backend 'openai' needs the openai client: pip install 'selfimprove[serve]'."
        ) from err
    return AsyncOpenAI(
        base_url=cfg.base_url,
        api_key=os.environ.get(cfg.api_key_env, "EMPTY"),
        max_retries=cfg.max_retries,
        timeout=cfg.timeout_s,
    )


async def _one(
    client, cfg: OpenAIConfig, model: str, prompt: str | list[dict], sampling, seed: int, gate: asyncio.Semaphore
) -> dict:
    extra = {"top_k": sampling.top_k} if sampling.top_k else {}
    common = dict(
        model=model,
        max_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=seed,
        extra_body=extra or None,
    )
    async with gate:
        try:
            if cfg.api == "chat":
                out = await client.chat.completions.create(messages=prompt, **common)
                choice, text = out.choices[0], out.choices[0].message.content or ""
            else:
                out = await client.completions.create(prompt=prompt, **common)
                choice, text = out.choices[0], out.choices[0].text
        except Exception as err:  # after the client's own retries: count it, keep the round going
            return {"completion": "", "finished": False, "num_tokens": 0, "error": f"{type(err).__name__}: {err}"[:500]}
    tokens = out.usage.completion_tokens if out.usage else len(text.split())
    return {"completion": text, "finished": choice.finish_reason == "stop", "num_tokens": tokens, "error": ""}


async def _all(cfg: OpenAIConfig, model: str, prompts: list, sampling, seed: int) -> list[list[dict]]:
    client, gate = _client(cfg), asyncio.Semaphore(cfg.concurrency)
    try:
        jobs = [
            _one(client, cfg, model, p, sampling, child_seed(seed, i, j), gate)
            for i, p in enumerate(prompts)
            for j in range(sampling.num_samples)
        ]
        flat = await asyncio.gather(*jobs)
    finally:
        await client.close()
    n = sampling.num_samples
    return [list(flat[i * n : (i + 1) * n]) for i in range(len(prompts))]


def openai_generate(cfg: OpenAIConfig, model_path: str, prompts: list, sampling, seed: int) -> list[list[dict]]:
    """``cfg`` is an OpenAIConfig; the served model name is ``cfg.model``, else the checkpoint path. Each prompt is a
    text (``api: completions``) or a list of chat messages (``api: chat``)."""
    with timing.compute():  # the server's model time, seen from here
        return asyncio.run(_all(cfg, cfg.model or model_path, prompts, sampling, seed))
