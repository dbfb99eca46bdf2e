"""Per-round metrics to experiment trackers, as ``report_to`` does in transformers: TensorBoard (event files in
RUN_DIR/tensorboard) and Weights & Biases, with the round as the step. Only numbers are sent."""

from __future__ import annotations

import hashlib
import numbers


def log_round(ctx, metrics: dict) -> None:
    targets = ctx.recipe.monitor.report_to
    if not targets:
        return
    k = metrics["round"]
    scalars = {key: float(v) for key, v in metrics.items()
               if key != "round" and isinstance(v, numbers.Number) and not isinstance(v, bool)}
    if "tensorboard" in targets:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("monitor.report_to has 'tensorboard': pip install tensorboard (or 'selfimprove[report]').") from err
        writer = SummaryWriter(log_dir=str(ctx.run_dir / "tensorboard"))
        for key, v in scalars.items():
            writer.add_scalar(key, v, global_step=k)
        writer.close()
    if "wandb" in targets:
        try:
            import wandb
        except ImportError as err:
            raise ImportError("monitor.report_to has 'wandb': pip install wandb.") from err
        run_id = hashlib.sha1(str(ctx.run_dir.resolve()).encode()).hexdigest()[:12]  # one W&B run per run directory
        run = wandb.init(project=ctx.recipe.monitor.wandb_project, name=ctx.run_dir.name, id=run_id, resume="allow",
                         dir=str(ctx.run_dir), config={"recipe_file": str(ctx.run_dir / "recipe.yaml")})
        run.log(scalars, step=k)
        run.finish()
