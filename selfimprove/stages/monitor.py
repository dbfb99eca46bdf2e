"""Stage 7, monitor: one flat, slash-named metrics dict per round (eval/, quality/, diversity/, train/, time/).

It reads only what earlier stages wrote, so ``selfimprove monitor RUN_DIR`` recomputes the same numbers after the
fact. More metrics plug in through ``monitor.extra_metrics`` ("module:function", called with the round's judged rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfimprove import registry
from selfimprove.core import decisions
from selfimprove.core.atomic import is_done
from selfimprove.core.files import read_json, write_json
from selfimprove.core.model import load_policy, load_tokenizer
from selfimprove.core.prompts import is_proposed, prompt_content
from selfimprove.core.rows import by_prompt, load_rows
from selfimprove.core.rundir import RunContext, earlier_prompts, rebuild_metrics
from selfimprove.core.tracking import log_round
from selfimprove.metrics.alarms import check_alarms
from selfimprove.metrics.complexity import complexity_metrics, ifd_scores
from selfimprove.metrics.diversity import coverage, subsample
from selfimprove.metrics.embedding import embedding_diversity, load_embedder
from selfimprove.metrics.ledger import round_ledger
from selfimprove.metrics.prompts import prompt_metrics, propose_mix
from selfimprove.metrics.quality import (
    answer_entropy,
    judge_agreement,
    judge_vs_truth,
    pass_at_k,
    pass_at_k_curve,
    score_stats,
)
from selfimprove.metrics.suite import SuiteConfig, text_diversity


def distinct_answers_per_prompt(rows: list[dict], answer) -> float:
    return _mean(len({answer(r["completion"]) for r in g}) for g in by_prompt(rows).values())


def prompt_answer_values(group: list[dict], answer, k: int) -> dict:
    """One prompt's answer diversity and, where ground truth is known for all of its >= k samples, pass@1, pass@k
    and their gap (None otherwise): the per-prompt values ``answer_metrics`` averages (and compare bootstraps)."""
    answers = [answer(r["completion"]) for r in group]
    out = {"answer_entropy": answer_entropy(answers), "distinct_answers": len(set(answers))}
    labelled = all(r["oracle_correct"] >= 0 for r in group) and len(group) >= k
    c = sum(r["oracle_correct"] for r in group)
    p1, pk = (pass_at_k(len(group), c, 1), pass_at_k(len(group), c, k)) if labelled else (None, None)
    return {**out, "pass@1": p1, f"pass@{k}": pk, "pass@k_minus_pass@1": None if p1 is None else pk - p1}


def answer_metrics(rows: list[dict], answer, k: int, name: str, quality: str) -> dict:
    """diversity/<name>/answer_entropy and, where ground truth is known, <quality>pass@1, pass@k and their gap
    (Wu et al.'s signal)."""
    per = [prompt_answer_values(g, answer, k) for g in by_prompt(rows).values()]
    out = {f"diversity/{name}/answer_entropy": _mean(v["answer_entropy"] for v in per)}
    labelled = [v for v in per if v["pass@1"] is not None]
    if labelled:
        out.update({f"{quality}{m}": _mean(v[m] for v in labelled) for m in ("pass@1", f"pass@{k}")})
        out[f"{quality}pass@k_minus_pass@1"] = out[f"{quality}pass@{k}"] - out[f"{quality}pass@1"]
    return out


class Models:
    """The models one monitor call needs, each loaded on first use and dropped with this object when the call ends:
    nothing outlives it (a module-level cache would keep a policy in memory through the next round's training)."""

    def __init__(self, ctx: RunContext, k: int = 0):
        self.ctx, self.k, self._policy, self._embedder = ctx, k, None, None
        self.routes: dict = {}  # metric -> the route its value took (selfimprove.metrics.suite), for the meta

    def policy(self):
        """(model, tokenizer) of the checkpoint that generated round k's data (k - 1)."""
        if self._policy is None:
            path = self.ctx.checkpoint(self.k - 1)
            self._policy = load_policy(path, self.ctx.recipe.model.dtype), load_tokenizer(path)
        return self._policy

    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.ctx.recipe.monitor.embedder)
        return self._embedder


def _mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else 0.0


