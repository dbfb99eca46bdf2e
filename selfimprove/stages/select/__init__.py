"""Stage 4, select: decide which kept samples become training data (dedup, caps, diversity sampler).

Steps run in order: dedup (exact, MinHash or embedding near-duplicates; within the round and against every earlier
round's accepted data), a per-prompt cap, then the sampler under the round's budget (``select.method``; see
samplers.py). Every candidate row keeps ``selected`` and ``select_reason``. The diversity weight of 'qdit' can be
raised by the monitor's 'steer' alarms.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.config import SelectConfig
from selfimprove.core.rows import load_rows, save_rows
from selfimprove.core.rundir import RunContext, accepted_rows
from selfimprove.core.typed_yaml import ConfigError
from selfimprove.metrics import dedup
from selfimprove.metrics.alarms import steered_diversity_weight
from selfimprove.stages.select import samplers
from selfimprove.stages.select.features import text_features


def _feature_text(r: dict, cfg: SelectConfig) -> str:
    return r["completion"] if cfg.feature_text == "completion" else dedup.dedup_text(r)


def _features(rows: list[dict], prior: list[dict], cfg: SelectConfig, unit: str, embedder: str, seed: int):
    X = text_features(
        [_feature_text(r, cfg) for r in prior + rows], cfg.features, cfg.feature_dim, unit, embedder, seed
    )
    return X[len(prior) :], X[: len(prior)]


def _needs_features(cfg: SelectConfig) -> bool:
    return (
        cfg.dedup == "embedding"
        or cfg.method in ("deita", "qdit")
        or (cfg.method == "cluster" and cfg.cluster_by == "features")
    )


def _complexity(rows: list[dict], kind: str) -> np.ndarray:
    if kind == "difficulty":
        return np.array([max(r["difficulty"], 0) + 1.0 for r in rows])
    if kind == "length":
        return np.array([r["num_tokens"] + 1.0 for r in rows])
    return np.ones(len(rows))


def sample_budget(rows: list[dict], cfg: SelectConfig, X, prior_X, lam: float, seed: int = 0) -> list[int]:
    """Indices of ``rows`` the configured sampler keeps under ``cfg.budget``."""
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    budget = cfg.budget or len(rows)
    if cfg.method == "score":
        return samplers.by_score(scores, budget)
    if cfg.method == "random":
        return samplers.at_random(len(rows), budget, seed)
    if cfg.method == "cluster":
        labels = (
            samplers.kmeans_labels(X, cfg.clusters or max(1, int(np.sqrt(len(rows)))), seed)
            if cfg.cluster_by == "features"
            else [r[cfg.cluster_by] for r in rows]
        )
        mix = {type(labels[0])(k): v for k, v in cfg.target_mix.items()} if cfg.target_mix and labels else None
        return samplers.cluster_rebalance(scores, labels, budget, mix)
    if cfg.method == "deita":
        return samplers.deita(X, scores, _complexity(rows, cfg.deita_complexity), budget, cfg.deita_tau, prior_X)
    return samplers.qdit(X, scores, budget, lam, cfg.knn, prior_X, seed)


def select_rows(
    rows: list[dict],
    cfg: SelectConfig,
    prior: list[dict] = (),
    lam: float | None = None,
    unit: str = "char",
    embedder: str = "",
    seed: int = 0,
) -> list[dict]:
    """Rows with selected / select_reason; ``prior`` = earlier rounds' accepted rows."""
    prior = list(prior)
    lam = cfg.diversity_weight if lam is None else lam
    reasons = (
        dedup.exact(rows, {(r["prompt"], r["completion"]) for r in prior})
        if cfg.dedup != "none"
        else [None] * len(rows)
    )
    live = [i for i, why in enumerate(reasons) if why is None]
    X = prior_X = None
    if _needs_features(cfg) and live:
        X, prior_X = _features([rows[i] for i in live], prior, cfg, unit, embedder, seed)
    if cfg.dedup == "minhash":
        near = dedup.minhash(
            [rows[i] for i in live], prior, cfg.minhash_threshold, cfg.minhash_ngram, unit, cfg.minhash_perm
        )
    elif cfg.dedup == "embedding" and live:
        near = dedup.embedding(X, prior_X, cfg.embedding_threshold)
    else:
        near = [None] * len(live)
    for i, why in zip(live, near):
        reasons[i] = why
    keep = [j for j, i in enumerate(live) if reasons[i] is None]  # positions in live / X
    per_prompt: Counter = Counter()
    capped = []
    for j in sorted(keep, key=lambda j: (-rows[live[j]]["score"], live[j])):  # each prompt's best samples first
        r = rows[live[j]]
        if cfg.per_prompt_cap and per_prompt[r["prompt_id"]] >= cfg.per_prompt_cap:
            reasons[live[j]] = "per_prompt_cap"
            continue
        per_prompt[r["prompt_id"]] += 1
        capped.append(j)
    capped.sort()
    if capped:
        pool = [rows[live[j]] for j in capped]
        chosen = set(sample_budget(pool, cfg, X[capped] if X is not None else None, prior_X, lam, seed))
        for pos, j in enumerate(capped):
            if pos not in chosen:
                reasons[live[j]] = "over_budget" if cfg.method == "score" else f"not_chosen_by_{cfg.method}"
    return [{**r, "selected": why is None, "select_reason": why or "selected"} for r, why in zip(rows, reasons)]


def oracle_relabel(rows: list[dict], task, noise: float, rng) -> list[dict]:
    """labels 'oracle': each selected row trains on its reference (a share ``noise`` of them on a wrong answer of the
    same shape), its own sample kept in ``self_completion``. The prompts chosen stay the label-free loop's."""
    if noise and not task.corrupts:
        raise ConfigError(
            [
                f"select.oracle_label_noise: task {task.name!r} cannot make a wrong label of the right "
                "shape. Use oracle_label_noise 0 or the addition / rewrite task."
            ]
        )
    out = []
    for r in rows:
        if r["selected"]:
            if not r.get("reference"):
                raise ConfigError(
                    [
                        f"select.labels 'oracle': prompt {r['prompt_id']!r} has no reference answer. "
                        "Use labels 'self' for a task without references."
                    ]
                )
            label = task.corrupt(rng, r["reference"]) if rng.random() < noise else r["reference"]
            r = {**r, "self_completion": r["completion"], "completion": label}
        else:
            r = {**r, "self_completion": r["completion"]}
        out.append(r)
    return out


def run_select(ctx: RunContext, k: int) -> None:
    kept = [r for r in load_rows(ctx.stage(k, "filter") / "data") if r["kept"]]
    cfg, m = ctx.recipe.select, ctx.recipe.monitor
    lam = steered_diversity_weight(ctx, k)
    with ctx.writing(
        k,
        "select",
        {
            "method": cfg.method,
            "dedup": cfg.dedup,
            "per_prompt_cap": cfg.per_prompt_cap,
            "budget": cfg.budget,
            "diversity_weight": lam,
        },
    ) as (out, meta):
        selected = select_rows(
            kept, cfg, accepted_rows(ctx, k), lam, m.unit, m.embedder, seeding.int_seed(ctx.recipe.seed, "select", k)
        )
        if cfg.labels == "oracle":
            selected = oracle_relabel(
                selected, ctx.task, cfg.oracle_label_noise, seeding.rng(ctx.recipe.seed, "oracle_labels", k)
            )
        save_rows(selected, out / "data")
        meta.update(
            candidates=len(selected),
            selected=sum(r["selected"] for r in selected),
            reasons=dict(Counter(r["select_reason"] for r in selected)),
        )
