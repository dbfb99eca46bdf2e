"""Stage 6, evaluate: greedy accuracy of round k's policy on the run's fixed eval sets (made once, never trained on),
and samples on the fixed probe set: the same prompts, sampling settings and seed every round, so the monitor's
diversity numbers compare checkpoints and nothing else."""

from __future__ import annotations

from selfimprove.generate import Sampling, sample
from selfimprove.judge import oracle_correct
from selfimprove.rundir import atomic_stage, load_rows, save_rows


def _backend(ctx) -> str:
    """The policy's backend; a server ('openai') serves a fixed model, not this round's checkpoint, so eval runs 'hf'."""
    return "hf" if ctx.recipe.generate.backend == "openai" else ctx.recipe.generate.backend


def _probe(ctx, ckpt: str) -> list[dict]:
    m = ctx.recipe.monitor
    rows = load_rows(ctx.run_dir / "probe_set" / "data")
    sampling = Sampling(m.probe_samples, m.probe_temperature, max_new_tokens=ctx.task.max_new_tokens(rows))
    outs = sample(_backend(ctx), ckpt, [r["prompt"] for r in rows], sampling, ctx.recipe.seed * 1000 + 999,
                  ctx.recipe.evaluate.batch_size, ctx.recipe.model.dtype, "probe", chat=ctx.recipe.generate.chat_template,
                  options=ctx.recipe.generate)
    return [{**r, "sample_idx": j, **o, "oracle_correct": oracle_correct(ctx.task, o["completion"], r["reference"])}
            for r, os_ in zip(rows, outs) for j, o in enumerate(os_)]


def run_evaluate(ctx, k: int) -> None:
    rows = ctx.eval_rows()
    ckpt = ctx.checkpoint(k)
    sampling = Sampling(max_new_tokens=ctx.task.max_new_tokens(rows))
    with atomic_stage(ctx.stage(k, "evaluate"), {"checkpoint": ctx.relative(ckpt), "sampling": sampling.as_dict()}) as (out, meta):
        outs = sample(_backend(ctx), ckpt, [r["prompt"] for r in rows], sampling, 0, ctx.recipe.evaluate.batch_size,
                      ctx.recipe.model.dtype, f"round {k} eval", chat=ctx.recipe.generate.chat_template,
                      options=ctx.recipe.generate)
        scored = [{**r, "completion": o[0]["completion"], "correct": ctx.task.is_correct(o[0]["completion"], r["reference"])}
                  for r, o in zip(rows, outs)]
        save_rows(scored, out / "data")
        meta["metrics"] = ctx.task.eval_metrics(scored)
        if ctx.recipe.monitor.probe_size:
            save_rows(_probe(ctx, ckpt), out / "probe")
