"""Per-round metrics to experiment trackers, as ``report_to`` does in transformers: TensorBoard (event files in
RUN_DIR/tensorboard) and Weights & Biases, with the round as the step. Only numbers are sent."""

from __future__ import annotations

import hashlib
import numbers
import os
import shutil
from pathlib import Path

from selfimprove.core.errors import MissingExtra
from selfimprove.core.rundir import RunContext


def _scalars(metrics: dict) -> dict:
    return {
        key: float(v)
        for key, v in metrics.items()
        if key != "round" and isinstance(v, numbers.Number) and not isinstance(v, bool)
    }


def write_tensorboard(run_dir: Path, rows: list[dict]) -> None:
    """RUN_DIR/tensorboard, rewritten from every completed round: a round is never lost across a kill and never
    logged twice when ``selfimprove monitor`` recomputes (one event file, replaced whole)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise MissingExtra(
            "monitor.report_to has 'tensorboard': pip install tensorboard (or 'selfimprove[tracking]')."
        ) from err
    final, scratch = run_dir / "tensorboard", run_dir / "tensorboard.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(scratch))
    for m in rows:
        for key, v in _scalars(m).items():
            writer.add_scalar(key, v, global_step=m["round"])
    writer.close()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scratch, final)


def log_round(ctx: RunContext, metrics: dict, rows: list[dict]) -> None:
    """Send a finished round to the trackers; ``rows`` are all completed rounds' metrics (metrics.jsonl)."""
    targets = ctx.recipe.monitor.report_to
    if not targets:
        return
    k = metrics["round"]
    scalars = _scalars(metrics)
    if "tensorboard" in targets:
        write_tensorboard(ctx.run_dir, rows)
    if "wandb" in targets:
        try:
            import wandb
        except ImportError as err:
            raise MissingExtra("monitor.report_to has 'wandb': pip install wandb.") from err
        run_id = hashlib.sha1(str(ctx.run_dir.resolve()).encode()).hexdigest()[:12]  # one W&B run per run directory
        run = wandb.init(
            project=ctx.recipe.monitor.wandb_project,
            name=ctx.run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(ctx.run_dir),
            config={"recipe_file": str(ctx.run_dir / "recipe.yaml")},
        )
        run.log(scalars, step=k)
        run.finish()
