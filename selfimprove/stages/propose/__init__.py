"""Stage 0, propose (optional, rounds >= 1): a proposer writes new prompts, and filters keep the valid, novel and
learnable ones for the generate stage, which takes ``propose.share`` of its prompts from them.

The proposer is the round's policy, a fixed teacher folder or hub id, or a server, through the generation backends.
Modes: 'task_native' (the request is the task's own, e.g. countdown's ``?3``; the seed data taught the policy to
answer it with a problem), 'self_instruct' (few-shot from this round's and earlier prompts, Wang et al. 2023) and
'evolve' (rewrite a prompt to be harder, Evol-Instruct's operations, Xu et al. 2024), each from a template file.
The filters (filters.py) run in order; every candidate stays on disk in ``data`` with its reason, and the kept ones
are ``prompts``, with their lineage (selfimprove.core.prompts.PROPOSAL_LINEAGE) and their pass rate under the policy.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

from selfimprove.backends import Sampling, sample
from selfimprove.core import seeding
from selfimprove.core.config import ProposeConfig
from selfimprove.core.errors import DataError
from selfimprove.core.prompts import PromptFormat, prompt_content
from selfimprove.core.rows import save_rows
from selfimprove.core.rundir import RunContext, earlier_prompts
from selfimprove.metrics.embedding import load_embedder
from selfimprove.stages.propose import filters


def template(cfg: ProposeConfig, name: str) -> str:
    """A proposer template: the recipe's folder's file, else the built-in one."""
    if cfg.templates:
        path = Path(cfg.templates) / f"{name}.txt"
        if not path.is_file():
            raise DataError(
                f"propose.templates: {path} does not exist. Add it (fields {{examples}} or {{prompt}}), or leave "
                "propose.templates empty for the built-in templates."
            )
        return path.read_text()
    return resources.files("selfimprove.stages.propose").joinpath("templates", f"{name}.txt").read_text()


def fill(text: str, field: str, value: str) -> str:
    """One field substituted once: a prompt that itself contains '{prompt}' stays literal."""
    head, sep, tail = text.partition(field)
    return head + value + tail if sep else text


def requests(ctx: RunContext, k: int, n: int, pool: list[str], rng) -> list[dict]:
    """n proposer requests: {request (the proposer's input), operation, parent_prompt}."""
    c = ctx.recipe.propose
    if c.mode == "task_native":
        op = "task_written" if c.model == "task" else "task_native"
        return [
            {"request": q, "operation": op, "parent_prompt": ""}
            for q in ctx.task.propose_requests(n, rng, k, ctx.history(k))
        ]
    if not pool:
        raise DataError(f"propose.mode '{c.mode}' needs example prompts, and round {k} has none.")
    if c.mode == "self_instruct":
        body = template(c, "self_instruct")
        out = []
        for _ in range(n):
            picks = rng.choice(len(pool), min(c.fewshot, len(pool)), replace=False)
            examples = "\n\n".join(f"Task {i + 1}: {pool[j]}" for i, j in enumerate(picks))
            out.append(
                {"request": fill(body, "{examples}", examples), "operation": "self_instruct", "parent_prompt": ""}
            )
        return out
    bodies = {op: template(c, f"evolve_{op}") for op in c.operations}
    parents = rng.choice(len(pool), n, replace=len(pool) < n)
    return [
        {"request": fill(bodies[op], "{prompt}", pool[j]), "operation": f"evolve_{op}", "parent_prompt": pool[j]}
        for i, j in enumerate(parents)
        for op in [c.operations[i % len(c.operations)]]
    ]


def _written(ctx: RunContext, k: int, asks: list[dict], seed: int) -> tuple[list[str], list[bool], list[int]]:
    """Each request's proposal, whether it finished and its generated tokens: the proposer model's, or
    (propose.model 'task') the task's (no tokens)."""
    c, r = ctx.recipe.propose, ctx.recipe
    if c.model == "task":
        rng = seeding.rng(r.seed, "propose", k, 1)  # after the requests' draws, on its own stream
        return [ctx.task.write_problem(a["request"], rng) for a in asks], [True] * len(asks), [0] * len(asks)
    path, fmt = _proposer(ctx, k)
    written = sample(
        c.backend,
        path,
        [a["request"] for a in asks],
        Sampling(1, c.temperature, 1.0, 0, c.max_new_tokens),
        seed,
        r.generate.batch_size,
        r.model.dtype,
        f"round {k} propose",
        fmt=fmt,
        options=r.generate,
    )
    first = [s[0] for s in written]
    return [x["completion"] for x in first], [x["finished"] for x in first], [x["num_tokens"] for x in first]


def _proposer(ctx: RunContext, k: int) -> tuple[str, PromptFormat]:
    c, plain = ctx.recipe.propose, PromptFormat(chat=ctx.recipe.generate.chat_template)
    if c.model != "policy":
        return c.model, plain
    # The policy reads task-native requests as it reads prompts, and written instructions as a plain user turn.
    return ctx.checkpoint(k - 1), ctx.prompt_format if c.mode == "task_native" else plain


def _pass_rates(ctx: RunContext, k: int, rows: list[dict]):
    r = ctx.recipe
    m = r.propose.learnable_samples
    sampling = Sampling(  # a greedy recipe (temperature 0) still needs varied samples to estimate a rate
        m, r.generate.temperature or 1.0, r.generate.top_p, r.generate.top_k, ctx.task.max_new_tokens(rows)
    )
    samples = sample(
        r.generate.backend,
        ctx.checkpoint(k - 1),
        [row["prompt"] for row in rows],
        sampling,
        seeding.int_seed(r.seed, "learnability", k),
        r.generate.batch_size,
        r.model.dtype,
        f"round {k} learnability",
        fmt=ctx.prompt_format,
        options=r.generate,
    )
    spent = {"samples": sum(len(ss) for ss in samples), "tokens": sum(x["num_tokens"] for ss in samples for x in ss)}
    return filters.pass_rates(ctx.task, rows, samples, r.propose.learnability), spent


def _filtered(ctx: RunContext, k: int, texts: list[str], finished: list[bool], seen: list[str]):
    """(prompt row or None, reason, pass rate) per proposal, through the filters in order (filters.py), and the
    policy samples (and their tokens) the learnability filter spent."""
    r, c = ctx.recipe, ctx.recipe.propose
    rows, reasons = filters.valid(ctx.task, texts, finished)
    live = [i for i, why in enumerate(reasons) if not why]
    protected = [prompt_content(x) for x in ctx.eval_rows() + ctx.dev_rows() + ctx.probe_rows()]
    embedder = _embedder(ctx) if c.novelty == "embedding" else None
    novel = filters.novel([prompt_content(rows[i]) for i in live], protected, seen, c, r.monitor.unit, embedder)
    for i, why in zip(live, novel):
        reasons[i] = why
    live = [i for i, why in enumerate(reasons) if not why]
    rates = [-1.0] * len(texts)  # -1: not measured (dropped before the learnability filter, or it is off)
    spent = {"samples": 0, "tokens": 0}
    if c.learnable_samples and live:
        measured, spent = _pass_rates(ctx, k, [rows[i] for i in live])
        for i, rate, why in zip(live, measured, filters.learnable(measured, c.pass_rate_min, c.pass_rate_max)):
            rates[i], reasons[i] = float(rate), why
    return rows, reasons, rates, spent


def run_propose(ctx: RunContext, k: int) -> None:
    """Write round k's proposals (every candidate, with why it was dropped) and the kept prompts to round_k/propose/."""
    r, c = ctx.recipe, ctx.recipe.propose
    if not c.runs:
        raise DataError("the propose stage is off in this run's recipe (propose.mode 'off' or propose.share 0).")
    task_prompts = [prompt_content(p) for p in ctx.task.round_prompts(k, ctx.history(k), ctx.excluded_prompts())]
    n_take = round(c.share * len(task_prompts))  # the pool's size stays the task's prompts per round
    earlier = earlier_prompts(ctx, k)
    asks = requests(ctx, k, c.candidates or 4 * n_take, task_prompts + earlier, seeding.rng(r.seed, "propose", k))
    by = "task" if c.model == "task" else ctx.relative(_proposer(ctx, k)[0])
    seed = seeding.int_seed(r.seed, "propose", k)
    with ctx.writing(k, "propose", {"proposer": by, "mode": c.mode, "seed": seed}) as (out, meta):
        texts, finished, tokens = _written(ctx, k, asks, seed)
        # New against every earlier prompt and this round's task prompts, so no prompt is in the pool twice.
        rows, reasons, rates, spent = _filtered(ctx, k, texts, finished, earlier + task_prompts)
        save_rows(
            [
                {
                    "candidate": i,
                    **a,
                    "text": texts[i],
                    "prompt": rows[i]["prompt"] if rows[i] else "",
                    "difficulty": rows[i]["difficulty"] if rows[i] else -1,
                    "pass_rate": rates[i],
                    "propose_reason": reasons[i],
                    "kept": not reasons[i],
                    "num_tokens": tokens[i],
                }
                for i, a in enumerate(asks)
            ],
            out / "data",
        )
        kept = [
            {
                "prompt_id": f"p{k}-{i}",
                **rows[i],
                "proposed_by": by,
                "parent_prompt": a["parent_prompt"],
                "operation": a["operation"],
                "pass_rate": rates[i],
                "request": a["request"],
            }
            for i, a in enumerate(asks)
            if not reasons[i]
        ]
        save_rows(kept, out / "prompts")
        counts = Counter(why or "kept" for why in reasons)
        meta.update(
            candidates=len(asks), kept=len(kept), wanted=n_take, used=min(n_take, len(kept)), reasons=dict(counts)
        )
        meta.update(learnability_samples=spent["samples"], learnability_tokens=spent["tokens"])


def _embedder(ctx: RunContext):
    return load_embedder(ctx.recipe.monitor.embedder)
