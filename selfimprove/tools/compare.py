"""``selfimprove compare A B``: did checkpoint B beat checkpoint A, where, and what did it lose?

A and B are round folders of a run (``runs/x/round_02``), of two runs, or any save_pretrained folder (then ``--run``
names the run whose task, eval sets, probe set, sampling and judges are used; by default A's run). Both checkpoints get
exactly the same prompts and sampling: greedy on the run's eval sets, and the fixed probe set sampled as the evaluate
stage samples it. Reported: every eval, diversity and quality metric with deltas, B's win-rate over A under the run's
judges (per probe prompt, mean judge score of B's samples vs A's: win 1, tie 0.5, loss 0 — symmetric, so the order
the two are given in does not matter; with a pairwise LLM judge in the recipe, also a head-to-head win-rate with every
A-vs-B pair judged in both orders), the mean per-token KL between the two models' next-token distributions along
each model's own probe samples, and side-by-side samples for the prompts where they differ most.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from selfimprove.core.environment import differences, run_environment
from selfimprove.core.errors import RunDirError
from selfimprove.core.model import load_policy, load_tokenizer
from selfimprove.core.prompts import PromptFormat, encode_completions
from selfimprove.core.rows import by_prompt
from selfimprove.core.rundir import RunContext
from selfimprove.core.runs import open_run
from selfimprove.metrics.complexity import answer_batches
from selfimprove.stages.evaluate import eval_rows_scored, probe_samples
from selfimprove.stages.judge import judge_rows, run_env
from selfimprove.stages.judge.llm import head_to_head
from selfimprove.stages.monitor import Models, diversity_metrics, prompt_answer_values
from selfimprove.tools.stats import bootstrap_mean_difference, mcnemar_exact, paired_bootstrap, paired_permutation
from selfimprove.tools.tables import show_table


def resolve(spec: str) -> tuple[str, Path | None]:
    """(checkpoint folder, run directory or None) for a round folder or a plain save_pretrained folder."""
    p = Path(spec)
    if (p / "train" / "model" / "config.json").exists():
        return str(p / "train" / "model"), p.parent
    if (p / "config.json").exists():
        run = (
            p.parents[2]
            if p.name == "model" and p.parent.name == "train" and (p.parents[2] / "recipe.yaml").exists()
            else None
        )
        return str(p), run
    raise RunDirError(
        f"{spec} is neither a round folder (with train/model) nor a save_pretrained folder (with config.json)."
    )


def trained_under(checkpoint: str) -> str:
    """The hash of the recipe a round's checkpoint was trained under ('' for a folder from outside a run)."""
    meta = Path(checkpoint).parent / "meta.json"
    return json.loads(meta.read_text()).get("recipe", "") if Path(checkpoint).name == "model" and meta.exists() else ""


