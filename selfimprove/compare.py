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

from selfimprove.errors import RunDirError


def resolve(spec: str) -> tuple[str, Path | None]:
    """(checkpoint folder, run directory or None) for a round folder or a plain save_pretrained folder."""
    p = Path(spec)
    if (p / "train" / "model" / "config.json").exists():
        return str(p / "train" / "model"), p.parent
    if (p / "config.json").exists():
        run = p.parents[2] if p.name == "model" and p.parent.name == "train" and (p.parents[2] / "recipe.yaml").exists() else None
        return str(p), run
    raise RunDirError(f"{spec} is neither a round folder (with train/model) nor a save_pretrained folder (with config.json).")


def trained_under(checkpoint: str) -> str:
    """The hash of the recipe a round's checkpoint was trained under ('' for a folder from outside a run)."""
    meta = Path(checkpoint).parent / "meta.json"
    return json.loads(meta.read_text()).get("recipe", "") if Path(checkpoint).name == "model" and meta.exists() else ""


def token_kl(model_p, model_q, tokenizer, rows: list[dict], batch_size: int = 64, fmt=None) -> float:
    """Mean over completion tokens (EOS included) of KL(p || q) between the two next-token distributions, along the
    given samples (drawn from p), each prompt encoded by ``fmt`` as it was sampled. Exact over the vocabulary."""
    import torch

    from selfimprove.complexity import answer_batches
    from selfimprove.prompts import PromptFormat, encode_completions

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
    res = [1.0 if scores_b[p] > scores_a[p] else 0.5 if scores_b[p] == scores_a[p] else 0.0 for p in scores_a if p in scores_b]
    return float(np.mean(res)) if res else 0.5


def compare(a: str, b: str, run: str | None = None, n_samples: int = 5, trust: bool = False) -> dict:
    from selfimprove.evaluate import eval_rows_scored, probe_samples
    from selfimprove.judge import JudgeEnv, judge_rows
    from selfimprove.model import load_policy, load_tokenizer
    from selfimprove.monitor import answer_metrics, diversity_metrics
    from selfimprove.runs import open_run

    (ckpt_a, run_a), (ckpt_b, _) = resolve(a), resolve(b)
    run_dir = Path(run) if run else run_a
    if run_dir is None:
        raise RunDirError("compare needs a run for its task, eval and probe sets: pass --run RUN_DIR.")
    ctx = open_run(str(run_dir), trust=trust)
    out: dict = {"a": {"spec": a, "checkpoint": ckpt_a, "recipe": trained_under(ckpt_a)},
                 "b": {"spec": b, "checkpoint": ckpt_b, "recipe": trained_under(ckpt_b)}, "run": str(run_dir)}
    metrics, probes, scores = {}, {}, {}
    for side, ckpt in (("a", ckpt_a), ("b", ckpt_b)):
        probe = probe_samples(ctx, ckpt)
        env = JudgeEnv(ctx.task, ctx.recipe.judge, ckpt, ctx.recipe.seed, ctx.recipe.model.dtype)
        judged = judge_rows(env, probe)[0]
        k = ctx.recipe.monitor.probe_samples
        metrics[side] = {**ctx.task.eval_metrics(eval_rows_scored(ctx, ckpt)), **diversity_metrics(ctx, "probe", probe),
                         **answer_metrics(probe, ctx.task.answer, k, "probe", "quality/probe/")}
        by_prompt = defaultdict(list)
        for r in judged:
            by_prompt[r["prompt_id"]].append(r["score"])
        scores[side] = {p: float(np.mean(v)) for p, v in by_prompt.items()}
        metrics[side]["quality/probe/mean_judge_score"] = float(np.mean(list(scores[side].values())))
        probes[side] = judged
    keys = sorted(set(metrics["a"]) & set(metrics["b"]))
    out["metrics"] = {key: {"a": metrics["a"][key], "b": metrics["b"][key], "delta": metrics["b"][key] - metrics["a"][key]} for key in keys}
    out["win_rate_b_vs_a"] = win_rate(scores["a"], scores["b"])
    if "llm_pairwise" in ctx.recipe.judge.judges:  # the pairwise judge compares A and B directly, in both orders
        from selfimprove.judge.llm import head_to_head

        env = JudgeEnv(ctx.task, ctx.recipe.judge, ckpt_b, ctx.recipe.seed, ctx.recipe.model.dtype)
        out["pairwise_b_vs_a"] = head_to_head(env, probes["a"], probes["b"])
    tok = load_tokenizer(ckpt_a)
    pa, pb = load_policy(ckpt_a, ctx.recipe.model.dtype).eval(), load_policy(ckpt_b, ctx.recipe.model.dtype).eval()
    fmt = ctx.prompt_format
    out["kl_per_token"] = {"a_to_b": token_kl(pa, pb, tok, probes["a"], fmt=fmt), "b_to_a": token_kl(pb, pa, tok, probes["b"], fmt=fmt)}
    gaps = sorted(scores["a"], key=lambda p: (-abs(scores["b"].get(p, 0) - scores["a"][p]), p))[:n_samples]
    first = {side: {r["prompt_id"]: r for r in probes[side] if r["sample_idx"] == 0} for side in ("a", "b")}
    out["samples"] = [{"prompt_id": p, "prompt": first["a"][p]["prompt"], "a": first["a"][p]["completion"],
                       "b": first["b"][p]["completion"], "score_a": scores["a"][p], "score_b": scores["b"][p]} for p in gaps]
    out["probe"] = {side: [{"prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"], "completion": r["completion"],
                            "score": r["score"]} for r in probes[side]] for side in ("a", "b")}
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    recipes = "" if result["a"]["recipe"] == result["b"]["recipe"] else \
        f" (trained under recipes {result['a']['recipe'] or '?'} and {result['b']['recipe'] or '?'})"
    table = Table(title=f"B = {result['b']['spec']}  vs  A = {result['a']['spec']}{recipes}")
    for col in ("metric", "A", "B", "B - A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, v in result["metrics"].items():
        table.add_row(key, f"{v['a']:.4g}", f"{v['b']:.4g}", f"{v['delta']:+.4g}")
    console = Console()
    console.print(table)
    console.print(f"win-rate of B over A (run's judges, per probe prompt): {result['win_rate_b_vs_a']:.3f}")
    if "pairwise_b_vs_a" in result:
        h = result["pairwise_b_vs_a"]
        console.print(f"pairwise judge, both orders: B wins {h['win_rate']:.3f} of {h['comparisons']} comparisons ({h['unparsed']} unparsed)")
    console.print(f"per-token KL: A||B {result['kl_per_token']['a_to_b']:.4f}, B||A {result['kl_per_token']['b_to_a']:.4f}")
    samples = Table(title="where they differ most (first probe sample each)")
    for col in ("prompt", "A", "B", "score A", "score B"):
        samples.add_column(col)
    for s in result["samples"]:
        samples.add_row(s["prompt"], s["a"], s["b"], f"{s['score_a']:.2f}", f"{s['score_b']:.2f}")
    console.print(samples)


def write_json(result: dict, path: str) -> None:
    Path(path).write_text(json.dumps(result, indent=2, sort_keys=True))
