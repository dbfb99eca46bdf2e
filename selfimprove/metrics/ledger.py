"""The compute ledger: what a round spent, read from its stages' records, so a study can check that its arms were
matched in compute instead of assuming it.

``compute/<quantity>`` per round and ``compute/total/<quantity>`` through it, in metrics.jsonl:
prompts posed and samples generated for the round's data (and their generated tokens), proposals sampled by the
propose stage and the policy samples its learnability filter drew (with their tokens), ``sampled_tokens`` (all three
kinds of tokens together: what a control arm without proposing must spend to match a proposing arm), model-judge
calls and their
tokens (rule judges call no model), training rows, real tokens the optimizer steps saw and the padding share of their
positions, and optimizer steps. Every count is a function of the run's data, so a resumed run has the same ledger;
the model-bound seconds are ``time/compute_s`` (selfimprove.core.timing), beside it. An online (GRPO) round's prompts,
samples and generated tokens are its rollouts', its training rows the rollouts, its trained tokens their prompt and
completion tokens once per pass over them (GRPOConfig.num_iterations). Evaluation and the probe are the
same for every arm and not counted here.
"""

from __future__ import annotations

from selfimprove.core.atomic import is_done
from selfimprove.core.files import read_json
from selfimprove.core.rows import load_rows
from selfimprove.core.rundir import RunContext

COUNTS = (
    "prompts_posed",
    "samples_generated",
    "generated_tokens",
    "proposals_sampled",
    "proposal_tokens",
    "learnability_samples",
    "learnability_tokens",
    "sampled_tokens",
    "judge_calls",
    "judge_tokens",
    "train_rows",
    "trained_tokens",
    "trained_positions",
    "optimizer_steps",
)


def _meta(ctx: RunContext, k: int, name: str) -> dict:
    folder = ctx.stage(k, name)
    return read_json(folder / "meta.json") if is_done(folder) else {}


def round_ledger(ctx: RunContext, k: int) -> dict:
    """Round k's compute/... and compute/total/... metrics (totals from the earlier rounds' own ledgers)."""
    gen, prop, judge, train = (_meta(ctx, k, n) for n in ("generate", "propose", "judge", "train"))
    gen = gen or train.get("generated", {})  # an online (GRPO) round samples inside training
    spent = {
        "prompts_posed": gen.get("prompts", 0),
        "samples_generated": gen.get("samples", 0),
        "generated_tokens": gen.get("tokens", 0),
        "proposals_sampled": prop.get("candidates", 0),
        "proposal_tokens": _proposal_tokens(ctx, k) if prop else 0,
        "learnability_samples": prop.get("learnability_samples", 0),
        "learnability_tokens": prop.get("learnability_tokens", 0),
        "judge_calls": sum(judge.get("calls", {}).values()),
        "judge_tokens": sum(judge.get("tokens", {}).values()),
        "train_rows": train.get("rows", 0),
        "trained_tokens": train.get("trained_tokens", 0),
        "trained_positions": train.get("trained_positions", 0),
        "optimizer_steps": train.get("steps", 0),
    }
    spent["sampled_tokens"] = sum(spent[q] for q in ("generated_tokens", "proposal_tokens", "learnability_tokens"))
    earlier = ctx.history(k)
    total = {q: spent[q] + sum(h.get(f"compute/{q}", 0) for h in earlier) for q in COUNTS}
    out = {f"compute/{q}": v for q, v in spent.items()} | {f"compute/total/{q}": v for q, v in total.items()}
    for prefix, counts in (("compute/", spent), ("compute/total/", total)):
        out[f"{prefix}padding_share"] = _padding(counts)
    return out


def _padding(counts: dict) -> float:
    positions = counts["trained_positions"]
    return round(1 - counts["trained_tokens"] / positions, 4) if positions else 0.0


def _proposal_tokens(ctx: RunContext, k: int) -> int:
    return int(sum(r.get("num_tokens", 0) for r in load_rows(ctx.stage(k, "propose") / "data")))
