"""Where a round's time goes. Model-bound compute (sampling or scoring with a model, training steps) is what a round
cannot do without; the rest of its wall time (setup of each stage, model loading, tokenisation, saving, the
light stages, the orchestrator between stages) is the engine's overhead, ``time/overhead_s``.

Each model-bound call adds its seconds to this process's total (``compute``); a stage records the total it spent as
``compute_s`` in its meta (``recorded``), and the orchestrator writes round_KK/timing.json from the metas and the
round's wall time (``round_timing``), which metrics.jsonl merges into the round's line.
"""

from __future__ import annotations

import contextlib
import sys
import time

_spent = [0.0]  # this process's model-bound seconds since the last take()

FILE = "timing.json"  # in round_KK/, beside the stage folders


@contextlib.contextmanager
def compute():
    """Count the block as model-bound compute."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _spent[0] += time.perf_counter() - start


def add(seconds: float) -> None:
    """Model-bound seconds measured elsewhere (a vLLM worker's generation time)."""
    _spent[0] += seconds


def take() -> float:
    spent, _spent[0] = _spent[0], 0.0
    return round(spent, 3)


@contextlib.contextmanager
def recorded(meta: dict):
    """The model-bound compute of the block, as ``meta['compute_s']``, and on a GPU the peak memory torch allocated
    on this process's device during it, as ``meta['peak_gpu_gb']`` (a vLLM engine's is in its own process)."""
    take()
    cuda = _cuda()
    if cuda:
        cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        meta["compute_s"] = take()
        if cuda:
            meta["peak_gpu_gb"] = round(cuda.max_memory_allocated() / 2**30, 3)


def _cuda():
    """torch.cuda when this process has loaded torch and sees a GPU; None otherwise (no import just to look)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


def round_timing(metas: dict[str, dict], wall_s: float, complete: bool, setup_s: float | None = None) -> dict:
    """A round's time metrics from its stages' metas (``wall_s``, ``compute_s``; training's ``train_runtime_s``) and
    the wall time this process spent on it. Overhead is known only for a ``complete`` round (no stage of it was
    done before this process started it): a resumed round reports its stages' times only."""
    out = {f"time/{name}_s": m["wall_s"] for name, m in metas.items()}
    compute_s = sum(m.get("compute_s", 0.0) + m.get("train_runtime_s", 0.0) for m in metas.values())
    out["time/compute_s"] = round(compute_s, 3)
    if setup_s is not None:
        out["time/setup_s"] = round(setup_s, 3)
    if complete:
        out["time/round_s"] = round(wall_s, 3)
        out["time/between_stages_s"] = round(wall_s - sum(m["wall_s"] for m in metas.values()), 3)
        out["time/overhead_s"] = round(wall_s - compute_s, 3)
        out["time/overhead_share"] = round((wall_s - compute_s) / wall_s, 4) if wall_s > 0 else 0.0
    else:
        out["time/resumed"] = 1
    return out
