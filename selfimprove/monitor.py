"""Stage 7, monitor: one flat, slash-named metrics dict per round (eval/, quality/, diversity/, train/, time/).

It reads only what earlier stages wrote, so ``selfimprove monitor RUN_DIR`` recomputes the same numbers after the
fact. More metrics plug in through ``monitor.extra_metrics`` ("module:function", called with the round's rows).
"""

from __future__ import annotations

import functools
import importlib
from collections import defaultdict

import numpy as np

from selfimprove.diversity import compression_ratio, distinct_n, ngram_vendi, self_bleu
from selfimprove.rundir import atomic_stage, is_done, load_rows, read_json, rebuild_metrics, write_json

STAGES_TIMED = ("generate", "judge", "filter", "select", "train", "evaluate")


def _by_prompt(rows: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["prompt_id"]].append(r)
    return list(groups.values())


def distinct_answers_per_prompt(rows: list[dict], answer) -> float:
    return _mean(len({answer(r["completion"]) for r in g}) for g in _by_prompt(rows))


def answer_metrics(rows: list[dict], answer, k: int, name: str, quality: str) -> dict:
    """diversity/<name>/answer_entropy and, where ground truth is known, <quality>pass@1, pass@k and their gap
    (Wu et al.'s signal)."""
    from selfimprove.quality import answer_entropy, pass_at_k

    groups = _by_prompt(rows)
    out = {f"diversity/{name}/answer_entropy": _mean(answer_entropy([answer(r["completion"]) for r in g]) for g in groups)}
    labelled = [g for g in groups if all(r["oracle_correct"] >= 0 for r in g) and len(g) >= k]
    if labelled:
        p1 = _mean(pass_at_k(len(g), sum(r["oracle_correct"] for r in g), 1) for g in labelled)
        pk = _mean(pass_at_k(len(g), sum(r["oracle_correct"] for r in g), k) for g in labelled)
        out.update({f"{quality}pass@1": p1, f"{quality}pass@{k}": pk, f"{quality}pass@k_minus_pass@1": pk - p1})
    return out


@functools.lru_cache(maxsize=2)
def _embedder(path: str):
    from selfimprove.embedding import load_embedder

    return load_embedder(path)


def _subsample(texts: list[str], m: int) -> list[str]:
    """A fixed-size, seeded subsample: diversity numbers grow with N, so every round is measured on the same N."""
    if len(texts) <= m:
        return texts
    return [texts[i] for i in sorted(np.random.default_rng(0).choice(len(texts), m, replace=False))]


def _mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else 0.0


def diversity_metrics(ctx, name: str, rows: list[dict]) -> dict:
    """The diversity block for one set of samples, as diversity/<name>/..."""
    texts = [r["completion"] for r in rows]
    m = ctx.recipe.monitor
    out = {f"diversity/{name}/distinct_{n}": distinct_n(texts, n, m.unit) for n in m.distinct_n}
    out[f"diversity/{name}/distinct_answers_per_prompt"] = distinct_answers_per_prompt(rows, ctx.task.answer)
    sample = _subsample(texts, m.vendi_samples)
    out[f"diversity/{name}/ngram_vendi"] = ngram_vendi(sample, unit=m.unit)
    if m.embedding:
        from selfimprove.embedding import embedding_diversity

        out.update({f"diversity/{name}/{k}": v for k, v in embedding_diversity(sample, _embedder(m.embedder)).items()})
    if m.self_bleu_samples:  # O(N^2) and flat on tiny alphabets, so opt-in
        out[f"diversity/{name}/self_bleu"] = self_bleu(sample, unit=m.unit, sample=m.self_bleu_samples)
    out[f"diversity/{name}/compression_ratio"] = compression_ratio(texts)
    return out


def probe_metrics(ctx, k: int) -> dict:
    """The fixed probe set, sampled the same way every round: diversity/probe/... and quality/probe/..."""
    rows = load_rows(ctx.stage(k, "evaluate") / "probe")
    return {**diversity_metrics(ctx, "probe", rows),
            **answer_metrics(rows, ctx.task.answer, ctx.recipe.monitor.probe_samples, "probe", "quality/probe/")}


def data_metrics(ctx, rows: dict[str, list[dict]]) -> dict:
    """Quality and simple diversity numbers of the round's generated / kept / selected data."""
    gen, kept, sel = rows["generate"], rows["kept"], rows["selected"]
    out = {"quality/generated": len(gen), "quality/kept": len(kept), "quality/selected": len(sel),
           "quality/acceptance_rate": len(kept) / len(gen) if gen else 0.0,
           "quality/mean_score": _mean(r["score"] for r in rows["judge"])}
    for name in ctx.recipe.judge.judges:
        out[f"quality/mean_score_{name}"] = _mean(r[f"score_{name}"] for r in rows["judge"])
    labelled = [r for r in sel if r["oracle_correct"] >= 0]
    if labelled:  # measured against ground truth the loop never trains on
        out["quality/pseudo_label_accuracy"] = _mean(r["oracle_correct"] for r in labelled)
    out.update(diversity_metrics(ctx, "generated", gen))
    out.update(diversity_metrics(ctx, "selected", sel))
    out.update(answer_metrics(gen, ctx.task.answer, ctx.recipe.generate.num_samples, "generated", "quality/"))
    if gen:
        out["task/max_difficulty"] = max(r["difficulty"] for r in gen)
    return out


def round_metrics(ctx, k: int) -> dict:
    metrics: dict = {"round": k}
    metrics.update(read_json(ctx.stage(k, "evaluate") / "meta.json")["metrics"])
    train_meta = read_json(ctx.stage(k, "train") / "meta.json")
    metrics.update({"train/first_loss": train_meta["first_loss"], "train/last_loss": train_meta["last_loss"],
                    "train/steps": train_meta["steps"], "train/rows": train_meta["rows"]})
    if ctx.recipe.monitor.probe_size:
        metrics.update(probe_metrics(ctx, k))
    for stage in STAGES_TIMED:
        if is_done(ctx.stage(k, stage)):
            metrics[f"time/{stage}_s"] = read_json(ctx.stage(k, stage) / "meta.json")["wall_s"]
    if k == 0:
        metrics["task/max_difficulty"] = max((r["difficulty"] for r in load_rows(ctx.run_dir / "seed_data" / "data")), default=0)
        return metrics
    judged = load_rows(ctx.stage(k, "filter") / "data")  # every judged row, scores included, plus the filter's decision
    kept = [r for r in judged if r["kept"]]
    selected = [r for r in load_rows(ctx.stage(k, "select") / "data") if r["selected"]]
    rows = {"generate": judged, "judge": judged, "kept": kept, "selected": selected}
    metrics.update(data_metrics(ctx, rows))
    for path in ctx.recipe.monitor.extra_metrics:
        module, func = path.split(":")
        metrics.update(getattr(importlib.import_module(module), func)(rows))
    return metrics


def run_monitor(ctx, k: int) -> dict:
    from selfimprove.alarms import check_alarms

    with atomic_stage(ctx.stage(k, "monitor")) as (out, meta):
        metrics = round_metrics(ctx, k)
        fired = check_alarms(ctx.recipe.monitor.alarms, ctx.history(k) + [metrics])
        metrics.update({f"alarm/{a['metric']}": 1 for a in fired})
        write_json(out / "alarms.json", fired)
        write_json(out / "metrics.json", metrics)
    rebuild_metrics(ctx.run_dir)
    return metrics
