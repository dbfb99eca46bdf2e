"""Stage 1, generate: round k's prompts (the task's, and the propose stage's when it runs), ``generate.num_samples``
completions each from round k-1's checkpoint through selfimprove.backends, one row per sample with its lineage
(checkpoint, sampling, seed; for proposed prompts also who proposed them, from what, how). Under
several processes (nodes) each rank writes its share to round_k/generate.shards/ and rank 0 assembles the stage."""

from __future__ import annotations

import shutil

from selfimprove.backends import Sampling, sample
from selfimprove.core import seeding
from selfimprove.core.dist import dist_rank_world
from selfimprove.core.integrity import shards_of
from selfimprove.core.rows import save_rows
from selfimprove.core.rundir import RunContext
from selfimprove.metrics.alarms import steered_temperature


def run_generate(ctx: RunContext, k: int) -> None:
    """Write round k's prompts and samples (one row per sample, with lineage) to round_k/generate/."""
    r = ctx.recipe
    prompts = ctx.round_prompts(k)
    ckpt = ctx.checkpoint(k - 1)
    sampling = Sampling(
        r.generate.num_samples,
        steered_temperature(ctx, k),
        r.generate.top_p,
        r.generate.top_k,
        r.generate.max_new_tokens or ctx.task.max_new_tokens(prompts),
    )
    seed = seeding.int_seed(r.seed, "generate", k)
    shards = shards_of(ctx.stage(k, "generate"))  # each rank's samples, for rank 0 to assemble the stage
    with ctx.writing(
        k, "generate", {"checkpoint": ctx.relative(ckpt), "sampling": sampling.as_dict(), "seed": seed}
    ) as (out, meta):
        samples = sample(
            r.generate.backend,
            ckpt,
            [p["prompt"] for p in prompts],
            sampling,
            seed,
            r.generate.batch_size,
            r.model.dtype,
            f"round {k} generate",
            fmt=ctx.prompt_format,
            options=r.generate,
            shards=shards,
            stats=(engine := {}),
        )
        rows = [
            {
                **p,
                "sample_idx": j,
                **s,
                "round": k,
                "checkpoint": ctx.relative(ckpt),
                **sampling.as_dict(),
                "seed": seed,
            }
            for p, ss in zip(prompts, samples)
            for j, s in enumerate(ss)
        ]
        save_rows(rows, out / "data")
        meta.update(
            prompts=len(prompts),
            samples=len(rows),
            tokens=sum(x["num_tokens"] for x in rows),
            backend=r.generate.backend,
            request_errors=sum(bool(x.get("error")) for x in rows),
            **({"vllm": engine} if engine else {}),
        )
    if dist_rank_world()[0] == 0:
        shutil.rmtree(shards, ignore_errors=True)
