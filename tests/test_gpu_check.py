"""scripts/gpu_check.py: without a GPU it exits at once with a message; its measuring parts run on CPU at tiny size,
so the script a GPU machine will run is exercised here (its numbers are only meaningful on a GPU)."""

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
def test_exits_at_once_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU is visible" in proc.stderr and proc.stdout == ""


@pytest.mark.unit
def test_generation_and_training_parts_at_tiny_size(gpu_check, tiny_real):
    model = tiny_real("qwen2")
    hf = gpu_check.part_hf(model, new_tokens=6, prompts=3)
    assert hf["generated_tokens"] == 18 and hf["tokens_per_s"] > 0  # exactly new_tokens per prompt, EOS ignored
    for method in ("sft", "dpo"):
        out = gpu_check.part_train(model, method, steps=3, warmup=1, seq=48, batch=2)
        assert out["timed_steps"] == 2 and out["tokens_per_s"] > 0 and out["world_size"] == 1
        assert out["model_flops_per_s"] > (6 + 2 * (method == "dpo")) * out["parameters"] * out["tokens_per_s"] * 0.99


@pytest.mark.e2e
def test_a_part_runs_in_its_own_accelerate_process(gpu_check, tiny_real):
    out = gpu_check._run_part(["sft", "--model", tiny_real("qwen2")], gpu_check._accelerate("single_process.yaml"))
    assert out["status"] == "ok", out
    assert out["world_size"] == 1 and out["timed_steps"] == gpu_check.STEPS - gpu_check.WARMUP
    missing = gpu_check._run_part(["vllm", "--model", tiny_real("qwen2")])
    if importlib.util.find_spec("vllm") is None:
        assert missing["status"] == "skipped" and "vllm is not installed" in missing["reason"]
