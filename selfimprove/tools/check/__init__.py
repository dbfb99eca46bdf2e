"""``selfimprove check RECIPE``: a preflight that trains nothing and generates nothing.

It resolves every model, dataset, file and server the recipe names; loads model configs and tokenizers (never the
weights) and checks their EOS / pad tokens, chat template and context length; parses every accelerate config and works
out the batch arithmetic for its process count; checks that vLLM imports in its environment and that each
OpenAI-compatible server answers ``GET /v1/models`` with the named model; renders two example prompts exactly as the
policy will see them; and prints a plan per round (prompts, samples, judge calls, training rows, steps and tokens,
disk). Every problem comes with its fix; the exit status is 0 only when there is none.
"""

from __future__ import annotations

import importlib
import importlib.util

from selfimprove import registry
from selfimprove.core.config import Recipe
from selfimprove.core.errors import UserError
from selfimprove.core.judge_prompts import load_template
from selfimprove.core.model import load_tokenizer
from selfimprove.core.prompts import prompt_key
from selfimprove.core.rundir import RunContext
from selfimprove.core.slurm import processes_per_node
from selfimprove.metrics.embedding import embedder_path
from selfimprove.stages.propose import template
from selfimprove.tools.check.launch import check_accelerate, check_batch, check_server, check_vllm, round_plan
from selfimprove.tools.check.models import (
    check_alphabet,
    check_lengths,
    check_tokenizer,
    parameter_count,
    policy_parts,
    resolve_model,
)
from selfimprove.tools.check.report import Report, print_report

__all__ = ["Report", "check_recipe", "print_report"]


def check_judges(ctx: RunContext, policy_tok, report: Report) -> None:
    r, cfg = ctx.recipe, ctx.recipe.judge
    llm = [j for j in cfg.judges if j in ("llm", "llm_pairwise")]
    for name in llm:
        try:
            load_template(cfg.llm.template, "pointwise" if name == "llm" else "pairwise")
        except UserError as err:
            report.problems.append(str(err))
    if llm and r.slurm.judge_server.nodes:  # started by the run itself: nothing answers yet
        check_vllm(r.slurm.judge_server.python, "slurm.judge_server", report, "slurm.judge_server.python")
        if resolve_model(cfg.llm.model, "judge.llm.model", report):
            report.facts.append(
                f"judge.llm: served by the run on {r.slurm.judge_server.nodes} node(s) of its own, port "
                f"{r.slurm.judge_server.port}"
            )
    elif llm and cfg.llm.backend == "openai":
        check_server(
            cfg.llm.openai,
            cfg.llm.openai.model or (r.model.path if cfg.llm.model == "policy" else cfg.llm.model),
            "judge.llm",
            report,
        )
    elif llm and cfg.llm.model == "policy":
        if policy_tok is not None:
            check_tokenizer(policy_tok, cfg.llm.chat_template, "judge.llm (the policy)", report, need_chat=False)
    elif llm and resolve_model(cfg.llm.model, "judge.llm.model", report):
        check_tokenizer(
            load_tokenizer(cfg.llm.model), cfg.llm.chat_template, "judge.llm.model", report, need_chat=False
        )
    if llm and cfg.llm.backend == "vllm":
        check_vllm(cfg.llm.vllm.python, "judge.llm", report)
    if cfg.llm.eft_share and not ctx.task.corrupts:
        report.problems.append(
            f"judge.llm.eft_share: task {ctx.task.name!r} cannot build wrong answers to grade; set it to 0."
        )
    if "reward" in cfg.judges and cfg.reward_model.train:  # trained at setup from the run's base model
        if cfg.reward_model.path:
            resolve_model(cfg.reward_model.path, "judge.reward_model.path", report)
        if not ctx.task.corrupts:
            report.problems.append(
                f"judge.reward_model.train: task {ctx.task.name!r} cannot build rejected answers; "
                "name a trained reward model in judge.reward_model.path instead."
            )
    elif "reward" in cfg.judges and resolve_model(cfg.reward_model.path, "judge.reward_model.path", report):
        from transformers import AutoConfig

        labels = AutoConfig.from_pretrained(cfg.reward_model.path).num_labels
        if labels not in (1, 2):
            report.problems.append(
                f"judge.reward_model.path={cfg.reward_model.path!r} has num_labels={labels}; a reward "
                "model has 1 (a scalar) or 2 (P(label 1) is the score)."
            )


def task_rows(ctx: RunContext, report: Report) -> tuple[list[dict], list[dict], list[dict]]:
    """(round-1 prompts, eval rows, seed rows) as the task makes them, or empty lists after recording why not."""
    try:
        evals = ctx.task.eval_sets()
        prompts = ctx.task.round_prompts(1, [], {prompt_key(e["prompt"]) for e in evals}) if ctx.recipe.rounds else []
        return prompts, evals, ctx.task.seed_data()
    except (
        UserError
    ) as err:  # a data file that does not load, lacks a column or holds empty values: the task says which
        report.problems.append(str(err))
        return [], [], []


