"""What scripts/gpu_check.py measures, each function run in a process of its own (``gpu_check.py --part NAME``, under
``accelerate launch`` for training): HF and vLLM generation, selfimprove's kept vLLM engine, and TRL SFT, DPO and
GRPO steps. Each returns a dict of numbers; gpu_check.py adds the MFU, the budget and the report."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 64, 128, 256
SEQ, BATCH, STEPS, WARMUP = 512, 8, 30, 10
GRPO_GROUP, GRPO_COMPLETION, GRPO_STEPS, GRPO_WARMUP = 4, 128, 8, 2


def prompt_ids(vocab: int, n: int = PROMPTS, length: int = PROMPT_TOKENS) -> list[list[int]]:
    import numpy as np

    return np.random.default_rng(0).integers(100, min(vocab, 2000), (n, length)).tolist()


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _peak_gb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0.0


def part_hf(model_dir: str, new_tokens: int = NEW_TOKENS, prompts: int = PROMPTS) -> dict:
    """HF generate, greedy, every sequence exactly ``new_tokens`` long: generated tokens per second."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(_device()).eval()
    ids = torch.tensor(prompt_ids(model.config.vocab_size, prompts), device=_device())
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids[:2], **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    made = (out.shape[1] - ids.shape[1]) * out.shape[0]
    return {
        "tokens_per_s": round(made / seconds, 1),
        "generated_tokens": made,
        "seconds": round(seconds, 2),
        "peak_gpu_gb": _peak_gb(),
    }


def part_vllm(model_dir: str, new_tokens: int = NEW_TOKENS, prompts: int = PROMPTS) -> dict:
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=model_dir, dtype="bfloat16", gpu_memory_utilization=0.5, seed=0, max_model_len=2048)
    engine_s = time.perf_counter() - start
    params = SamplingParams(
        temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, detokenize=False
    )
    vocab = llm.llm_engine.model_config.get_vocab_size()
    requests = [{"prompt_token_ids": ids} for ids in prompt_ids(vocab, prompts)]
    llm.generate(requests[:2], SamplingParams(max_tokens=8, detokenize=False))  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(requests, params)
    seconds = time.perf_counter() - start
    made = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    import torch

    free, total = torch.cuda.mem_get_info()
    llm.llm_engine.engine_core.shutdown()
    return {
        "tokens_per_s": round(made / seconds, 1),
        "generated_tokens": made,
        "seconds": round(seconds, 2),
        "engine_start_s": round(engine_s, 1),
        "gpu_reserved_gb": round((total - free) / 2**30, 2),
        "kept_engine": kept_vs_fresh(model_dir),
    }


def kept_vs_fresh(model_dir: str) -> dict:
    """selfimprove's kept engine (this interpreter as the vLLM environment): its first call starts vLLM, the second
    loads another checkpoint folder of the same architecture into it in place, as each round does."""
    import shutil

    from selfimprove.backends.hf import Sampling
    from selfimprove.backends.vllm_engine import ENGINE_ENV, KeptEngine, vllm_generate
    from selfimprove.core.config import VLLMConfig

    second = Path(tempfile.mkdtemp(prefix="gpu-check-ckpt-")) / "model"
    shutil.copytree(model_dir, second)
    engine = KeptEngine(sys.executable, Path(tempfile.mkdtemp(prefix="gpu-check-")) / "engine.log")
    os.environ[ENGINE_ENV] = json.dumps(engine.address)
    cfg = VLLMConfig(python=sys.executable, dtype="bfloat16", gpu_memory_utilization=0.4, max_model_len=2048)
    prompts, stats = prompt_ids(151_000, 8), []
    try:
        for folder in (model_dir, str(second)):
            stats.append({})
            vllm_generate(cfg, folder, prompts, Sampling(max_new_tokens=32), 0, stats[-1])
    finally:
        os.environ.pop(ENGINE_ENV)
        engine.close()
    (fresh, kept) = stats
    return {
        "fresh_start_s": round(fresh["engine_start_s"], 1),
        "kept_load_s": round(kept["load_s"], 2),
        "modes": [fresh["engine"]["mode"], kept["engine"]["mode"]],
    }


