"""The recipe: the sections composed, their cross-section rules, loading with overrides, and the fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from selfimprove import registry
from selfimprove.core.config.generate import GenerateConfig, ProposeConfig
from selfimprove.core.config.judge import JudgeConfig
from selfimprove.core.config.model import ModelConfig, TaskConfig
from selfimprove.core.config.monitor import EvaluateConfig, MonitorConfig
from selfimprove.core.config.select import FilterConfig, SelectConfig
from selfimprove.core.config.slurm import SlurmConfig
from selfimprove.core.config.train import TrainConfig
from selfimprove.core.trainer_args import problems
from selfimprove.core.typed_yaml import ConfigError, apply_overrides, build, is_number, load_overlay, option


@dataclass
class Recipe:
    output_dir: str = option("runs/run", "Run directory (created; an existing one is resumed).")
    seed: int = option(0, "Seed for data, initialisation, sampling and training order.", ge=0)
    rounds: int = option(4, "Self-improvement rounds after round 0.", ge=0)
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Starting policy."})
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "Task."})
    propose: ProposeConfig = field(default_factory=ProposeConfig, metadata={"help": "Proposing new prompts."})
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "Generation."})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "Judges."})
    filter: FilterConfig = field(default_factory=FilterConfig, metadata={"help": "Quality filter."})
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "Selection."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Training."})
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, metadata={"help": "Evaluation."})
    monitor: MonitorConfig = field(default_factory=MonitorConfig, metadata={"help": "Monitor."})
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"help": "Slurm allocation and steps."})


def _cross_checks(r: Recipe) -> list[str]:
    p = [
        f"filter.min_scores.{name}={v!r} must be a number (a judge score threshold, e.g. 0.8)."
        for name, v in r.filter.min_scores.items()
        if not is_number(v)
    ]
    if not r.output_dir.strip():
        p.append(
            "output_dir is empty: name the run directory (e.g. runs/my_run). An empty one would be the current "
            "directory."
        )
    for name in r.filter.min_scores:
        if name not in r.judge.judges:
            p.append(
                f"filter.min_scores.{name}: no judge {name!r} runs. Add it to judge.judges or remove the threshold."
            )
    if r.train.method == "dpo" and r.filter.pairs == "none":
        p.append("train.method is 'dpo' but filter.pairs is 'none': set filter.pairs to best_vs_worst or margin.")
    if r.train.method == "dpo" and r.generate.num_samples < 2:
        p.append("train.method 'dpo' pairs samples of one prompt: set generate.num_samples >= 2.")
    p += _grpo_checks(r)
    if "majority" in r.judge.judges and r.generate.num_samples < 2:
        p.append(
            f"judge.judges has 'majority' but generate.num_samples={r.generate.num_samples}: a vote needs >= 2 "
            "samples. Raise num_samples."
        )
    task = registry.load(registry.TASKS[r.task.name])
    p += task.recipe_problems(r)
    if "consistency" in r.judge.judges and not task.pairs_prompts(getattr(r.task, r.task.name)):
        p.append(
            "judge.judges has 'consistency', which compares equivalent prompts, but this task poses none: use "
            "'majority', or a task that pairs its prompts (addition with task.addition.swapped_pairs: true)."
        )
    if r.monitor.probe_size and r.monitor.probe_temperature <= 0:
        p.append("monitor.probe_temperature must be > 0: a greedy probe has no diversity to measure.")
    if r.monitor.probe_size and r.monitor.probe_samples < 2:
        p.append(f"monitor.probe_samples={r.monitor.probe_samples}: sample >= 2 completions per probe prompt.")
    for a in r.monitor.alarms:
        if a.metric == "wu_signature" and not r.monitor.probe_size:
            p.append("monitor.alarms: 'wu_signature' reads the probe's pass@k; set monitor.probe_size > 0.")
    p += _judge_server_checks(r) + _propose_checks(r)
    if r.train.trainer_args:
        p += problems(r.train, r.rounds)
    return p


def _grpo_checks(r: Recipe) -> list[str]:
    if r.train.method != "grpo":
        return []
    p, g, t = [], r.generate, r.train
    if g.num_samples < 2:
        p.append("train.method 'grpo' compares the completions of one prompt: set generate.num_samples >= 2.")
    if g.backend == "openai":
        p.append(
            "train.method 'grpo' samples with the policy it is training, which a fixed server cannot serve: set "
            "generate.backend to hf or vllm (TRL's colocate or server mode: train.trainer_args.grpo.vllm_mode)."
        )
    if r.judge.combine != "mean":
        p.append("train.method 'grpo' sums the judges' rewards with judge.weights: set judge.combine: mean.")
    if r.propose.runs and r.propose.mode == "task_native" and r.propose.train_share:
        p.append(
            "train.method 'grpo' trains on its rollouts only, so propose.train_share (proposals as training rows) "
            "would be ignored: set it to 0 (the kept proposals are still posed as the round's prompts)."
        )
    if not t.use_generated:
        p.append("train.use_generated: false trains on seed data only, which an online round cannot: use sft.")
    if t.global_batch_size and t.global_batch_size % g.num_samples:
        p.append(
            f"train.global_batch_size={t.global_batch_size} completions a step is not a multiple of "
            f"generate.num_samples={g.num_samples} (the group size): GRPO needs whole groups."
        )
    return p


def _propose_checks(r: Recipe) -> list[str]:
    c, p = r.propose, []
    if c.mode == "task_native" and not registry.load(registry.TASKS[r.task.name]).proposes:
        able = ", ".join(n for n, e in registry.TASKS.items() if registry.load(e).proposes)
        p.append(
            f"propose.mode 'task_native' needs a task that writes and solves its own problems ({able}); task "
            f"{r.task.name!r} does not: for your own prompts use 'self_instruct' or 'evolve'."
        )
    if c.model == "task" and c.mode != "task_native":
        p.append("propose.model 'task' writes problems in the task's own format: set propose.mode 'task_native'.")
    if c.mode in ("self_instruct", "evolve") and c.model == "policy" and r.model.path is None:
        p.append(
            f"propose.mode '{c.mode}' asks a model to follow a written instruction, which a from-scratch policy "
            "cannot: set propose.model to an instruct model, or use mode 'task_native'."
        )
    if c.runs and c.mode != "task_native" and "verifier" in r.judge.judges:
        p.append(
            f"propose.mode '{c.mode}' writes prompts without reference answers, which judge 'verifier' needs: "
            "judge them label-free (judge.judges: [majority]), or use mode 'task_native' on a built-in task."
        )
    if c.model == "policy" and c.backend == "openai":
        p.append("propose.model 'policy' is a new checkpoint every round, which a fixed server cannot serve: use hf.")
    return p


def _judge_server_checks(r: Recipe) -> list[str]:
    if not r.slurm.judge_server.nodes:
        return []
    p, llm = [], [j for j in r.judge.judges if j in ("llm", "llm_pairwise")]
    if r.train.launcher != "slurm":
        p.append("slurm.judge_server.nodes > 0 needs train.launcher 'slurm': the server is a step of the allocation.")
    if not llm:
        p.append("slurm.judge_server.nodes > 0 but no LLM judge runs: add 'llm' or 'llm_pairwise' to judge.judges.")
    if r.judge.llm.backend != "openai":
        p.append("slurm.judge_server serves the judge over HTTP: set judge.llm.backend to 'openai'.")
    if r.judge.llm.model == "policy":
        p.append(
            "slurm.judge_server serves one fixed model, but judge.llm.model is 'policy' (a new checkpoint every "
            "round): name the judge's folder or hub id in judge.llm.model."
        )
    return p


def load_recipe(path: str | None, overrides: dict | None = None, prepare=None, notes: list | None = None) -> Recipe:
    """Parse a recipe file (or the defaults when ``path`` is None) with dotted overrides; raise ConfigError listing all
    problems. ``prepare`` (mapping -> (mapping, notes); the CLI's --smoke substitutions, selfimprove.smoke) rewrites
    the file's mapping before the overrides, so an override still wins; its notes are appended to ``notes``."""
    data = load_overlay(path, Recipe) if path else {}
    if prepare is not None:
        data, made = prepare(data)
        if notes is not None:
            notes += made
    apply_overrides(data, overrides or {}, Recipe)
    problems: list[str] = []
    recipe = build(Recipe, data, "", problems)
    problems += _cross_checks(recipe)
    if problems:
        raise ConfigError(problems)
    return recipe


def recipe_from_dict(data: dict) -> Recipe:
    problems: list[str] = []
    recipe = build(Recipe, data, "", problems)
    if problems:
        raise ConfigError(problems)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


# Where a run and its servers are, how long it goes on, and whether its vLLM engine is kept between rounds (a kept
# engine samples as a fresh one does): none of them changes a sample, so a run may move, a server may move, a run may
# be extended and its engine kept or not without counting as another recipe.
LOCATION_FIELDS = (
    "output_dir",
    "rounds",
    "generate.openai.base_url",
    "judge.llm.openai.base_url",
    "slurm",
    "train.launch_retries",
    "generate.vllm.keep_engine",
    "judge.llm.vllm.keep_engine",
)


# Fields added after runs were made: left at their defaults they change nothing those runs did, so a recipe that
# does not set them keeps the fingerprint it had before they existed.
ADDED_FIELDS = (
    "propose",
    "monitor.prompt_metrics",
    "task.countdown.dev_size_per_level",
    "task.rewrite.dev_size_per_level",
    "task.rewrite.eval_id_rules",
    "task.rewrite.label_noise_kind",
    "task.rewrite.held_out_parts",
    "task.generic.seed_completion_field",
)


def recipe_hash(recipe: Recipe) -> str:
    """A short fingerprint of what the recipe makes a run do (everything but LOCATION_FIELDS, and ADDED_FIELDS left
    at their defaults)."""
    data = recipe_to_dict(recipe)
    defaults = recipe_to_dict(Recipe())
    for dotted in LOCATION_FIELDS + ADDED_FIELDS:
        *parents, leaf = dotted.split(".")
        node, default = data, defaults
        for key in parents:
            node, default = node[key], default[key]
        if dotted in LOCATION_FIELDS or node[leaf] == default[leaf]:
            node.pop(leaf)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
