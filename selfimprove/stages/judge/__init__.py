"""Stage 2, judge: every named judge scores every sample; ``score`` combines them (weighted mean, or weighted vote).

A judge is a function ``(env, rows) -> scores`` over the whole round, so judges that need all samples of a prompt
(majority vote, pairwise LLM judge) or batch through a model (reward model, LLM judge) fit the same slot; a judge may
also return ``(scores, records)``, records being its raw outputs, saved beside the data. A score of None means the
judge could not score the sample (an unparseable LLM verdict); ``judge.llm.on_unparseable`` decides what happens.
``oracle_correct`` (1/0, or -1 without a reference) is recorded for the monitor only: no filter reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from selfimprove import registry
from selfimprove.backends.judge_server import served_url, serves_judge
from selfimprove.core import seeding
from selfimprove.core.config import JudgeConfig
from selfimprove.core.rows import load_rows, save_rows
from selfimprove.core.rundir import RunContext
from selfimprove.tasks import oracle_correct

UNPARSED_VALUE = {"zero": 0.0, "neutral": 0.5, "drop": 0.0}


@dataclass
class JudgeEnv:
    """What a judge may read: the task, the judge config, the checkpoint that generated the round (for self-judging)."""

    task: object
    cfg: object
    policy: str = ""
    seed: int = 0
    dtype: str = "float32"
    cache: dict = dataclasses.field(default_factory=dict)  # models a judge keeps for the env's life (a GRPO round)


def _combine(cfg: JudgeConfig, scores: dict[str, list[float]], i: int) -> float:
    names = cfg.judges
    w = {n: cfg.weights.get(n, 1.0) for n in names}
    if cfg.combine == "vote":  # weighted share of judges that accept the sample
        return sum(w[n] * (scores[n][i] >= cfg.vote_thresholds.get(n, 0.5)) for n in names) / sum(w.values())
    return sum(w[n] * scores[n][i] for n in names) / sum(w.values())


def judge_rows(env: JudgeEnv, rows: list[dict]) -> tuple[list[dict], dict[str, list[dict]]]:
    """Rows with score_<judge>, score, judge_unparsed (judges that could not score it) and oracle_correct; plus each
    judge's raw records."""
    cfg = env.cfg
    scores, records = {}, {}
    for name in cfg.judges:
        result = registry.load(registry.JUDGES[name])(env, rows)
        scores[name], records[name] = result if isinstance(result, tuple) else (result, [])
    unparsed = [[n for n in cfg.judges if scores[n][i] is None] for i in range(len(rows))]
    fill = UNPARSED_VALUE[cfg.llm.on_unparseable]
    scores = {n: [fill if s is None else float(s) for s in v] for n, v in scores.items()}
    out = []
    for i, r in enumerate(rows):
        row = {**r, **{f"score_{n}": scores[n][i] for n in cfg.judges}}
        row["score"] = _combine(cfg, scores, i)
        row["judge_unparsed"] = ",".join(unparsed[i])
        row["oracle_correct"] = oracle_correct(env.task, r["completion"], r["reference"])
        out.append(row)
    return out, {n: rec for n, rec in records.items() if rec}


def run_env(ctx: RunContext, policy: str, seed: int) -> JudgeEnv:
    """The judges as this run uses them, for the judge stage and for tools (compare): with
    judge.reward_model.train, the 'reward' judge scores with the reward model the run trained (RUN/reward_model); with
    slurm.judge_server, the LLM judge asks the server the run started."""
    cfg = ctx.recipe.judge
    if cfg.reward_model.train:
        trained = dataclasses.replace(cfg.reward_model, path=str(ctx.run_dir / "reward_model" / "model"))
        cfg = dataclasses.replace(cfg, reward_model=trained)

    if serves_judge(ctx.recipe):  # served by the run's own step
        served = dataclasses.replace(cfg.llm.openai, base_url=served_url(ctx.run_dir))
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, openai=served))
    return JudgeEnv(ctx.task, cfg, policy, seed, ctx.recipe.model.dtype)


def run_judge(ctx: RunContext, k: int) -> None:
    rows = load_rows(ctx.stage(k, "generate") / "data")
    env = run_env(ctx, ctx.checkpoint(k - 1), seeding.int_seed(ctx.recipe.seed, "judge", k))
    cfg = env.cfg
    with ctx.writing(k, "judge", {"judges": cfg.judges, "weights": cfg.weights, "combine": cfg.combine}) as (out, meta):
        judged, records = judge_rows(env, rows)
        save_rows(judged, out / "data")
        for name, rec in records.items():
            save_rows(rec, out / f"records_{name}")
        meta["mean_score"] = {n: sum(r[f"score_{n}"] for r in judged) / max(len(judged), 1) for n in cfg.judges}
        meta["unparsed"] = {n: sum(n in r["judge_unparsed"].split(",") for r in judged) for n in cfg.judges}
        # the compute ledger: a record with num_tokens is one model call (rule judges call none)
        calls = {n: [x for x in rec if "num_tokens" in x] for n, rec in records.items()}
        meta["calls"] = {n: len(calls.get(n, [])) for n in cfg.judges}
        meta["tokens"] = {n: int(sum(x["num_tokens"] for x in calls.get(n, []))) for n in cfg.judges}
