"""Stage 4, select: decide which kept samples become training data (the diversity / rebalance step).

Steps run in order: exact dedup (within the round and against every earlier round's accepted data), a per-prompt
cap, then a total budget taken by score. Rows keep ``selected`` and ``select_reason``.
"""

from __future__ import annotations

from collections import Counter

from selfimprove.rundir import atomic_stage, is_done, load_rows, save_rows


def accepted_rows(ctx, before: int) -> list[dict]:
    """Training data accepted in rounds 1..before-1."""
    rows = []
    for j in range(1, before):
        d = ctx.stage(j, "select")
        if is_done(d):
            rows += [r for r in load_rows(d / "data") if r["selected"]]
    return rows


def select_rows(rows: list[dict], cfg, seen: set[tuple[str, str]]) -> list[dict]:
    out, per_prompt = [], Counter()
    seen = set(seen)
    for r in rows:
        key = (r["prompt"], r["completion"])
        reason = "selected"
        if cfg.dedup == "exact" and key in seen:
            reason = "duplicate"
        elif cfg.per_prompt_cap and per_prompt[r["prompt_id"]] >= cfg.per_prompt_cap:
            reason = "per_prompt_cap"
        if reason == "selected":
            seen.add(key)
            per_prompt[r["prompt_id"]] += 1
        out.append({**r, "selected": reason == "selected", "select_reason": reason})
    if cfg.budget:
        ranked = sorted((i for i, r in enumerate(out) if r["selected"]), key=lambda i: (-out[i]["score"], i))
        for i in ranked[cfg.budget:]:
            out[i]["selected"], out[i]["select_reason"] = False, "over_budget"
    return out


def run_select(ctx, k: int) -> None:
    kept = [r for r in load_rows(ctx.stage(k, "filter") / "data") if r["kept"]]
    cfg = ctx.recipe.select
    seen = {(r["prompt"], r["completion"]) for r in accepted_rows(ctx, k)}
    with atomic_stage(ctx.stage(k, "select"), {"dedup": cfg.dedup, "per_prompt_cap": cfg.per_prompt_cap, "budget": cfg.budget}) as (out, meta):
        selected = select_rows(kept, cfg, seen)
        save_rows(selected, out / "data")
        meta.update(candidates=len(selected), selected=sum(r["selected"] for r in selected))
