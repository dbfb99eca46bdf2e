"""The orchestrator: setup once, then round 0 (bootstrap) and rounds 1..R, each stage skipped when already done.

Stages hand over through the run directory only, so any stage can run in another process: training runs in-process
by default (cheapest for one CPU process) or as ``accelerate launch -m selfimprove.train`` with ``train.launcher:
accelerate``, which also frees all training memory before the next stage starts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from selfimprove.alarms import should_stop
from selfimprove.config import recipe_from_dict, recipe_to_dict
from selfimprove.evaluate import run_evaluate
from selfimprove.filtering import run_filter
from selfimprove.generate import run_generate
from selfimprove.judge import run_judge
from selfimprove.monitor import run_monitor
from selfimprove.rundir import LAUNCHED_ENV, RunContext, atomic_stage, in_launched_job, is_done, save_rows
from selfimprove.selection import run_select
from selfimprove.tasks import rng_for
from selfimprove.train import run_train

logger = logging.getLogger(__name__)

STAGES = {"generate": run_generate, "judge": run_judge, "filter": run_filter, "select": run_select,
          "train": run_train, "evaluate": run_evaluate, "monitor": run_monitor}
ROUND0_STAGES = ("train", "evaluate", "monitor")
PROBE_STREAM = 5


class RecipeMismatch(ValueError):
    pass


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def open_run(run_dir: str | Path) -> RunContext:
    """Reopen an existing run from its saved recipe."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no recipe.yaml). Start it with 'selfimprove run RECIPE'.")
    return RunContext(recipe_from_dict(yaml.safe_load(path.read_text())), run_dir)


# Where things are, not what they do: a run may move, and a server may move, without changing a sample.
LOCATION_KEYS = ("rounds:", "output_dir:", "generate.openai.base_url:", "judge.llm.openai.base_url:")


def start_run(recipe, allow_recipe_change: bool = False, note: str = "") -> RunContext:
    """Create the run directory, or check that an existing one was made by the same recipe.

    ``rounds`` may grow (extending a run), and ``output_dir`` and server URLs may differ (a moved run directory or
    server). ``note`` becomes the saved recipe's comment header (e.g. the --smoke substitutions)."""
    run_dir = Path(recipe.output_dir)
    saved = run_dir / "recipe.yaml"
    new = recipe_to_dict(recipe)
    if saved.exists():
        changes = [c for c in _diff(yaml.safe_load(saved.read_text()), new) if not c.startswith(LOCATION_KEYS)]
        if changes and not allow_recipe_change:
            raise RecipeMismatch(
                f"{run_dir} was started with a different recipe:\n  " + "\n  ".join(changes)
                + "\nResume with the original recipe, choose a new output_dir, or pass --allow-recipe-change to continue anyway.")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    header = "".join(f"# {line}\n" for line in note.splitlines())
    tmp.write_text(header + yaml.safe_dump(new, sort_keys=False))
    os.replace(tmp, saved)
    return RunContext(recipe, run_dir)


def setup(ctx: RunContext) -> None:
    """Make the base model, the fixed eval sets, the probe set and the seed data, once per run."""
    from selfimprove.model import prepare_base_model

    if ctx.recipe.monitor.embedding:  # fail now, not after hours of rounds
        from selfimprove.embedding import embedder_path

        embedder_path(ctx.recipe.monitor.embedder)

    if ctx.recipe.model.path is None and not is_done(ctx.run_dir / "base_model"):
        with atomic_stage(ctx.run_dir / "base_model") as (out, meta):
            meta.update(prepare_base_model(ctx.recipe, ctx.task, out))
    if not is_done(ctx.run_dir / "eval_sets"):
        with atomic_stage(ctx.run_dir / "eval_sets") as (out, meta):
            rows = ctx.task.eval_sets()
            save_rows(rows, out / "data")
            meta["rows"] = len(rows)
    if ctx.recipe.monitor.probe_size and not is_done(ctx.run_dir / "probe_set"):
        with atomic_stage(ctx.run_dir / "probe_set") as (out, meta):
            rows = ctx.eval_rows()
            pick = rng_for(ctx.recipe.seed, PROBE_STREAM).permutation(len(rows))[: ctx.recipe.monitor.probe_size]
            save_rows([rows[i] for i in sorted(pick)], out / "data")
            meta["rows"] = len(pick)
    if not is_done(ctx.run_dir / "seed_data"):
        exclude = {r["prompt"] for r in ctx.eval_rows()}
        seed_rows = [{**r, "round": 0} for r in ctx.task.seed_data(exclude)]
        with atomic_stage(ctx.run_dir / "seed_data") as (out, meta):
            save_rows(seed_rows, out / "data")
            meta["rows"] = len(seed_rows)


SHARDED_STAGES = ("generate", "judge", "evaluate")  # model-bound stages that split their prompts across ranks


def launch(ctx: RunContext, k: int, name: str, config: str) -> None:
    """Run one stage as its own ``accelerate launch`` job: its processes exit with it, so GPU memory is fully
    released before the next stage (training and vLLM/HF generation never share a GPU)."""
    # This interpreter's accelerate, so an unactivated venv works too.
    entry = ["-m", "selfimprove.train"] if name == "train" else ["-m", "selfimprove", "stage", name]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *entry, str(ctx.run_dir), "--round", str(k)]
    logger.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_ENV: name})


def run_stage(ctx: RunContext, k: int, name: str) -> bool:
    """Run one stage unless done; return True if it ran."""
    if is_done(ctx.stage(k, name)):
        return False
    logger.info("round %d: %s", k, name)
    nested = in_launched_job()  # this process is the launched job: run here, never launch again
    if name == "train" and ctx.recipe.train.launcher == "accelerate" and not nested:
        launch(ctx, k, name, ctx.recipe.train.accelerate_config)
    elif name in SHARDED_STAGES and ctx.recipe.generate.accelerate_config and not nested:
        launch(ctx, k, name, ctx.recipe.generate.accelerate_config)
    else:
        STAGES[name](ctx, k)
    return True


def summary_line(m: dict) -> str:
    parts = [f"round {m['round']}"]
    if "eval/frontier" in m:
        parts.append(f"frontier {m['eval/frontier']}")
    parts.append(f"acc id {m['eval/accuracy/id']:.3f} ood {m['eval/accuracy/ood']:.3f}")
    if "quality/kept" in m:
        pl = m.get("quality/pseudo_label_accuracy")
        parts.append(f"kept {m['quality/kept']}/{m['quality/generated']} selected {m['quality/selected']}"
                     + (f" (label acc {pl:.3f})" if pl is not None else ""))
    parts.append(f"loss {m['train/first_loss'] or 0:.3f}->{m['train/last_loss'] or 0:.3f}")
    parts.append(f"{sum(v for k, v in m.items() if k.startswith('time/')):.0f}s")
    return " | ".join(parts)


def run_loop(recipe, allow_recipe_change: bool = False, note: str = "") -> list[dict]:
    """Run (or resume) the whole loop; return metrics.jsonl's rows."""
    from selfimprove.rundir import read_json, rebuild_metrics

    ctx = start_run(recipe, allow_recipe_change, note)
    setup(ctx)
    for k in range(recipe.rounds + 1):
        for name in (ROUND0_STAGES if k == 0 else STAGES):
            run_stage(ctx, k, name)
        logger.info(summary_line(read_json(ctx.stage(k, "monitor") / "metrics.json")))
        if should_stop(ctx, k):
            logger.error("stopping after round %d: a 'stop' alarm fired (round_%02d/monitor/alarms.json)", k, k)
            break
    return rebuild_metrics(ctx.run_dir)


