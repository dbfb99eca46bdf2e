"""Stage 2, judge: every named judge scores every sample; ``score`` is their weighted mean.

A judge is a plain function ``(task, rows) -> list[float]`` over the whole round, so judges that need all samples of
a prompt (majority vote) or batch through a model (reward model, LLM judge) fit the same slot. Register new ones in
``JUDGES``. ``oracle_correct`` (1/0, or -1 without a reference) is recorded for the monitor only: no filter reads it.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from selfimprove.rundir import atomic_stage, load_rows, save_rows


def verifier(task, rows: list[dict]) -> list[float]:
    """1 if the completion matches the reference answer (needs ground truth)."""
    missing = [r["prompt_id"] for r in rows if not r["reference"]]
    if missing:
        raise ValueError(f"judge 'verifier' needs a reference answer, but {len(missing)} prompts have none "
                         f"(first: {missing[0]}). Use a label-free judge (majority, format) for unlabelled prompts.")
    return [float(task.is_correct(r["completion"], r["reference"])) for r in rows]


def majority(task, rows: list[dict]) -> list[float]:
    """Label-free: the share of the prompt's samples that give this sample's answer (0 for no answer)."""
    answers = [task.answer(r["completion"]) for r in rows]
    votes: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for r, a in zip(rows, answers):
        totals[r["prompt_id"]] += 1
        if a is not None:
            votes[r["prompt_id"]][a] += 1
    return [0.0 if a is None else votes[r["prompt_id"]][a] / totals[r["prompt_id"]] for r, a in zip(rows, answers)]


def format_check(task, rows: list[dict]) -> list[float]:
    """Label-free: the task's format/length rule (for addition, Lee et al.'s length filter)."""
    return [float(task.format_ok(r["prompt"], r["completion"], r["finished"])) for r in rows]


JUDGES = {"verifier": verifier, "majority": majority, "format": format_check}


def oracle_correct(task, completion: str, reference: str) -> int:
    """Ground truth for measurement only: 1 correct, 0 wrong, -1 when there is no reference to check against."""
    return int(task.is_correct(completion, reference)) if reference else -1


def judge_rows(task, rows: list[dict], names: list[str], weights: dict) -> list[dict]:
    scores = {name: JUDGES[name](task, rows) for name in names}
    total_w = sum(weights.get(n, 1.0) for n in names)
    out = []
    for i, r in enumerate(rows):
        row = {**r, **{f"score_{n}": scores[n][i] for n in names}}
        row["score"] = sum(weights.get(n, 1.0) * scores[n][i] for n in names) / total_w
        row["oracle_correct"] = oracle_correct(task, r["completion"], r["reference"])
        out.append(row)
    return out


def run_judge(ctx, k: int) -> None:
    rows = load_rows(ctx.stage(k, "generate") / "data")
    names, weights = ctx.recipe.judge.judges, ctx.recipe.judge.weights
    with atomic_stage(ctx.stage(k, "judge"), {"judges": names, "weights": weights}) as (out, meta):
        judged = judge_rows(ctx.task, rows, names, weights)
        save_rows(judged, out / "data")
        meta["mean_score"] = {n: sum(r[f"score_{n}"] for r in judged) / max(len(judged), 1) for n in names}
