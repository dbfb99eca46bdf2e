"""Stage 6, evaluate: greedy accuracy of round k's policy on the run's fixed eval sets (made once, never trained on),
and samples on the fixed probe set: the same prompts, sampling settings and seed every round, so the monitor's
diversity numbers compare checkpoints and nothing else."""

from __future__ import annotations

from selfimprove.backends import Sampling, sample
from selfimprove.core import seeding
from selfimprove.core.rows import load_rows, save_rows
from selfimprove.core.rundir import RunContext
from selfimprove.tasks import oracle_correct


def _backend(ctx: RunContext) -> str:
    """The policy's backend; a server ('openai') serves a fixed model, not this round's checkpoint, so eval
    runs 'hf'."""
    return "hf" if ctx.recipe.generate.backend == "openai" else ctx.recipe.generate.backend


def probe_samples(ctx: RunContext, ckpt: str, stats: dict | None = None) -> list[dict]:
    """The fixed probe set sampled from ``ckpt`` exactly as every round samples it (also used by compare); ``stats``:
    the vLLM engine's mode and timings (selfimprove.backends.sample)."""
    m = ctx.recipe.monitor
    rows = load_rows(ctx.run_dir / "probe_set" / "data")
    sampling = Sampling(m.probe_samples, m.probe_temperature, max_new_tokens=ctx.task.max_new_tokens(rows))
    outs = sample(
        _backend(ctx),
        ckpt,
        [r["prompt"] for r in rows],
        sampling,
        seeding.int_seed(ctx.recipe.seed, "probe_sampling"),
        ctx.recipe.evaluate.batch_size,
        ctx.recipe.model.dtype,
        "probe",
        fmt=ctx.prompt_format,
        options=ctx.recipe.generate,
        stats=stats,
    )
    return [
        {**r, "sample_idx": j, **o, "oracle_correct": oracle_correct(ctx.task, o["completion"], r["reference"])}
        for r, os_ in zip(rows, outs)
        for j, o in enumerate(os_)
    ]


def _eval_sampling(rows: list[dict], task) -> Sampling:
    return Sampling(max_new_tokens=task.max_new_tokens(rows))


def eval_rows_scored(
    ctx: RunContext, ckpt: str, desc: str = "eval", rows: list[dict] | None = None, stats: dict | None = None
) -> list[dict]:
    """The run's eval sets (or ``rows``) answered greedily by ``ckpt``, each row with its completion and ``correct``."""
    rows = ctx.eval_rows() if rows is None else rows
    outs = sample(
        _backend(ctx),
        ckpt,
        [r["prompt"] for r in rows],
        _eval_sampling(rows, ctx.task),
        0,
        ctx.recipe.evaluate.batch_size,
        ctx.recipe.model.dtype,
        desc,
        fmt=ctx.prompt_format,
        options=ctx.recipe.generate,
        stats=stats,
    )
    return [
        {**r, "completion": o[0]["completion"], "correct": ctx.task.is_correct(o[0]["completion"], r["reference"])}
        for r, o in zip(rows, outs)
    ]


def run_evaluate(ctx: RunContext, k: int) -> None:
    ckpt = str(ctx.stage(k, "train") / "model")  # this round's own, even if a later alarm rolls it back
    sampling = _eval_sampling(ctx.eval_rows(), ctx.task)
    with ctx.writing(k, "evaluate", {"checkpoint": ctx.relative(ckpt), "sampling": sampling.as_dict()}) as (out, meta):
        calls: list[dict] = []  # each vLLM call's engine mode and timings (none with other backends)
        scored = eval_rows_scored(ctx, ckpt, f"round {k} eval", stats=_call(calls))
        save_rows(scored, out / "data")
        meta["metrics"] = ctx.task.eval_metrics(scored)
        dev = ctx.dev_rows()
        if dev:  # decisions (the accelerated curriculum) read these dev/... numbers, never eval/...
            dev_scored = eval_rows_scored(ctx, ckpt, f"round {k} dev", dev, _call(calls))
            save_rows(dev_scored, out / "dev")
            meta["metrics"].update(
                {"dev/" + key.removeprefix("eval/"): v for key, v in ctx.task.eval_metrics(dev_scored).items()}
            )
        if ctx.recipe.monitor.probe_size:
            save_rows(probe_samples(ctx, ckpt, _call(calls)), out / "probe")
        if any(calls):
            meta["vllm"] = calls


def _call(calls: list[dict]) -> dict:
    calls.append({})
    return calls[-1]
