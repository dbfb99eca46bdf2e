"""The orchestrator: setup once, then round 0 (bootstrap) and rounds 1..R, each stage skipped when already done.

Stages hand over through the run directory only, so any stage can run in another process: training runs in-process
by default (cheapest for one CPU process), as ``accelerate launch -m selfimprove.stages.train`` with ``train.launcher:
accelerate``, which also frees all training memory before the next stage starts, or as an ``srun`` step over a Slurm
allocation's nodes with ``train.launcher: slurm`` (selfimprove.core.slurm).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from selfimprove import registry
from selfimprove.backends.judge_server import judge_server
from selfimprove.backends.vllm_engine import ENGINE_ENV, KeptEngine
from selfimprove.core import seeding, slurm, timing
from selfimprove.core.atomic import is_done
from selfimprove.core.config import Recipe
from selfimprove.core.dist import LAUNCHED_ENV, dist_rank_world, in_launched_job, run_until_done
from selfimprove.core.files import read_json, write_json
from selfimprove.core.integrity import read_stage_json, recover
from selfimprove.core.model import prepare_base_model
from selfimprove.core.prompts import prompt_key
from selfimprove.core.rows import save_rows
from selfimprove.core.rundir import RunContext, rebuild_metrics
from selfimprove.core.runs import claimed_run
from selfimprove.core.slurm import in_allocation
from selfimprove.core.tracking import write_tensorboard
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.metrics.alarms import fired_alarms, should_stop
from selfimprove.stages.judge.train_reward import train_reward_model
from selfimprove.tasks import proposal_examples

logger = logging.getLogger(__name__)
# The run's frame (banner, one summary per round, the closing line): its output, shown whatever --log-level, and kept
# in RUN/logs/console.log with the stage lines.
frame = logging.getLogger("selfimprove.frame")
frame.setLevel(logging.INFO)
HEADLINE_DIVERSITY = ("diversity/probe/answer_entropy", "probe answer entropy")
CONSOLE_LOG = "logs/console.log"


def setup(ctx: RunContext) -> None:
    """Make the base model, the fixed eval sets, the probe set and the seed data, once per run."""
    for name in ("base_model", "eval_sets", "probe_set", "seed_data"):
        recover(ctx.run_dir / name)
    if ctx.recipe.model.path is None and not is_done(ctx.run_dir / "base_model"):
        with ctx.writing(None, "base_model") as (out, meta):
            meta.update(prepare_base_model(ctx.recipe, ctx.task, out))
    if not is_done(ctx.run_dir / "eval_sets"):
        with ctx.writing(None, "eval_sets") as (out, meta):
            rows = ctx.task.eval_sets()
            save_rows(rows, out / "data")
            meta["rows"] = len(rows)
            dev = ctx.task.dev_sets({prompt_key(r["prompt"]) for r in rows})  # what decisions may read
            if dev:
                save_rows(dev, out / "dev")
                meta["dev_rows"] = len(dev)
    if ctx.recipe.monitor.probe_size and not is_done(ctx.run_dir / "probe_set"):
        # A draw of its own, apart from the eval and dev sets: the probe's pass@k may steer the loop (an alarm), so
        # it must never be scored against an eval answer.
        size = ctx.recipe.monitor.probe_size
        with ctx.writing(None, "probe_set") as (out, meta):
            rows = ctx.task.held_out("probe_draw", size, ctx.excluded_prompts())
            pick = seeding.rng(ctx.recipe.seed, "probe_set").permutation(len(rows))[:size]
            save_rows([rows[i] for i in sorted(pick)], out / "data")
            meta.update(rows=len(pick), source="held_out")
    if not is_done(ctx.run_dir / "seed_data"):
        seed_rows = ctx.task.seed_data(ctx.excluded_prompts())
        if ctx.recipe.propose.mode == "task_native":  # the policy also learns to write problems
            rng = seeding.rng(ctx.recipe.seed, "proposal_examples")
            seed_rows += proposal_examples(ctx.task, ctx.recipe.propose.seed_examples, ctx.excluded_prompts(), rng)
        seed_rows = [{**r, "round": 0} for r in seed_rows]
        with ctx.writing(None, "seed_data") as (out, meta):
            save_rows(seed_rows, out / "data")
            meta["rows"] = len(seed_rows)


# The module each launched job runs; any other stage goes through ``selfimprove stage NAME``.
_ENTRIES = {"train": "selfimprove.stages.train", "reward_model": "selfimprove.stages.judge.train_reward"}


def launch(ctx: RunContext, k: int | None, name: str, config: str) -> None:
    """Run one stage as its own ``accelerate launch`` job (or, with train.launcher 'slurm', an ``srun`` step of one
    per node): its processes exit with it, so GPU memory is fully released before the next stage (training and
    vLLM/HF generation never share a GPU). ``k`` None: a run-level step (the reward model)."""
    entry = ["-m", _ENTRIES[name]] if name in _ENTRIES else ["-m", "selfimprove", "stage", name, "--force"]
    args = [*entry, str(ctx.run_dir), *(["--round", str(k)] if k is not None else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_ENV: name}
    done = lambda: is_done(ctx.folder(k, name))  # noqa: E731
    if ctx.recipe.train.launcher == "slurm":
        label = name if k is None else f"round_{k:02d}-{name}"
        slurm.run_step(ctx.recipe.slurm, ctx.run_dir, label, config, args, env, done)
        return
    # This interpreter's accelerate, so an unactivated venv works too.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *args]
    tries = ctx.recipe.train.launch_retries + 1
    rc = run_until_done(lambda _: cmd, env, done, tries, lambda _: f"launching the {name} job")
    if rc is not None:
        raise subprocess.CalledProcessError(rc, cmd)


def run_stage(ctx: RunContext, k: int, name: str, force: bool = False) -> bool:
    """Run one stage unless done (or redo it with ``force``: the finished one stays until the new one is); return
    True if it ran."""
    if dist_rank_world()[0] == 0:
        recover(ctx.stage(k, name))
    if is_done(ctx.stage(k, name)) and not force:
        return False
    logger.info("round %d/%d: %s", k, ctx.recipe.rounds, name)
    nested = in_launched_job()  # this process is the launched job: run here, never launch again
    if name == "train" and ctx.recipe.train.launcher != "inprocess" and not nested:
        launch(ctx, k, name, ctx.recipe.train.accelerate_config)
    elif name in registry.SHARDED_STAGES and ctx.recipe.generate.accelerate_config and not nested:
        launch(ctx, k, name, ctx.recipe.generate.accelerate_config)
    else:
        registry.load(registry.STAGES[name])(ctx, k)
    return True


def train_reward(ctx: RunContext) -> bool:
    """Train the run's reward model unless done, through the policy's launcher (in-process or its own
    ``accelerate launch`` job with train.accelerate_config); return True if it ran."""
    recover(ctx.run_dir / "reward_model")
    if is_done(ctx.run_dir / "reward_model"):
        return False
    if ctx.recipe.train.launcher != "inprocess" and not in_launched_job():
        launch(ctx, None, "reward_model", ctx.recipe.train.accelerate_config)
    else:
        train_reward_model(ctx)
    return True


def write_round_timing(ctx: RunContext, k: int, wall_s: float, ran: list[str], setup_s: float | None) -> None:
    """round_KK/timing.json from the round's stage metas and its wall time in this process (``ran``: the stages it
    ran), merged into metrics.jsonl."""
    folders = {n: ctx.stage(k, n) for n in registry.STAGES}
    if "reward_model" in ran:  # trained at the start of round 1, inside its wall time
        folders = {"reward_model": ctx.run_dir / "reward_model", **folders}
    metas = {n: read_json(f / "meta.json") for n, f in folders.items() if is_done(f)}
    complete = set(ctx.stages(k)) <= set(ran)
    write_json(ctx.stage(k, "monitor").parent / timing.FILE, timing.round_timing(metas, wall_s, complete, setup_s))
    rebuild_metrics(ctx.run_dir)


def summary_line(m: dict, rounds: int | None = None, alarms: list[dict] = (), eta_s: float | None = None) -> str:
    """One line per round: accuracy, the headline diversity number, data kept, loss, time, any alarm, the ETA."""
    parts = [f"round {m['round']}" + (f"/{rounds}" if rounds is not None else "")]
    if "eval/frontier" in m:
        parts.append(f"frontier {m['eval/frontier']}")
    parts.append(f"acc id {m['eval/accuracy/id']:.3f} ood {m['eval/accuracy/ood']:.3f}")
    key, name = HEADLINE_DIVERSITY
    if m.get(key) is not None:
        parts.append(f"{name} {m[key]:.3f}")
    if "quality/kept" in m:
        pl = m.get("quality/pseudo_label_accuracy")
        parts.append(
            f"kept {m['quality/kept']}/{m['quality/generated']} selected {m['quality/selected']}"
            + (f" (label acc {pl:.3f})" if pl is not None else "")
        )
    first, last = m.get("train/first_loss"), m.get("train/last_loss")
    parts.append(f"loss {first:.3f}->{last:.3f}" if first is not None and last is not None else "loss not logged")
    parts.append(f"{sum(v for k, v in m.items() if k.startswith('time/')):.0f}s")
    parts += [f"ALARM {a.get('metric', '?')} ({a.get('action', 'warn')})" for a in alarms]
    if eta_s is not None:
        parts.append(f"ETA {_duration(eta_s)}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def banner(ctx: RunContext) -> str:
    done = [k for k in range(ctx.recipe.rounds + 1) if is_done(ctx.stage(k, "monitor"))]
    state = f"resumed, rounds {done[0]}-{done[-1]} done" if done else "new"
    todo = ctx.recipe.rounds + 1 - len(done)
    return (
        f"selfimprove run: {ctx.run_dir} ({state}); {todo} of rounds 0-{ctx.recipe.rounds} to do; console log "
        f"{ctx.run_dir / CONSOLE_LOG}"
    )


@contextlib.contextmanager
def console_log(ctx: RunContext):
    """The stage lines and the frame, appended to RUN/logs/console.log while the loop runs in this process."""
    path = ctx.run_dir / CONSOLE_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.INFO)
    top = logging.getLogger("selfimprove")
    top.addHandler(handler)
    try:
        yield
    finally:
        top.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def kept_engine(ctx: RunContext):
    """The run's kept vLLM engine while the block runs, announced to this process and its children (the stages)
    through ENGINE_ENV; None when the policy does not sample with vLLM or generate.vllm.keep_engine is off."""
    g = ctx.recipe.generate
    if g.backend != "vllm" or not g.vllm.keep_engine or in_launched_job():
        yield None
        return
    engine = KeptEngine(g.vllm.python or sys.executable, ctx.run_dir / "logs" / "vllm_engine.log")
    os.environ[ENGINE_ENV] = json.dumps(engine.address)
    try:
        yield engine
    finally:
        os.environ.pop(ENGINE_ENV, None)
        engine.close()


def _engine_rests(engine: KeptEngine | None, stage: Path) -> None:
    """The kept engine sleeps before a stage that does not sample the policy, if that stage is still to run."""
    if engine is not None and not is_done(stage):
        engine.sleep()


def run_round(ctx: RunContext, k: int, server, setup_s: float, engine: KeptEngine | None = None) -> list[str]:
    """Round k's stages that are not done yet; the names of those it ran. A kept engine sleeps (frees its GPU
    memory) before each stage that does not sample the policy through it."""
    start, ran = time.perf_counter(), []
    if k == 1 and ctx.recipe.judge.reward_model.train:  # the judge learns from round 0's policy, once
        _engine_rests(engine, ctx.run_dir / "reward_model")
        ran += ["reward_model"] if train_reward(ctx) else []
    for name in ctx.stages(k):
        if name == "judge" and not is_done(ctx.stage(k, name)):
            server.ready()
        if name not in registry.POLICY_SAMPLING_STAGES:
            _engine_rests(engine, ctx.stage(k, name))
        ran += [name] if run_stage(ctx, k, name) else []
    if "monitor" in ran:  # this process finished the round: account for its time
        write_round_timing(ctx, k, time.perf_counter() - start, ran, setup_s if k == 0 else None)
    return ran


def closing(ctx: RunContext, rows: list[dict], ran: bool, stopped: str) -> str:
    last = rows[-1] if rows else {}
    head = (
        f"stopped after round {last.get('round')} by an alarm ({stopped})"
        if stopped
        else ("done" if ran else "nothing to do: every round was already done")
    )
    acc = (
        f"; round {last['round']} acc id {last['eval/accuracy/id']:.3f} ood {last['eval/accuracy/ood']:.3f}"
        if last
        else ""
    )
    return (
        f"{head}{acc}. Results: {ctx.run_dir / 'metrics.jsonl'}. Next: selfimprove report {ctx.run_dir} "
        f"(plots), or --rounds {ctx.recipe.rounds + 1} to go on."
    )


def start_problems(recipe: Recipe) -> list[str]:
    """What keeps a checked recipe from starting in this process (the CLI adds them to ``check``'s problems)."""
    if recipe.train.launcher == "slurm" and not in_launched_job() and not in_allocation():
        return [
            "train.launcher is 'slurm' but this process is not inside a Slurm allocation (no SLURM_JOB_ID): "
            "start the run with 'selfimprove submit RECIPE --nodes N', or use launcher 'accelerate' here."
        ]
    return []


def run_loop(recipe: Recipe, allow_recipe_change: bool = False, note: str = "") -> list[dict]:
    """Run (or resume) the whole loop; return metrics.jsonl's rows. The recipe is checked first
    (selfimprove.tools.check, by the CLI); what keeps it from starting here is refused before the run directory is
    touched."""
    problems = start_problems(recipe)
    if problems:
        raise ConfigError(problems, "cannot start")

    with (
        claimed_run(recipe, allow_recipe_change, note) as ctx,
        console_log(ctx),
        judge_server(ctx) as server,
        kept_engine(ctx) as engine,
    ):
        frame.info(banner(ctx))
        start = time.perf_counter()
        setup(ctx)
        setup_s, spent, stopped = time.perf_counter() - start, [], ""
        for k in range(recipe.rounds + 1):
            start = time.perf_counter()
            if run_round(ctx, k, server, setup_s, engine):  # rounds done before this session were reported then
                spent.append(time.perf_counter() - start)
                eta = (sum(spent[1:]) / len(spent[1:]) if len(spent) > 1 else spent[0]) * (recipe.rounds - k)
                metrics = read_stage_json(ctx.stage(k, "monitor") / "metrics.json", ctx.run_dir)
                alarms = fired_alarms(ctx, k)
                frame.info(summary_line(metrics, recipe.rounds, alarms, eta if k < recipe.rounds else None))
            stopped = should_stop(ctx, k)
            if stopped:
                logger.error("stopping after round %d: %s (round_%02d/monitor/alarms.json)", k, stopped, k)
                break
        rows = rebuild_metrics(ctx.run_dir)
        if "tensorboard" in recipe.monitor.report_to:  # also after a kill between a monitor and its tracker write
            write_tensorboard(ctx.run_dir, rows)
        frame.info(closing(ctx, rows, bool(spent), stopped))
        return rows
