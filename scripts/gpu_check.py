"""The GPU check: one command, at most 10 minutes on one GPU, that measures the real-model path and prints JSON.

    python scripts/gpu_check.py [--model /path/to/Qwen2.5-0.5B-Instruct] [--out gpu_check.json] [--budget-s 570]

It builds a Qwen2.5-0.5B-shaped Qwen2ForCausalLM from a config (random weights; or loads real weights from --model)
and measures, each part in its own process so GPU memory starts empty and peaks are per part (the measuring functions
are in gpu_check_parts.py beside it; this file builds the model, runs the parts and reports):
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

from gpu_check_parts import GRPO_STEPS, GRPO_WARMUP, part_hf, part_train, part_vllm

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
