"""The GPU check: one command, at most 10 minutes on one GPU, that measures the real-model path and prints JSON.

    python scripts/gpu_check.py [--model /path/to/Qwen2.5-0.5B-Instruct] [--out gpu_check.json] [--budget-s 570]

It builds a Qwen2.5-0.5B-shaped Qwen2ForCausalLM from a config (random weights; or loads real weights from --model)
and measures, each part in its own process so GPU memory starts empty and peaks are per part:
  1. generation: HF ``model.generate`` tokens/s (greedy, fixed length); where vLLM is importable, vLLM's tokens/s on
     the same prompts and its engine start-up fresh vs kept (a second checkpoint loaded into the running engine in
     place, selfimprove's kept-engine path), otherwise one line saying why it was skipped;
  2. one shrunk but real training round of each method, TRL SFT, DPO (policy + reference) and GRPO (HF generation
     inside the trainer), bf16 under DeepSpeed ZeRO-2 (accelerate_configs/zero2.yaml with one process): trained
     tokens/s and model FLOPs utilisation;
  3. the peak GPU memory of every part (torch's allocator; vLLM's reservation for vLLM);
  4. the engine itself: one round of the shipped GRPO and self-rewarding DPO recipes (round 0 is SFT) with --smoke's
     tiny stand-ins, ZeRO-2 on this GPU and HF generation, with each stage's wall time and peak GPU memory from its
     meta.json (skipped, with the reason, when selfimprove's own dependencies are not importable).
A part whose library is missing is reported as skipped with the reason, one that fails with its error, and a part
that would start after ``--budget-s`` as skipped for time. MFU = model FLOPs per token x tokens/s / peak: 6N + 12 L H
S per trained token (PaLM's count; DPO adds 2N for the reference forward, GRPO 2N per generated token), against the
GPU's dense bf16 peak from its datasheet and against a measured bf16 matmul. Without a CUDA GPU it says so in one
line (exit status 2). Missing packages travel as wheels: scripts/gpu_wheels.py (docs/scaling.md says how), and the
numbers go to docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QWEN25_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}
PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 64, 128, 256
SEQ, BATCH, STEPS, WARMUP = 512, 8, 30, 10
GRPO_GROUP, GRPO_COMPLETION, GRPO_STEPS, GRPO_WARMUP = 4, 128, 8, 2


def build_model(out: Path, real: str = "") -> Path:
    """A Qwen2.5-0.5B-shaped folder (random bf16 weights, the --smoke BPE tokenizer), or ``real`` as it is."""
    if real:
        return Path(real)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from selfimprove.core.model import load_tokenizer
    from selfimprove.smoke import assets

    tok = load_tokenizer(str(assets.tokenizer_folder()))
    config = AutoConfig.for_model(
        "qwen2",
        **QWEN25_05B,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.pad_token_id,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


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


def matmul_tflops() -> float:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - start) / 1e12


# What each part imports beyond torch and transformers; a part whose modules are missing is skipped, not started.
NEEDS = {
    "hf": [],
    "vllm": ["vllm"],
    "sft": ["trl", "datasets"],
    "dpo": ["trl", "datasets"],
    "grpo": ["trl", "datasets"],
}


def _run_part(args: list[str], launcher: list[str] | None = None, timeout: float = 240) -> dict:
    """One part in its own process (optionally under ``accelerate launch``): its JSON result, or why it has none."""
    import importlib.util

    needs = NEEDS[args[0]] + (["deepspeed"] if launcher and "zero" in launcher[-1] else [])
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": "skipped", "reason": f"{', '.join(missing)} not installed in {sys.executable}"}
    out = Path(tempfile.mkstemp(prefix="gpu-check-", suffix=".json")[1])
    cmd = (launcher or [sys.executable]) + [str(Path(__file__).resolve()), "--part", *args, "--result", str(out)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    wall = round(time.perf_counter() - start, 1)
    if proc.returncode or not out.read_text():
        return {"status": "failed", "error": proc.stderr[-1500:], "wall_s": wall}
    return {"status": "ok", "wall_s": wall, **json.loads(out.read_text())}


def _accelerate(config: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
    ]


def zero2_one_gpu(folder: Path) -> Path:
    """accelerate_configs/zero2.yaml as shipped (ZeRO-2, bf16) for one process: the engine launches from a file."""
    import yaml

    config = yaml.safe_load((REPO / "accelerate_configs" / "zero2.yaml").read_text())
    path = folder / "zero2_1gpu.yaml"
    path.write_text(yaml.safe_dump({**config, "num_processes": 1}))
    return path


# A round of each method through the engine: the GRPO recipe (round 1 GRPO) and the self-rewarding recipe (round 1
# DPO); round 0 of both is SFT.
ROUND_RECIPES = {
    "grpo": "recipes/real/grpo_gsm8k_qwen2.5_0.5b.yaml",
    "dpo": "recipes/self_rewarding/tiny_cpu.yaml",
}


def missing_requirements() -> list[str]:
    """selfimprove's runtime dependencies (pyproject.toml) and DeepSpeed that this interpreter cannot find."""
    from importlib import metadata

    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    missing = []
    for line in project["dependencies"] + project["optional-dependencies"]["deepspeed"]:
        try:
            metadata.version(Requirement(line).name)
        except metadata.PackageNotFoundError:
            missing.append(Requirement(line).name)
    return missing


