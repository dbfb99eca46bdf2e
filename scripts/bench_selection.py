"""Cost of the select stage on 10^5 candidates. Prints timings and ratios measured side by side in one run.

Candidates are countdown-style (prompt, expression) rows with random scores. Each configuration runs the whole
select_rows path (exact dedup, optional near-dup, per-prompt cap, sampler under the budget) as the stage does; the
target is "well under a minute" on a 2-core CPU, printed as a ratio to 60 s. Lazy greedy QDIT is also timed
against plain greedy (every gain recomputed every step) on a smaller pool, to show what laziness buys.

    python scripts/bench_selection.py [--candidates 100000] [--budget 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def candidates(n: int, seed: int = 0) -> list[dict]:
    from selfimprove.tasks.countdown import CountdownConfig, CountdownTask

    task = CountdownTask(CountdownConfig(min_operands=2, max_operands=4, max_number=20), seed)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n // 4):
        p = task._problem(rng, int(rng.integers(2, 5)))
        nums = p["prompt"].split(">")[0].split(",")
        for j in range(4):  # four samples per prompt: shuffled operand orders, so near-duplicates are common
            order = rng.permutation(len(nums))
            ops = rng.choice(list("+-*"), len(nums) - 1)
            expr = nums[order[0]] + "".join(o + nums[k] for o, k in zip(ops, order[1:]))
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": p["prompt"],
                    "completion": expr,
                    "score": float(rng.random()),
                    "sample_idx": j,
                    "difficulty": len(nums),
                    "num_tokens": len(expr),
                }
            )
    return rows


def plain_greedy_qdit(X, scores, budget, lam, k):
    """Reference: recompute every candidate's gain at every step (what lazy greedy avoids)."""
    from selfimprove.stages.select.samplers import knn_graph

    n = len(X)
    q = (scores - scores.min()) / (scores.max() - scores.min())
    W = knn_graph(X, k)
    cover, chosen, free = np.zeros(n), [], np.ones(n, dtype=bool)
    for _ in range(budget):
        gains = np.array(
            [
                (1 - lam) * q[j] / budget
                + lam
                * np.maximum(
                    W.data[W.indptr[j] : W.indptr[j + 1]] - cover[W.indices[W.indptr[j] : W.indptr[j + 1]]], 0
                ).sum()
                / n
                if free[j]
                else -np.inf
                for j in range(n)
            ]
        )
        j = int(gains.argmax())
        chosen.append(j)
        free[j] = False
        idx = W.indices[W.indptr[j] : W.indptr[j + 1]]
        cover[idx] = np.maximum(cover[idx], W.data[W.indptr[j] : W.indptr[j + 1]])
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--budget", type=int, default=10_000)
    args = parser.parse_args()

    from selfimprove.core.config import SelectConfig
    from selfimprove.stages.select import select_rows
    from selfimprove.stages.select.features import text_features
    from selfimprove.stages.select.samplers import qdit

    rows = candidates(args.candidates)
    prior = candidates(10_000, seed=1)
    print(f"1. select over {len(rows):,} candidates, budget {args.budget:,}, {len(prior):,} earlier accepted rows")
    configs = {
        "exact dedup + cap + top score": SelectConfig(dedup="exact", per_prompt_cap=2, budget=args.budget),
        "minhash dedup + cap + top score": SelectConfig(
            dedup="minhash", minhash_ngram=3, per_prompt_cap=2, budget=args.budget
        ),
        "exact + cluster-rebalance (k-means)": SelectConfig(per_prompt_cap=2, method="cluster", budget=args.budget),
        "exact + cluster-rebalance (difficulty)": SelectConfig(
            per_prompt_cap=2, method="cluster", cluster_by="difficulty", budget=args.budget
        ),
        "exact + deita (tau 0.9)": SelectConfig(per_prompt_cap=2, method="deita", budget=args.budget),
        "exact + qdit (lambda 0.5)": SelectConfig(per_prompt_cap=2, method="qdit", budget=args.budget),
        "embedding-dedup (n-gram LSA) + qdit": SelectConfig(
            dedup="embedding", per_prompt_cap=2, method="qdit", budget=args.budget
        ),
    }
    for name, cfg in configs.items():
        t = time.perf_counter()
        out = select_rows(rows, cfg, prior)
        dt = time.perf_counter() - t
        print(f"   {name:<40} {dt:6.1f} s = {dt / 60:.2f} x 60 s   ({sum(r['selected'] for r in out):,} selected)")

    n, budget = 3000, 300
    X = text_features([r["prompt"] + "\n" + r["completion"] for r in rows[:n]])
    scores = np.array([r["score"] for r in rows[:n]])
    t = time.perf_counter()
    lazy = qdit(X, scores, budget, 0.5)
    t_lazy = time.perf_counter() - t
    t = time.perf_counter()
    plain = plain_greedy_qdit(X, scores, budget, 0.5, 10)
    t_plain = time.perf_counter() - t
    print(
        f"2. qdit on {n:,} candidates, budget {budget}: lazy greedy {t_lazy:.2f} s, plain greedy {t_plain:.2f} s: "
        f"{t_plain / t_lazy:.0f}x faster, same selection: {lazy == plain}"
    )


if __name__ == "__main__":
    main()
