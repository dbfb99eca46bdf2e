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
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: it imports gpu_check_parts beside it
        sys.path.insert(0, str(SCRIPT.parent))
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
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stdout.startswith("gpu_check: no CUDA GPU is visible") and proc.stdout.count("\n") == 1


@pytest.mark.unit
def test_generation_and_training_parts_at_tiny_size(gpu_check, tiny_real):
    model = tiny_real("qwen2")
    hf = gpu_check.part_hf(model, new_tokens=6, prompts=3)
    assert hf["generated_tokens"] == 18 and hf["tokens_per_s"] > 0  # exactly new_tokens per prompt, EOS ignored
    for method in ("sft", "dpo", "grpo"):
        out = gpu_check.part_train(model, method, steps=3, warmup=1, seq=48, batch=4)
        assert out["timed_steps"] == 2 and out["tokens_per_s"] > 0 and out["world_size"] == 1
        assert out["model_flops_per_s"] > (6 + 2 * (method == "dpo")) * out["parameters"] * out["tokens_per_s"] * 0.99
    assert out["generated_tokens_per_s"] > 0  # GRPO's steps sample its groups


@pytest.mark.e2e
def test_a_part_runs_in_its_own_accelerate_process(gpu_check, tiny_real):
    out = gpu_check._run_part(["sft", "--model", tiny_real("qwen2")], gpu_check._accelerate("single_process.yaml"))
    assert out["status"] == "ok", out
    parts = sys.modules["gpu_check_parts"]
    assert out["world_size"] == 1 and out["timed_steps"] == parts.STEPS - parts.WARMUP
    missing = gpu_check._run_part(["vllm", "--model", tiny_real("qwen2")])
    if importlib.util.find_spec("vllm") is None:
        assert missing == {"status": "skipped", "reason": f"vllm not installed in {sys.executable}"}


@pytest.mark.unit
def test_budget_skips_parts_that_would_start_too_late_and_the_summary_says_why(gpu_check, tmp_path):
    import yaml

    budget = gpu_check.Budget(seconds=100, floor=30)
    assert budget.run(lambda limit: {"status": "ok", "limit": limit}, 40)["limit"] == 40  # capped by the part's own
    late = gpu_check.Budget(seconds=10, floor=30).run(lambda limit: pytest.fail("started"), 40)
    assert late["status"] == "skipped" and "time budget" in late["reason"]
    assert gpu_check.missing_requirements() == []  # this venv has everything the engine rounds import
    config = yaml.safe_load(gpu_check.zero2_one_gpu(tmp_path).read_text())
    assert config["num_processes"] == 1 and config["deepspeed_config"]["zero_stage"] == 2
    report = {
        "gpu": "H100",
        "matmul_bf16_tflops": 700.0,
        "generation": {"hf": {"status": "ok", "tokens_per_s": 1234.5, "peak_gpu_gb": 2.1}, "vllm": late},
        "training": {"grpo_zero2": {"status": "ok", "tokens_per_s": 99.0, "mfu_vs_matmul": 0.1, "peak_gpu_gb": 9.0}},
        "rounds": {"dpo": {"status": "ok", "stages": {"round_01/train": {"wall_s": 12.0, "peak_gpu_gb": 3.5}}}},
    }
    lines = gpu_check.summary(report)
    assert "  hf: 1,234 tokens/s, peak GPU memory 2.1 GB" in lines
    assert any(line.startswith("  vllm: skipped: out of the check's time budget") for line in lines)
    assert "  grpo_zero2: 99 tokens/s, MFU 10.0% of matmul, peak GPU memory 9.0 GB" in lines
    assert "  dpo run round_01/train: 12.0 s, peak GPU memory 3.5 GB" in lines


@pytest.mark.e2e
def test_an_engine_round_reports_each_stage(gpu_check):
    """The engine part as the GPU runs it, here with the single-process config on CPU (no GPU: no peak memory)."""
    out = gpu_check.run_rounds(gpu_check.ROUND_RECIPES["dpo"], REPO / "accelerate_configs" / "single_process.yaml", 600)
    assert out["status"] == "ok", out
    stages = out["stages"]
    assert {"round_00/train", "round_01/generate", "round_01/judge", "round_01/train"} <= set(stages)
    assert stages["round_01/generate"]["generate_tokens"] > 0 and stages["round_01/train"]["peak_gpu_gb"] is None


@pytest.fixture(scope="module")
def gpu_wheels():
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "scripts" / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_wheel_helper_walks_requirements_for_the_gpu_machine_and_packs_carries(gpu_wheels, tmp_path):
    requires = [
        "numpy>=1.17",
        'pywin32; sys_platform == "win32"',  # not on Linux
        'tomli; python_version < "3.11"',  # not on 3.12
        'deepspeed>=0.14; extra == "deepspeed"',  # an extra nobody asked for
        'Typing-Extensions; python_version >= "3.12"',
    ]
    assert gpu_wheels.requirement_names(requires) == ["numpy", "typing-extensions"]
    assert gpu_wheels.requirement_names(requires, ("deepspeed",))[-2] == "deepspeed"
    there = gpu_wheels.assumed_there()
    assert {"torch", "accelerate", "peft", "safetensors"} <= there and "transformers" not in there  # ours is newer
    assert {"trl", "datasets", "scipy", "rapidfuzz", "deepspeed"} <= set(
        map(str.lower, gpu_wheels.project_requirements())
    )
    sizes = {"a": 50, "b": 40, "c": 30, "d": 10, "e": 5}
    wheels = []
    for name, mib in sizes.items():
        (tmp_path / f"{name}.whl").write_bytes(b"\0" * mib * 1024)
        wheels.append(tmp_path / f"{name}.whl")
    packed = gpu_wheels.carries(wheels, 60 * 1024)
    assert [[w.stem for w in c] for c in packed] == [["a", "d"], ["b", "e"], ["c"]]  # largest first, first fit
    with pytest.raises(SystemExit, match="larger than one carry"):
        gpu_wheels.carries(wheels, 45 * 1024)
