"""Models and tokenizers: resolved (folder, hub cache or hub), their configs and tokenizers loaded without weights,
and the lengths and alphabet the task's text needs from them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from selfimprove.core.model import bootstrap_config, build_char_tokenizer, context_length, load_tokenizer, run_alphabet
from selfimprove.core.rundir import RunContext
from selfimprove.tools.check.report import Report

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
SERVER_TIMEOUT_S = 10


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


def parameter_count(config, classifier: bool = False) -> int:
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


def new_tokens_field(ctx: RunContext) -> str:
    """The recipe field that sets the generation limit."""
    if ctx.recipe.generate.max_new_tokens:
        return "generate.max_new_tokens"
    name = ctx.recipe.task.name
    if hasattr(getattr(ctx.recipe.task, name), "max_new_tokens"):
        return f"task.{name}.max_new_tokens"
    return f"the {name} task's own limit (generate.max_new_tokens overrides it)"


def check_lengths(ctx: RunContext, config, tok, prompts: list[dict], evals: list[dict], report: Report) -> dict:
    """Prompt lengths in tokens as the policy sees them. Generation stops at the model's positions (the HF backend
    as vLLM does at max_model_len), so prompt + generation past them is a fact; a problem only when what is left
    cannot hold the seed answers."""
    fmt = ctx.prompt_format
    lengths = [len(ids) for ids in fmt.encode(tok, [p["prompt"] for p in prompts + evals])] or [0]
    answers = [p["completion"] for p in prompts if p.get("completion")]
    answer_max = (
        1 + max((len(ids) for ids in tok(answers, add_special_tokens=False)["input_ids"]), default=0) if answers else 1
    )  # with EOS
    new = ctx.recipe.generate.max_new_tokens or (ctx.task.max_new_tokens(prompts or evals) if prompts or evals else 0)
    limit, longest = context_length(config), max(lengths)
    room = limit - longest if limit else new

    def raise_it(positions: int) -> str:
        if ctx.recipe.model.path is None:
            return f"raise model.bootstrap.max_position_embeddings to at least {positions}"
        return "use a model with a longer context"

    if room < answer_max:
        report.problems.append(
            f"the longest prompt is {longest} tokens, which leaves {max(room, 0)} of the model's {limit} positions "
            f"for an answer, but the seed answers run to {answer_max} tokens with EOS: "
            f"{raise_it(longest + answer_max)}, or shorten the prompts (task data, prompt_template, fewshot)."
        )
    elif new > room:
        report.facts.append(
            f"generation: {new_tokens_field(ctx)} allows {new} new tokens, but the model has {limit} positions, so "
            f"after the longest prompt ({longest} tokens) generation stops at {room} (a completion cut there is "
            f"unfinished); the seed answers need at most {answer_max}. To allow all {new}, {raise_it(longest + new)}."
        )
    return {
        "prompt_tokens_mean": sum(lengths) / len(lengths),
        "prompt_tokens_max": longest,
        "max_new_tokens": min(new, room),
        "limit": limit,
    }
