"""What a run ran on. The same recipe and seed give other numbers on another CPU's float kernels or another package
version, so every run directory keeps ``environment.json``: one entry per environment the run has been run in (a
resume on another machine adds one, from the round it continued at). ``report`` shows it and ``compare`` warns when
the two sides differ.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from selfimprove.core.files import write_json

ENV_FILE = "environment.json"
PACKAGES = (
    "selfimprove",
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "deepspeed",
    "peft",
    "numpy",
    "tokenizers",
    "vllm",
)
NOT_COMPARED = {"host", "from_round"}  # where and when, not what computed the numbers


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str:
    src = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("+modified" if dirty else "")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """This process's environment: code, interpreter, package versions, CPU/GPU, threads and devices."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "selfimprove_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "device_count": torch.cuda.device_count() if cuda else 0,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "host": platform.node(),
        "executable": sys.executable,
    }


def _comparable(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in NOT_COMPARED | {"executable"}}


def environments(run_dir: str | Path | None) -> list[dict]:
    path = Path(run_dir) / ENV_FILE if run_dir else None
    return json.loads(path.read_text()) if path and path.exists() else []


def run_environment(run_dir: str | Path | None) -> dict:
    """The latest environment a run ran in ({} for a folder that is not a run, or a run from before this file)."""
    entries = environments(run_dir)
    return entries[-1] if entries else {}


def record(run_dir: Path, from_round: int) -> None:
    """Add this process's environment to the run's list if it differs from the last one (written atomically)."""
    entries, now = environments(run_dir), {**describe(), "from_round": from_round}
    if entries and _comparable(entries[-1]) == _comparable(now):
        return
    write_json(Path(run_dir) / ENV_FILE, [*entries, now])


def differences(a: dict, b: dict) -> list[str]:
    """'field: A vs B' for every compared field that differs (nothing when either side is unknown)."""
    if not a or not b:
        return []
    out = []
    for key in sorted(set(_comparable(a)) | set(_comparable(b))):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [
                f"{key}.{k}: {va.get(k)} vs {vb.get(k)}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)
            ]
        elif va != vb:
            out.append(f"{key}: {va} vs {vb}")
    return out