def _ead_vocab(ctx: RunContext) -> int:
    m = ctx.recipe.monitor
    return m.ead_vocab_size or (len(set(ctx.task.alphabet())) if m.unit == "char" else 50257)


def diversity_metrics(ctx: RunContext, name: str, rows: list[dict], models: Models | None = None) -> dict:
    """The diversity block for one set of samples, as diversity/<name>/... (``models``: reuse loaded models, and
    collect each metric's route there)."""
    texts = [r["completion"] for r in rows]
    m = ctx.recipe.monitor
    suite = SuiteConfig(
        m.unit,
        tuple(m.distinct_n),
        _ead_vocab(ctx),
        m.self_repetition_n,
        m.vendi_samples,
        m.homogenisation_samples,
        m.self_bleu_samples,  # O(N^2) and flat on tiny alphabets, so opt-in
    )
    values, routes = text_diversity(texts, suite)
    out = {f"diversity/{name}/{k}": v for k, v in values.items()}
    out[f"diversity/{name}/distinct_answers_per_prompt"] = distinct_answers_per_prompt(rows, ctx.task.answer)
    if models is not None:
        models.routes.update({f"diversity/{name}/{k}": v for k, v in routes.items()})
    if m.embedding:
        embedded = embedding_diversity(subsample(texts, m.vendi_samples), (models or Models(ctx)).embedder())
        out.update({f"diversity/{name}/{k}": v for k, v in embedded.items()})
    return out


def coverage_metrics(name: str, rows: list[dict], pool: list[dict]) -> dict:
    """How much of the round's prompt pool's difficulty levels (and task attributes, where prompts carry them) a
    sample set still covers after filtering/selection."""
    out = {}
    for key in ("difficulty", "attribute"):
        if pool and key in pool[0]:
            cov = coverage([r[key] for r in rows], [r[key] for r in pool])
            out.update({f"diversity/{name}/{key}_{k}": v for k, v in cov.items()})
    return out


def probe_metrics(ctx: RunContext, k: int, models: Models | None = None) -> dict:
    """The fixed probe set, sampled the same way every round: diversity/probe/... and quality/probe/..., with the
    pass@k curve (k = 1, 2, 4, ... probe_samples) where every probe prompt has ground truth."""
    rows, n = load_rows(ctx.stage(k, "evaluate") / "probe"), ctx.recipe.monitor.probe_samples
    groups = [[r["oracle_correct"] for r in g] for g in by_prompt(rows).values()]
    labelled = all(c >= 0 for g in groups for c in g) and all(len(g) >= n for g in groups)
    curve = pass_at_k_curve(groups, n) if labelled else {}
    return {
        **diversity_metrics(ctx, "probe", rows, models),
        **answer_metrics(rows, ctx.task.answer, n, "probe", "quality/probe/"),
        **{f"quality/probe/pass@{j}": v for j, v in curve.items()},
    }


def quality_metrics(ctx: RunContext, judged: list[dict], kept: list[dict], selected: list[dict]) -> dict:
    """Counts, acceptance, per-judge score distributions, judge agreement, pseudo-label accuracy."""
    out = {
        "quality/generated": len(judged),
        "quality/kept": len(kept),
        "quality/selected": len(selected),
        "quality/acceptance_rate": len(kept) / len(judged) if judged else 0.0,
        "quality/mean_score": _mean(r["score"] for r in judged),
    }
    names = ctx.recipe.judge.judges
    threshold = {n: ctx.recipe.filter.min_scores.get(n, 0.5) for n in names}
    for n in names:
        stats = score_stats([r[f"score_{n}"] for r in judged], threshold[n])
        out.update({f"quality/score/{n}/{k}": v for k, v in stats.items()})
        out[f"quality/mean_score_{n}"] = stats["mean"]
        if n.startswith("llm"):  # judges that can fail to give a verdict
            out[f"quality/unparsed_rate/{n}"] = _mean(n in r.get("judge_unparsed", "").split(",") for r in judged)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            agree = judge_agreement(
                [r[f"score_{a}"] for r in judged], [r[f"score_{b}"] for r in judged], threshold[a], threshold[b]
            )
            out.update({f"quality/judge_{k}/{a}_vs_{b}": v for k, v in agree.items()})
    truth = [r for r in judged if r["oracle_correct"] >= 0]  # where ground truth exists: each judge against it
    labelled = [r for r in selected if r["oracle_correct"] >= 0]
    for n in names if truth else ():
        vs = judge_vs_truth(
            [r[f"score_{n}"] for r in truth],
            [r["oracle_correct"] for r in truth],
            threshold[n],
            [r[f"score_{n}"] for r in labelled],
            [r["oracle_correct"] for r in labelled],
        )
        out.update({f"quality/judge_vs_truth/{n}/{key}": v for key, v in vs.items()})
    if labelled:  # measured against ground truth the loop never trains on
        out["quality/pseudo_label_accuracy"] = _mean(r["oracle_correct"] for r in labelled)
    if selected and "self_completion" in selected[0]:  # select.labels 'oracle': what training sees instead
        out["quality/train_label_accuracy"] = _mean(
            ctx.task.is_correct(r["completion"], r["reference"]) for r in selected
        )
    return out