def _training_rows(n: int, seq: int) -> list[dict]:
    """Prompt/answer text pairs about ``seq`` tokens long, from the --smoke stand-in data."""
    import numpy as np

    from selfimprove.smoke.data import gsm8k_row, ultrafeedback_row

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        parts = [gsm8k_row(rng)["answer"] for _ in range(seq // 24)]
        bad = ultrafeedback_row(rng)["rejected"][-1]["content"]
        rows.append(
            {
                "prompt": gsm8k_row(rng)["question"],
                "completion": " ".join(parts),
                "chosen": " ".join(parts),
                "rejected": " ".join([bad] * (seq // 8)),
            }
        )
    return rows


class _StepTimer:
    """Times optimizer steps after the warm-up ones (compilation, allocator growth)."""

    def __new__(cls, warmup: int):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.warmup, self.start, self.steps = warmup, None, 0

            def on_step_end(self, args, state, control, **kw):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == self.warmup:
                    self.start = time.perf_counter()
                elif state.global_step > self.warmup:
                    self.steps = state.global_step - self.warmup

            def seconds(self) -> float:
                return time.perf_counter() - self.start

        return Timer()


def _sft_trainer(model, tok, rows: list[dict], common: dict, seq: int, batch: int, timer):
    """TRL's SFTTrainer on the rows (completion-only loss), and the real tokens of one step's batch."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.core.prompts import PromptFormat
    from selfimprove.stages.train import tokenize_rows

    data = Dataset.from_dict(tokenize_rows(rows, tok, PromptFormat(chat=True)))
    data = data.map(lambda r: {k: v[:seq] for k, v in r.items()})
    args = SFTConfig(**common, completion_only_loss=True, max_length=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[timer])
    return trainer, sum(len(x) for x in data["input_ids"][:batch])


def _dpo_trainer(model, ref, tok, rows: list[dict], common: dict, seq: int, batch: int, timer):
    """TRL's DPOTrainer on the rows' (prompt, chosen, rejected), and the real tokens of one step's batch."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(**common, max_length=seq)
    trainer = DPOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok, callbacks=[timer]
    )
    tokens = sum(
        min(len(tok(r["prompt"] + r[side])["input_ids"]), seq) for r in rows[:batch] for side in ("chosen", "rejected")
    )
    return trainer, tokens


def part_train(
    model_dir: str, method: str, steps: int = STEPS, warmup: int = WARMUP, seq: int = SEQ, batch: int = BATCH
) -> dict:
    """TRL SFT, DPO or GRPO on this process's device(s), bf16 on GPU: trained tokens per second after the warm-up
    steps (GRPO: also generated tokens per second; its steps include sampling the groups)."""
    import torch
    from transformers import AutoModelForCausalLM

    from selfimprove.core.model import load_tokenizer
    from selfimprove.core.trainer_args import checkpointing_args

    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu else torch.float32
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    params = model.num_parameters()  # before ZeRO-3 shards it
    rows = _training_rows(batch * (steps + 1), seq)
    common = dict(
        output_dir=tempfile.mkdtemp(prefix="gpu-check-"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-5,
        logging_steps=steps,
        save_strategy="no",
        report_to=[],
        bf16=gpu,
        use_cpu=not gpu,
        disable_tqdm=True,
        dataloader_drop_last=True,
        **checkpointing_args(method, False),
    )
    timer = _StepTimer(warmup)
    generated = 0.0
    if method == "sft":
        trainer, tokens_per_step = _sft_trainer(model, tok, rows, common, seq, batch, timer)
    elif method == "dpo":
        ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        trainer, tokens_per_step = _dpo_trainer(model, ref, tok, rows, common, seq, batch, timer)
    else:
        trainer = _grpo_trainer(model, tok, rows, {**common, "logging_steps": 1}, batch, timer)
    trainer.train()
    seconds = timer.seconds()
    world = trainer.accelerator.num_processes
    if method == "grpo":  # TRL counts the prompt + completion tokens it trains on, and the completions' lengths
        logs = [e for e in trainer.state.log_history if "num_tokens" in e]
        tokens = logs[-1]["num_tokens"] - logs[warmup - 1]["num_tokens"]
        generated = sum(e["completions/mean_length"] for e in logs[warmup:]) * batch * world
        tokens_per_s = tokens / seconds
    else:
        tokens_per_s = tokens_per_step * world * timer.steps / seconds
    cfg = model.config
    flops = (6 + 2 * (method == "dpo")) * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        **({"generated_tokens_per_s": round(generated / seconds, 1)} if method == "grpo" else {}),
        "timed_steps": timer.steps,
        "seconds": round(seconds, 2),
        "world_size": world,
        "parameters": params,
        "model_flops_per_s": flops * tokens_per_s + 2 * params * generated / seconds,
        "peak_gpu_gb": _peak_gb(),
    }


def _grpo_trainer(model, tok, rows: list[dict], common: dict, batch: int, timer):
    """TRL's GRPOTrainer on the rows' prompts, groups of GRPO_GROUP sampled with HF generate inside the trainer. The
    reward (completion length) is arbitrary: the part measures throughput, not learning."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    data = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    args = GRPOConfig(**common, num_generations=GRPO_GROUP, max_completion_length=GRPO_COMPLETION)
    return GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [len(c) / 100 for c in completions],
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[timer],
    )