def extra_metric_problems(path: str) -> list[str]:
    """monitor.extra_metrics entries must be 'module:function' with the module importable and the function there."""
    try:
        registry.load(path)
    except ValueError:
        return [f"monitor.extra_metrics: {path!r} is not 'module:function'. Write it as e.g. 'my_metrics:score'."]
    except ImportError as err:
        module = path.partition(":")[0]
        return [f"monitor.extra_metrics: {path!r}: module {module!r} does not import ({err}). Put it on PYTHONPATH."]
    except AttributeError:
        return [f"monitor.extra_metrics: {path!r}: {path.partition(':')[0]} has no {path.partition(':')[2]}."]
    return []


def check_proposer(ctx: RunContext, report: Report) -> None:
    """The propose stage's proposer model and its templates (the recipe's checks refuse a task without
    task_native)."""
    c = ctx.recipe.propose
    if not c.runs:
        return
    names = {"self_instruct": ["self_instruct"], "evolve": [f"evolve_{op}" for op in c.operations]}.get(c.mode, [])

    for name in names:
        try:
            template(c, name)
        except UserError as err:
            report.problems.append(str(err))
    if c.model in ("policy", "task"):
        return
    if c.backend == "openai":
        check_server(ctx.recipe.generate.openai, ctx.recipe.generate.openai.model or c.model, "propose", report)
    elif resolve_model(c.model, "propose.model", report):
        report.facts.append(f"propose: {c.mode} proposals from {c.model} ({c.backend})")


def check_recipe(recipe: Recipe) -> Report:
    """Every check on a parsed recipe; nothing is trained, generated or written."""
    report = Report()
    ctx = RunContext(recipe, recipe.output_dir)
    r = recipe
    data = ctx.task.data_problems()  # every file and column at once; then nothing reads the data row by row
    report.problems += data
    config, tok = policy_parts(ctx, report) if not data else (None, None)
    if tok is not None:
        check_tokenizer(tok, r.generate.chat_template, "model (policy)", report, need_chat=True)
    check_judges(ctx, tok, report)
    check_proposer(ctx, report)
    if r.select.oracle_label_noise and not ctx.task.corrupts:
        report.problems.append(
            f"select.oracle_label_noise: task {ctx.task.name!r} cannot make a wrong label of the right shape. Use "
            "oracle_label_noise 0 or a task that can (addition, rewrite)."
        )
    if r.generate.backend == "vllm":
        check_vllm(r.generate.vllm.python, "generate", report)
    if r.generate.backend == "openai":
        check_server(r.generate.openai, r.generate.openai.model or (r.model.path or ""), "generate", report)
    for tracker in ("tensorboard", "wandb"):
        if tracker in r.monitor.report_to and importlib.util.find_spec(tracker) is None:
            report.problems.append(f"monitor.report_to has {tracker!r} but it is not installed: pip install {tracker}.")
    for path in r.monitor.extra_metrics:
        report.problems += extra_metric_problems(path)
    if r.monitor.embedding:
        try:
            embedder_path(r.monitor.embedder)
        except UserError as err:
            report.problems.append(str(err))
    world, known = 1, len(report.problems)
    if r.train.launcher != "inprocess":
        world = check_accelerate(r.train.accelerate_config, "train.accelerate_config", report)
    if r.train.launcher == "slurm" and len(report.problems) == known:  # a usable config: scaled to the nodes
        world = processes_per_node(r.slurm, r.train.accelerate_config) * r.slurm.nodes
        report.facts.append(f"slurm: {r.slurm.nodes} node(s) x {world // r.slurm.nodes} process(es) per step")
    if r.generate.accelerate_config:
        check_accelerate(r.generate.accelerate_config, "generate.accelerate_config", report)
    global_batch = check_batch(r, world, report)
    prompts, evals, seeds = task_rows(ctx, report) if not data else ([], [], [])
    if tok is None or not (prompts or evals):
        return report
    check_alphabet(tok, prompts + evals + seeds, r.model.path is None, report)
    lengths = check_lengths(ctx, config, tok, prompts + seeds, evals, report)
    # decoded from the very token ids the policy gets: special tokens (BOS, chat markers) included
    report.examples = [
        tok.decode(ids) for ids in ctx.prompt_format.encode(tok, [p["prompt"] for p in (prompts or evals)[:2]])
    ]
    params = parameter_count(config)
    report.facts.append(
        f"model: {type(config).__name__}, {params / 1e6:.2f}M parameters, {lengths['limit']} positions; "
        f"prompts {lengths['prompt_tokens_mean']:.0f} tokens on average, {lengths['prompt_tokens_max']} at most"
    )
    report.plan = [
        round_plan(ctx, k, len(prompts), len(evals), lengths, global_batch, params) for k in range(r.rounds + 1)
    ]
    return report