def run_rounds(recipe: str, config: Path, timeout: float) -> dict:
    """Rounds 0-1 of a shipped recipe with --smoke's tiny stand-ins, ZeRO-2 on this GPU and HF generation: each
    stage's wall time and peak GPU memory, from its meta.json."""
    missing = missing_requirements()
    if missing:
        return {"status": "skipped", "reason": f"selfimprove's dependencies missing here: {', '.join(missing)}"}
    run = Path(tempfile.mkdtemp(prefix="gpu-check-round-")) / "run"
    cmd = [
        sys.executable, "-m", "selfimprove", "run", str(REPO / recipe), "--smoke", "--rounds", "1",
        "--output_dir", str(run), "--generate.backend", "hf",
        "--train.launcher", "accelerate", "--train.accelerate_config", str(config),
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode:
        return {"status": "failed", "error": (proc.stdout + proc.stderr)[-1500:]}
    stages = {}
    for meta in sorted(run.glob("round_*/*/meta.json")):
        m = json.loads(meta.read_text())
        stages[f"{meta.parent.parent.name}/{meta.parent.name}"] = {
            "wall_s": round(m["wall_s"], 1),
            "peak_gpu_gb": m.get("peak_gpu_gb"),
            **({"generate_tokens": m["tokens"]} if "tokens" in m and meta.parent.name == "generate" else {}),
        }
    return {"status": "ok", "wall_s": round(time.perf_counter() - start, 1), "run_dir": str(run), "stages": stages}


def _part_main(args) -> None:
    """Inside a part's own process: write its result JSON."""
    if args.part == "hf":
        result = part_hf(args.model)
    elif args.part == "vllm":
        result = part_vllm(args.model)
    elif args.part == "grpo":
        result = part_train(args.model, "grpo", steps=GRPO_STEPS, warmup=GRPO_WARMUP)
    else:
        result = part_train(args.model, args.part)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps(result))


class Budget:
    """The check's time: a part that would start with less than ``floor`` seconds left is skipped, not started."""

    def __init__(self, seconds: float, floor: float = 30.0):
        self.end, self.floor = time.perf_counter() + seconds, floor

    def left(self) -> float:
        return self.end - time.perf_counter()

    def run(self, work, limit: float) -> dict:
        if self.left() < self.floor:
            return {"status": "skipped", "reason": f"out of the check's time budget ({self.left():.0f} s left)"}
        return work(min(limit, self.left()))


def summary(report: dict) -> list[str]:
    """The numbers a reader wants first, one line each (the JSON has everything)."""
    lines = [f"gpu_check on {report['gpu']}: bf16 matmul {report['matmul_bf16_tflops']} TFLOP/s"]
    for name, part in {**report["generation"], **report["training"]}.items():
        if not isinstance(part, dict):
            continue
        if part["status"] != "ok":
            lines.append(f"  {name}: {part['status']}: {part.get('reason') or part.get('error', '')[-200:]}")
            continue
        extra = f", MFU {part['mfu_vs_matmul']:.1%} of matmul" if "mfu_vs_matmul" in part else ""
        memory = part.get("peak_gpu_gb", part.get("gpu_reserved_gb"))
        lines.append(f"  {name}: {part['tokens_per_s']:,.0f} tokens/s{extra}, peak GPU memory {memory} GB")
        if "kept_engine" in part:
            k = part["kept_engine"]
            lines.append(
                f"  vllm engine: fresh start {k['fresh_start_s']} s, kept (in-place load) {k['kept_load_s']} s"
            )
    for method, part in report["rounds"].items():
        if part["status"] != "ok":
            lines.append(f"  {method} round: {part['status']}: {part.get('reason') or part.get('error', '')[-200:]}")
            continue
        for stage, m in part["stages"].items():
            lines.append(f"  {method} run {stage}: {m['wall_s']} s, peak GPU memory {m['peak_gpu_gb']} GB")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="",
        help="A local Qwen2.5-0.5B(-Instruct) folder (real weights); default: random weights of that shape.",
    )
    parser.add_argument("--out", default="gpu_check.json", help="Where to write the JSON (also printed).")
    parser.add_argument("--budget-s", type=float, default=570.0, help="Parts that would start after this are skipped.")
    parser.add_argument("--part", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        _part_main(args)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was measured.")
        return 2
    budget = Budget(args.budget_s)
    name = torch.cuda.get_device_name(0)
    model = str(build_model(Path(tempfile.mkdtemp(prefix="gpu-check-model-")), args.model))
    report = {
        "gpu": name,
        "torch": torch.__version__,
        "model": args.model or "Qwen2.5-0.5B shape, random weights",
        "matmul_bf16_tflops": round(matmul_tflops(), 1),
    }
    peak = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    part = lambda which, launcher=None: lambda limit: _run_part([which, "--model", model], launcher, limit)  # noqa: E731
    report["generation"] = {"hf": budget.run(part("hf"), 120), "vllm": budget.run(part("vllm"), 180)}
    hf, vl = report["generation"]["hf"], report["generation"]["vllm"]
    if hf["status"] == vl["status"] == "ok":
        report["generation"]["vllm_over_hf"] = round(vl["tokens_per_s"] / hf["tokens_per_s"], 2)
    zero2 = _accelerate("zero2.yaml")
    report["training"] = {f"{m}_zero2": budget.run(part(m, zero2), 150) for m in ("sft", "dpo", "grpo")}
    for result in report["training"].values():
        if result["status"] == "ok":
            result["mfu_vs_matmul"] = round(result["model_flops_per_s"] / (report["matmul_bf16_tflops"] * 1e12), 3)
            if peak:
                result["mfu_vs_datasheet"] = round(result["model_flops_per_s"] / (peak * 1e12), 3)
    config = zero2_one_gpu(Path(tempfile.mkdtemp(prefix="gpu-check-")))
    report["rounds"] = {
        method: budget.run(lambda limit, r=recipe: run_rounds(r, config, limit), 200)
        for method, recipe in ROUND_RECIPES.items()
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n".join(summary(report)))
    print(f"full report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
