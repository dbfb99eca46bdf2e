"""Stage 3, filter: keep samples by score (quality). Every row stays on disk with ``kept`` and ``filter_reason``."""

from __future__ import annotations

from collections import defaultdict

from selfimprove.rundir import atomic_stage, load_rows, save_rows


def filter_rows(rows: list[dict], cfg) -> list[dict]:
    """Thresholds per judge (``min_scores``), then best-of-n per prompt by ``score``."""
    out = []
    for r in rows:
        failed = [f"score_{n}<{t}" for n, t in cfg.min_scores.items() if r[f"score_{n}"] < t] if cfg.enabled else []
        out.append({**r, "kept": not failed, "filter_reason": ",".join(failed) or ("kept" if cfg.enabled else "filter disabled")})
    if cfg.enabled and cfg.best_of_n > 0:
        by_prompt = defaultdict(list)
        for r in out:
            if r["kept"]:
                by_prompt[r["prompt_id"]].append(r)
        for group in by_prompt.values():
            for r in sorted(group, key=lambda x: (-x["score"], x["sample_idx"]))[cfg.best_of_n:]:
                r["kept"], r["filter_reason"] = False, f"not in best_of_{cfg.best_of_n}"
    return out


def run_filter(ctx, k: int) -> None:
    rows = load_rows(ctx.stage(k, "judge") / "data")
    cfg = ctx.recipe.filter
    with atomic_stage(ctx.stage(k, "filter"), {"enabled": cfg.enabled, "min_scores": cfg.min_scores, "best_of_n": cfg.best_of_n}) as (out, meta):
        filtered = filter_rows(rows, cfg)
        save_rows(filtered, out / "data")
        meta.update(rows=len(filtered), kept=sum(r["kept"] for r in filtered))