def complexity_block(ctx: RunContext, name: str, rows: list[dict], models: Models) -> dict:
    """complexity/<name>/...: length, difficulty, and IFD under the policy that generated the round (checkpoint k-1)."""
    n = ctx.recipe.monitor.ifd_samples
    ifd = np.zeros(0) if n else None
    if n and rows:
        model, tok = models.policy()
        sample = subsample(rows, n)
        ifd = ifd_scores(
            model, tok, [r["prompt"] for r in sample], [r["completion"] for r in sample], fmt=ctx.prompt_format
        )
    return {f"complexity/{name}/{key}": v for key, v in complexity_metrics(rows, ifd).items()}


@dataclass
class RoundData:
    """A round's samples at the three points of the funnel: generated (judged), kept by the filter, selected."""

    judged: list[dict]
    kept: list[dict]
    selected: list[dict]


def quality_block(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    return quality_metrics(ctx, data.judged, data.kept, data.selected)


def diversity_block(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    out = {}
    for name, rows in (("generated", data.judged), ("filtered", data.kept), ("selected", data.selected)):
        out.update(diversity_metrics(ctx, name, rows, models))
        out.update(coverage_metrics(name, rows, data.judged))
    return out


def answer_block(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    return answer_metrics(data.judged, ctx.task.answer, ctx.recipe.generate.num_samples, "generated", "quality/")


def complexity_blocks(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    return {
        **complexity_block(ctx, "generated", data.judged, models),
        **complexity_block(ctx, "selected", data.selected, models),
    }


def prompt_block(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    """prompts/...: the round's distinct prompts (selfimprove.metrics.prompts), with the propose stage's filter mix
    and the complexity of the samples on proposed prompts; only when the run proposes or monitor.prompt_metrics."""
    r = ctx.recipe
    if not (r.propose.runs or r.monitor.prompt_metrics):
        return {}
    rows = list({row["prompt"]: row for row in data.judged}.values())
    texts = [prompt_content(row) for row in rows]
    out = prompt_metrics(rows, texts, earlier_prompts(ctx, k), r.monitor, r.monitor.vendi_samples)
    if r.monitor.embedding:
        embedded = embedding_diversity(subsample(texts, r.monitor.vendi_samples), models.embedder())
        out.update({f"prompts/{key}": v for key, v in embedded.items()})
    if r.propose.runs:
        folder = ctx.stage(k, "propose")
        out.update(propose_mix(read_json(folder / "meta.json"), load_rows(folder / "prompts")))
        proposed = [row for row in data.judged if is_proposed(row)]
        truth = [row["oracle_correct"] for row in proposed if row["oracle_correct"] >= 0]
        out["prompts/proposed/pass_rate"] = _mean(truth)
        out.update(complexity_block(ctx, "proposed", proposed, models))
    return out


# The monitor's blocks over a round's data, in order: name -> function (ctx, k, RoundData, Models) -> flat metrics.
BLOCKS = {
    "quality": quality_block,
    "diversity": diversity_block,
    "answers": answer_block,
    "complexity": complexity_blocks,
    "prompts": prompt_block,
}


def round_data(ctx: RunContext, k: int) -> RoundData:
    """Round k's samples. An online (GRPO) round's are its rollouts: all were trained on, and those with an advantage
    (a group whose rewards differ) carried a learning signal, so they stand as both kept and selected."""
    if ctx.online(k):
        rows = [{**r, "kept": r["advantage"] != 0} for r in load_rows(ctx.stage(k, "train") / "rollouts")]
        signal = [r for r in rows if r["kept"]]
        return RoundData(rows, signal, signal)
    judged = load_rows(ctx.stage(k, "filter") / "data")  # every judged row, scores included, and the filter's decision
    selected = [r for r in load_rows(ctx.stage(k, "select") / "data") if r["selected"]]
    return RoundData(judged, [r for r in judged if r["kept"]], selected)


def data_metrics(ctx: RunContext, k: int, data: RoundData, models: Models) -> dict:
    """Every one of BLOCKS over the round's generated, filtered (kept) and selected data."""
    out = {}
    for block in BLOCKS.values():
        out.update(block(ctx, k, data, models))
    if data.judged:
        out["task/max_difficulty"] = max(r["difficulty"] for r in data.judged)
    return out


def train_metrics(meta: dict) -> dict:
    """train/...: the loss, steps and rows, and for an online round TRL's per-step metrics (the round's mean, and the
    last logged value as .../last)."""
    out = {
        "train/first_loss": meta["first_loss"],
        "train/last_loss": meta["last_loss"],
        "train/steps": meta["steps"],
        "train/rows": meta["rows"],
    }
    for name, v in meta.get("step_metrics", {}).items():
        out[f"train/{name}"], out[f"train/{name}/last"] = v["mean"], v["last"]
    return out


def round_metrics(ctx: RunContext, k: int, models: Models | None = None) -> dict:
    models = models or Models(ctx, k)
    metrics: dict = {"round": k}
    metrics.update(read_json(ctx.stage(k, "evaluate") / "meta.json")["metrics"])
    train_meta = read_json(ctx.stage(k, "train") / "meta.json")
    metrics.update(train_metrics(train_meta))
    metrics["recipe"] = train_meta.get("recipe", "")  # the recipe the round ran under (recipes/history.json)
    rm = ctx.run_dir / "reward_model"
    if is_done(rm):  # the reward model this run trained at setup (judge.reward_model.train)
        rm_meta = read_json(rm / "meta.json")
        metrics["judge/reward_model/heldout_pairwise_accuracy"] = rm_meta["heldout_pairwise_accuracy"]
        metrics["judge/reward_model/train_pairwise_accuracy"] = rm_meta["train_pairwise_accuracy"]
    if ctx.recipe.monitor.probe_size:
        metrics.update(probe_metrics(ctx, k, models))
    metrics.update(round_ledger(ctx, k))
    for stage in registry.TIMED_STAGES:
        if is_done(ctx.stage(k, stage)):
            metrics[f"time/{stage}_s"] = read_json(ctx.stage(k, stage) / "meta.json")["wall_s"]
    if k == 0:
        metrics["task/max_difficulty"] = max(
            (r["difficulty"] for r in load_rows(ctx.run_dir / "seed_data" / "data")), default=0
        )
        return metrics
    data = round_data(ctx, k)
    metrics.update(data_metrics(ctx, k, data, models))
    for path in ctx.recipe.monitor.extra_metrics:
        metrics.update(registry.load(path)(data.judged))
    return metrics


def run_monitor(ctx: RunContext, k: int) -> dict:
    with ctx.writing(k, "monitor") as (out, meta):
        models = Models(ctx, k)
        metrics = round_metrics(ctx, k, models)
        meta["routes"] = models.routes
        fired = check_alarms(ctx.recipe.monitor.alarms, ctx.history(k) + [decisions.readable(metrics)])
        metrics.update({f"alarm/{a['metric']}": 1 for a in fired})
        if any(a["action"] == "rollback" for a in fired):
            metrics["rolled_back"] = 1
        write_json(out / "alarms.json", fired)
        write_json(out / "metrics.json", metrics)
    rows = rebuild_metrics(ctx.run_dir)

    log_round(ctx, metrics, rows)
    return metrics
