"""Stage 3, filter: keep samples by quality. Every row stays on disk with ``kept`` and ``filter_reason``.

The rules run in the order of RULES: decontamination (n-gram overlap with the eval prompts and
the dev and probe sets), unparseable judge verdicts (when the recipe drops them), length and finish rules, per-judge
score thresholds (keep-correct = {verifier: 1}); then best-of-n per prompt. The stage also builds (chosen, rejected)
pairs per prompt for DPO when ``filter.pairs`` asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfimprove.core.config import FilterConfig
from selfimprove.core.prompts import prompt_content
from selfimprove.core.rows import by_prompt, load_rows, save_rows
from selfimprove.core.rundir import RunContext
from selfimprove.metrics.diversity import grams


def contamination_index(texts: list[str], n: int, unit: str) -> set[str]:
    """Every n-gram of the protected texts (eval prompts; dev and probe prompts and answers)."""
    return {g for t in texts for g in grams(t, n, unit)}


@dataclass
class FilterContext:
    """What a filter rule may read besides the row."""

    cfg: object
    index: set[str]  # contamination_index of the protected texts
    unit: str
    drop_unparsed: bool


def contaminated(r: dict, c: FilterContext) -> list[str]:
    n = c.cfg.decontaminate_ngram
    hit = c.index and any(g in c.index for t in (prompt_content(r), r["completion"]) for g in grams(t, n, c.unit))
    return ["contaminated"] if hit else []


def unparsed(r: dict, c: FilterContext) -> list[str]:
    return [f"unparsed:{r['judge_unparsed']}"] if c.drop_unparsed and r.get("judge_unparsed") else []


def length(r: dict, c: FilterContext) -> list[str]:
    lo, hi = c.cfg.min_tokens, c.cfg.max_tokens
    return ([f"tokens<{lo}"] if lo and r["num_tokens"] < lo else []) + (
        [f"tokens>{hi}"] if hi and r["num_tokens"] > hi else []
    )


def unfinished(r: dict, c: FilterContext) -> list[str]:
    return ["unfinished"] if c.cfg.drop_unfinished and not r["finished"] else []


def below_threshold(r: dict, c: FilterContext) -> list[str]:
    return [f"score_{name}<{t}" for name, t in c.cfg.min_scores.items() if r[f"score_{name}"] < t]


# The filter chain, in order: rule name -> function (row, FilterContext) -> the reasons it fails (empty: it passes).
# Decontamination comes first and, when it fails, is the only reason given. Best-of-n per prompt runs last.
RULES = {
    "decontaminate": contaminated,
    "unparsed": unparsed,
    "length": length,
    "unfinished": unfinished,
    "min_scores": below_threshold,
}


def _reasons(r: dict, c: FilterContext) -> list[str]:
    """Every rule the row fails, in RULES' order; a contaminated row gets that reason alone."""
    failed = []
    for name, rule in RULES.items():
        why = rule(r, c)
        if why and name == "decontaminate":
            return why
        failed += why
    return failed


def filter_rows(
    rows: list[dict],
    cfg: FilterConfig,
    protected: set[str] = frozenset(),
    unit: str = "char",
    drop_unparsed: bool = False,
) -> list[dict]:
    """Rows with kept / filter_reason. ``protected`` is a contamination_index of texts no training sample may touch."""
    out, c = [], FilterContext(cfg, protected, unit, drop_unparsed)
    for r in rows:
        failed = _reasons(r, c) if cfg.enabled else []
        out.append(
            {
                **r,
                "kept": not failed,
                "filter_reason": ",".join(failed) or ("kept" if cfg.enabled else "filter disabled"),
            }
        )
    if cfg.enabled and cfg.best_of_n > 0:
        for group in by_prompt([r for r in out if r["kept"]]).values():
            for r in sorted(group, key=lambda x: (-x["score"], x["sample_idx"]))[cfg.best_of_n :]:
                r["kept"], r["filter_reason"] = False, f"not in best_of_{cfg.best_of_n}"
    return out


def build_pairs(rows: list[dict], cfg: FilterConfig) -> list[dict]:
    """(chosen, rejected) per prompt: chosen is a kept sample, rejected any sample of the same prompt scoring lower by
    more than ``pair_margin``; identical completions never pair. Ties in score break by sample order."""
    pairs = []
    for group in by_prompt(rows).values():
        ranked = sorted(group, key=lambda x: (-x["score"], x["sample_idx"]))
        candidates = [
            (c, r)
            for c in ranked
            if c["kept"]
            for r in ranked[::-1]
            if c["score"] - r["score"] > 0
            and c["score"] - r["score"] >= cfg.pair_margin
            and c["completion"] != r["completion"]
        ]
        if cfg.pairs == "best_vs_worst":
            candidates = candidates[:1]  # best kept first, worst sample first within it
        else:
            candidates.sort(key=lambda cr: -(cr[0]["score"] - cr[1]["score"]))  # stable: ties keep rank order
            candidates = candidates[: cfg.pairs_per_prompt] if cfg.pairs_per_prompt else candidates
        pairs += [
            {
                "prompt_id": c["prompt_id"],
                "prompt": c["prompt"],
                "chosen": c["completion"],
                "rejected": r["completion"],
                "score_chosen": c["score"],
                "score_rejected": r["score"],
                "chosen_idx": c["sample_idx"],
                "rejected_idx": r["sample_idx"],
                "round": c["round"],
            }
            for c, r in candidates
        ]
    return pairs


def run_filter(ctx: RunContext, k: int) -> None:
    rows = load_rows(ctx.stage(k, "judge") / "data")
    cfg, unit = ctx.recipe.filter, ctx.recipe.monitor.unit
    protected: set[str] = set()
    if cfg.decontaminate_ngram:
        # Eval prompts only: an eval answer must never change what is trained on (the invariance test); the dev and
        # probe answers may be used, as every decision may read them.
        texts = [prompt_content(r) for r in ctx.eval_rows()]
        texts += [t for r in ctx.dev_rows() + ctx.probe_rows() for t in (prompt_content(r), r["reference"]) if t]
        protected = contamination_index(texts, cfg.decontaminate_ngram, unit)
    drop_unparsed = ctx.recipe.judge.llm.on_unparseable == "drop"
    meta0 = {"enabled": cfg.enabled, "min_scores": cfg.min_scores, "best_of_n": cfg.best_of_n, "pairs": cfg.pairs}
    with ctx.writing(k, "filter", meta0) as (out, meta):
        filtered = filter_rows(rows, cfg, protected, unit, drop_unparsed)
        save_rows(filtered, out / "data")
        meta.update(
            rows=len(filtered),
            kept=sum(r["kept"] for r in filtered),
            contaminated=sum(r["filter_reason"] == "contaminated" for r in filtered),
        )
        if cfg.pairs != "none":
            pairs = build_pairs(filtered, cfg)
            save_rows(pairs, out / "pairs")
            meta["pairs"] = len(pairs)
