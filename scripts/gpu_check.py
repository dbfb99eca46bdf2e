"""The GPU check: one command, about 8 minutes on one GPU, that measures the real-model path and prints JSON.

    python scripts/gpu_check.py [--model /path/to/Qwen2.5-0.5B-Instruct] [--out gpu_check.json]

It builds a Qwen2.5-0.5B-shaped Qwen2ForCausalLM from a config (random weights; or loads real weights from --model)
and measures, each part in its own process so GPU memory starts empty and peaks are per part:
  1. generation, HF ``model.generate`` vs vLLM on the same prompts (token ids, greedy, fixed length): tokens/s;
  2. training with bf16 on one GPU through ``accelerate launch``: TRL SFT tokens/s and MFU, plain and under DeepSpeed
     ZeRO-2 and ZeRO-3 (the repo's configs with --num_processes 1), and TRL DPO (policy + reference);
  3. peak GPU memory of every part;
  4. a 2-round STaR loop at small scale through the engine itself: ``selfimprove run`` on the shipped STaR recipe
     with --smoke's tiny stand-ins, vLLM generation and ``accelerate launch`` training on this GPU.
A part whose library is missing (vLLM, DeepSpeed) is reported as skipped with the reason; one that fails, with its
error. MFU = model FLOPs per token x tokens/s / peak: 6N + 12 L H S per trained token (PaLM's count; DPO adds 2N for
the reference forward), against the GPU's dense bf16 peak from its datasheet and against a measured bf16 matmul.
Without a CUDA GPU it exits at once (status 2) with a message. Measured numbers go to docs/scaling.md.
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
    return {
        "tokens_per_s": round(made / seconds, 1),
        "generated_tokens": made,
        "seconds": round(seconds, 2),
        "engine_start_s": round(engine_s, 1),
        "gpu_reserved_gb": round((total - free) / 2**30, 2),
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
    """TRL SFT or DPO on this process's device(s), bf16 on GPU: trained tokens per second after the warm-up steps."""
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
    if method == "sft":
        trainer, tokens_per_step = _sft_trainer(model, tok, rows, common, seq, batch, timer)
    else:
        ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        trainer, tokens_per_step = _dpo_trainer(model, ref, tok, rows, common, seq, batch, timer)
    trainer.train()
    seconds = timer.seconds()
    world = trainer.accelerator.num_processes
    tokens_per_s = tokens_per_step * world * timer.steps / seconds
    cfg = model.config
    flops = (6 + 2 * (method == "dpo")) * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "timed_steps": timer.steps,
        "seconds": round(seconds, 2),
        "world_size": world,
        "parameters": params,
        "model_flops_per_s": flops * tokens_per_s,
        "peak_gpu_gb": _peak_gb(),
    }


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


def _run_part(args: list[str], launcher: list[str] | None = None, timeout: int = 240) -> dict:
    """One part in its own process (optionally under ``accelerate launch``): its JSON result, or why it has none."""
    out = Path(tempfile.mkstemp(prefix="gpu-check-", suffix=".json")[1])
    cmd = (launcher or [sys.executable]) + [str(Path(__file__).resolve()), "--part", *args, "--result", str(out)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout} s"}
    wall = round(time.perf_counter() - start, 1)
    if proc.returncode == 3:
        return {"status": "skipped", "reason": proc.stderr.strip().splitlines()[-1], "wall_s": wall}
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


def run_loop(timeout: int = 300) -> dict:
    """The engine's own path: 2 STaR rounds with --smoke stand-ins, vLLM generation, accelerate training on this GPU."""
    run = Path(tempfile.mkdtemp(prefix="gpu-check-star-")) / "run"
    cmd = [
        sys.executable,
        "-m",
        "selfimprove",
        "run",
        str(REPO / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml"),
        "--smoke",
        "--output_dir",
        str(run),
        "--train.accelerate_config",
        "accelerate_configs/single_process.yaml",
    ]
    env = {**os.environ, "SELFIMPROVE_VLLM_PYTHON": sys.executable}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout} s"}
    if proc.returncode:
        return {"status": "failed", "error": proc.stderr[-1500:]}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keep = ("eval/accuracy/id", "quality/selected", "quality/pseudo_label_accuracy", "time/generate_s", "time/train_s")
    return {
        "status": "ok",
        "wall_s": round(time.perf_counter() - start, 1),
        "run_dir": str(run),
        "rounds": [{k: m.get(k) for k in ("round", *keep)} for m in metrics],
    }


def _part_main(args) -> None:
    """Inside a part's own process: write its result JSON, or exit 3 with the reason it cannot run."""
    import importlib.util

    need = {"vllm": "vllm", "sft_zero2": "deepspeed", "sft_zero3": "deepspeed"}.get(args.part)
    for module in filter(None, [need, "trl"] if args.part != "hf" else []):
        if importlib.util.find_spec(module) is None:
            print(f"{module} is not installed in {sys.executable}", file=sys.stderr)
            raise SystemExit(3)
    if args.part == "hf":
        result = part_hf(args.model)
    elif args.part == "vllm":
        result = part_vllm(args.model)
    else:
        result = part_train(args.model, "dpo" if args.part == "dpo" else "sft")
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="",
        help="A local Qwen2.5-0.5B(-Instruct) folder (real weights); default: random weights of that shape.",
    )
    parser.add_argument("--out", default="gpu_check.json", help="Where to write the JSON (also printed).")
    parser.add_argument("--part", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        _part_main(args)
        return 0
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False). Run it on a GPU machine; "
            "nothing was measured.",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name(0)
    model = str(build_model(Path(tempfile.mkdtemp(prefix="gpu-check-model-")), args.model))
    report = {
        "gpu": name,
        "torch": torch.__version__,
        "model": args.model or "Qwen2.5-0.5B shape, random weights",
        "matmul_bf16_tflops": round(matmul_tflops(), 1),
    }
    peak = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    report["generation"] = {"hf": _run_part(["hf", "--model", model]), "vllm": _run_part(["vllm", "--model", model])}
    hf, vl = report["generation"]["hf"], report["generation"]["vllm"]
    if hf["status"] == vl["status"] == "ok":
        report["generation"]["vllm_over_hf"] = round(vl["tokens_per_s"] / hf["tokens_per_s"], 2)
    report["training"] = {
        "sft_plain": _run_part(["sft", "--model", model], _accelerate("single_process.yaml")),
        "sft_zero2": _run_part(["sft_zero2", "--model", model], _accelerate("zero2.yaml")),
        "sft_zero3": _run_part(["sft_zero3", "--model", model], _accelerate("zero3.yaml")),
        "dpo_plain": _run_part(["dpo", "--model", model], _accelerate("single_process.yaml")),
    }
    for part in report["training"].values():
        if part["status"] == "ok":
            part["mfu_vs_matmul"] = round(part["model_flops_per_s"] / (report["matmul_bf16_tflops"] * 1e12), 3)
            if peak:
                part["mfu_vs_datasheet"] = round(part["model_flops_per_s"] / (peak * 1e12), 3)
    report["star_loop"] = run_loop()
    text = json.dumps(report, indent=2)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