def token_kl(model_p, model_q, tokenizer, rows: list[dict], batch_size: int = 64, fmt=None) -> float:
    """Mean over completion tokens (EOS included) of KL(p || q) between the two next-token distributions, along the
    given samples (drawn from p), each prompt encoded by ``fmt`` as it was sampled. Exact over the vocabulary."""
    import torch

    total, count = 0.0, 0
    prompts = (fmt or PromptFormat()).encode(tokenizer, [r["prompt"] for r in rows])
    answers = encode_completions(tokenizer, [r["completion"] for r in rows])
    for _, ids, attn, scored in answer_batches(prompts, answers, tokenizer.pad_token_id or 0, batch_size):
        with torch.no_grad():
            lp = torch.log_softmax(model_p(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
            lq = torch.log_softmax(model_q(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
        mask = scored[:, 1:]  # logits at t give the distribution of completion token t + 1
        total += float((lp.exp() * (lp - lq)).sum(-1)[mask].sum())
        count += int(mask.sum())
    return total / count if count else 0.0


def win_rate(scores_a: dict, scores_b: dict) -> float:
    """Per prompt, mean score of B's samples vs A's: win 1, tie 0.5, loss 0; averaged over prompts."""
    res = [
        1.0 if scores_b[p] > scores_a[p] else 0.5 if scores_b[p] == scores_a[p] else 0.0
        for p in scores_a
        if p in scores_b
    ]
    return float(np.mean(res)) if res else 0.5


def _eval_stat(task, rows: list[dict]):
    return lambda idx: task.eval_metrics([rows[i] for i in idx])


def _prompt_scores(rows: list[dict]) -> dict[str, float]:
    """Each probe prompt's mean judge score over its samples."""
    return {p: float(np.mean([r["score"] for r in group])) for p, group in by_prompt(rows).items()}


def per_prompt_values(task, rows: list[dict], ids: list[str], k: int) -> dict[str, np.ndarray]:
    """The probe metrics that are means over prompts, one value per prompt of ``ids`` (NaN where a prompt has none:
    pass@k needs a reference and k samples), from the monitor's own per-prompt definition, so their mean is its
    number."""
    groups, scores = by_prompt(rows), _prompt_scores(rows)
    names = {
        "distinct_answers": "diversity/probe/distinct_answers_per_prompt",
        "answer_entropy": "diversity/probe/answer_entropy",
        **{m: f"quality/probe/{m}" for m in ("pass@1", f"pass@{k}", "pass@k_minus_pass@1")},
    }
    out: dict[str, list[float]] = defaultdict(list)
    for p in ids:
        for m, v in prompt_answer_values(groups[p], task.answer, k).items():
            out[names[m]].append(np.nan if v is None else v)
        out["quality/probe/mean_judge_score"].append(scores[p])
    return {key: np.asarray(v, dtype=float) for key, v in out.items()}


PER_PROMPT_DIVERSITY = ("diversity/probe/distinct_answers_per_prompt",)  # bootstrapped, not permuted


def _corpus_stat(ctx: RunContext, rows_a: list[dict], rows_b: list[dict], ids: list[str]):
    """The probe's corpus-level diversity metrics of (A', B'), prompt i's samples swapped between the sides where
    ``swap[i]`` (the per-prompt ones are left to the bootstrap)."""
    by_a, by_b, models = by_prompt(rows_a), by_prompt(rows_b), Models(ctx)  # the embedder loads once

    def stat(swap: np.ndarray) -> tuple[dict, dict]:
        side_a = [r for p, s in zip(ids, swap) for r in (by_b if s else by_a)[p]]
        side_b = [r for p, s in zip(ids, swap) for r in (by_a if s else by_b)[p]]
        return tuple(
            {m: v for m, v in diversity_metrics(ctx, "probe", side, models).items() if m not in PER_PROMPT_DIVERSITY}
            for side in (side_a, side_b)
        )

    return stat


def _mcnemar(rows_a: list[dict], rows_b: list[dict]) -> dict:
    return {
        f"eval/accuracy/{split}": mcnemar_exact(
            [a["correct"] for a in rows_a if a["split"] == split], [b["correct"] for b in rows_b if b["split"] == split]
        )
        for split in sorted({r["split"] for r in rows_a})
    }


def _score(ctx: RunContext, ckpt: str) -> tuple[list[dict], list[dict]]:
    """(eval rows answered greedily, judged probe samples) for one checkpoint."""
    env = run_env(ctx, ckpt, ctx.recipe.seed)
    return eval_rows_scored(ctx, ckpt), judge_rows(env, probe_samples(ctx, ckpt))[0]


def _metric_table(
    ctx: RunContext, evals: tuple, probes: tuple, ids: list[str], resamples: int, permutations: int
) -> dict:
    """Every metric's A, B, B - A and its interval (means over prompts: paired bootstrap) or permutation p (the
    probe's corpus-level metrics), sorted by name."""
    (eval_a, eval_b), (probe_a, probe_b) = evals, probes
    seed, k = ctx.recipe.seed, ctx.recipe.monitor.probe_samples
    table = paired_bootstrap(_eval_stat(ctx.task, eval_a), _eval_stat(ctx.task, eval_b), len(eval_a), resamples, seed)
    if ids:
        va, vb = per_prompt_values(ctx.task, probe_a, ids, k), per_prompt_values(ctx.task, probe_b, ids, k)
        table.update({m: bootstrap_mean_difference(va[m], vb[m], resamples, seed) for m in va})
        table.update(paired_permutation(_corpus_stat(ctx, probe_a, probe_b, ids), len(ids), permutations, seed))
    return dict(sorted(table.items()))


def compare(
    a: str,
    b: str,
    run: str | None = None,
    n_samples: int = 5,
    trust: bool = False,
    resamples: int = 2000,
    permutations: int = 50,
) -> dict:
    (ckpt_a, run_a), (ckpt_b, run_b) = resolve(a), resolve(b)
    run_dir = Path(run) if run else run_a
    if run_dir is None:
        raise RunDirError("compare needs a run for its task, eval and probe sets: pass --run RUN_DIR.")
    ctx = open_run(str(run_dir), trust=trust)
    out: dict = {
        "a": {"spec": a, "checkpoint": ckpt_a, "recipe": trained_under(ckpt_a), "environment": run_environment(run_a)},
        "b": {"spec": b, "checkpoint": ckpt_b, "recipe": trained_under(ckpt_b), "environment": run_environment(run_b)},
        "run": str(run_dir),
    }
    out["environment_differences"] = differences(out["a"]["environment"], out["b"]["environment"])
    (eval_a, probe_a), (eval_b, probe_b) = _score(ctx, ckpt_a), _score(ctx, ckpt_b)
    ids = sorted({r["prompt_id"] for r in probe_a} & {r["prompt_id"] for r in probe_b})
    out["metrics"] = _metric_table(ctx, (eval_a, eval_b), (probe_a, probe_b), ids, resamples, permutations)
    out["bootstrap"] = {
        "method": "paired percentile bootstrap over shared prompts (eval metrics and the probe's per-prompt "
        "metrics); paired permutation p for the probe's corpus-level metrics",
        "level": 0.95,
        "eval_resamples": resamples,
        "probe_resamples": resamples if ids else 0,
        "corpus_permutations": permutations if ids else 0,
        "eval_prompts": len(eval_a),
        "probe_prompts": len(ids),
    }
    out["mcnemar"] = _mcnemar(eval_a, eval_b)
    shared = set(ids)
    scores = {
        side: {p: v for p, v in _prompt_scores(rows).items() if p in shared}
        for side, rows in (("a", probe_a), ("b", probe_b))
    }
    out["win_rate_b_vs_a"] = win_rate(scores["a"], scores["b"])
    if "llm_pairwise" in ctx.recipe.judge.judges:  # the pairwise judge compares A and B directly, in both orders
        env = run_env(ctx, ckpt_b, ctx.recipe.seed)
        out["pairwise_b_vs_a"] = head_to_head(env, probe_a, probe_b)
    tok = load_tokenizer(ckpt_a)
    pa, pb = load_policy(ckpt_a, ctx.recipe.model.dtype).eval(), load_policy(ckpt_b, ctx.recipe.model.dtype).eval()
    fmt = ctx.prompt_format
    out["kl_per_token"] = {
        "a_to_b": token_kl(pa, pb, tok, probe_a, fmt=fmt),
        "b_to_a": token_kl(pb, pa, tok, probe_b, fmt=fmt),
    }
    gaps = sorted(ids, key=lambda p: (-abs(scores["b"][p] - scores["a"][p]), p))[:n_samples]
    first = {
        side: {r["prompt_id"]: r for r in rows if r["sample_idx"] == 0}
        for side, rows in (("a", probe_a), ("b", probe_b))
    }
    out["samples"] = [
        {
            "prompt_id": p,
            "prompt": first["a"][p]["prompt"],
            "a": first["a"][p]["completion"],
            "b": first["b"][p]["completion"],
            "score_a": scores["a"][p],
            "score_b": scores["b"][p],
        }
        for p in gaps
    ]
    out["probe"] = {
        side: [
            {
                "prompt_id": r["prompt_id"],
                "sample_idx": r["sample_idx"],
                "completion": r["completion"],
                "score": r["score"],
            }
            for r in rows
        ]
        for side, rows in (("a", probe_a), ("b", probe_b))
    }
    return out


HEADLINE = ("eval/accuracy/", "eval/", "diversity/probe/answer", "diversity/")  # the table's order: headline first


def _headline_order(key: str) -> tuple[int, str]:
    return next((i for i, p in enumerate(HEADLINE) if key.startswith(p)), len(HEADLINE)), key


def metric_rows(result: dict) -> list[list[str]]:
    """One row per metric, eval accuracy first, then the other eval metrics, then diversity; a CI that excludes 0
    in **bold**."""
    rows = []
    for key in sorted(result["metrics"], key=_headline_order):
        v, m = result["metrics"][key], result["mcnemar"].get(key)
        ci = "" if v["ci_low"] != v["ci_low"] else f"[{v['ci_low']:+.4g}, {v['ci_high']:+.4g}]"
        perm = v.get("p_value")
        rows.append(
            [
                key,
                f"{v['a']:.4g}",
                f"{v['b']:.4g}",
                f"{v['delta']:+.4g}",
                f"**{ci}**" if ci and (v["ci_low"] > 0 or v["ci_high"] < 0) else ci,
                "" if perm is None or perm != perm else f"{perm:.3g}",
                f"{m['p_value']:.3g} ({m['a_only']}/{m['b_only']})" if m else "",
            ]
        )
    return rows


def print_table(result: dict) -> None:
    recipes = (
        ""
        if result["a"]["recipe"] == result["b"]["recipe"]
        else f" (trained under recipes {result['a']['recipe'] or '?'} and {result['b']['recipe'] or '?'})"
    )
    title = f"B = {result['b']['spec']}  vs  A = {result['a']['spec']}{recipes}"
    show_table(title, ["metric", "A", "B", "B - A", "95% CI", "perm p", "McNemar p"], metric_rows(result))
    b = result["bootstrap"]
    print(
        f"CI: {b['method']} ({b['eval_resamples']} resamples of {b['eval_prompts']} eval prompts and of "
        f"{b['probe_prompts']} probe prompts; {b['corpus_permutations']} permutations); bold (**) = excludes 0. "
        "McNemar: exact (problems only A solved / only B solved)."
    )
    for line in result.get("environment_differences", []):
        print(f"warning: A and B ran in different environments: {line}")
    print(f"win-rate of B over A (run's judges, per probe prompt): {result['win_rate_b_vs_a']:.3f}")
    if "pairwise_b_vs_a" in result:
        h = result["pairwise_b_vs_a"]
        print(
            f"pairwise judge, both orders: B wins {h['win_rate']:.3f} of {h['comparisons']} comparisons "
            f"({h['unparsed']} unparsed)"
        )
    print(f"per-token KL: A||B {result['kl_per_token']['a_to_b']:.4f}, B||A {result['kl_per_token']['b_to_a']:.4f}")
    show_table(
        "where they differ most (first probe sample each)",
        ["prompt", "A", "B", "score A", "score B"],
        [[s["prompt"], s["a"], s["b"], f"{s['score_a']:.2f}", f"{s['score_b']:.2f}"] for s in result["samples"]],
    )


def write_json(result: dict, path: str) -> None:
    Path(path).write_text(json.dumps(result, indent=2, sort_keys=True))
