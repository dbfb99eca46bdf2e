"""Filters, pairs, decontamination, dedup and the diversity samplers against hand-computed expectations."""

import numpy as np
import pytest

from selfimprove.core.config import FilterConfig, SelectConfig
from selfimprove.metrics.dedup import greedy_max_similarity, minhash
from selfimprove.stages.filter import build_pairs, contamination_index, filter_rows
from selfimprove.stages.select import select_rows
from selfimprove.stages.select.samplers import cluster_rebalance, deita, qdit, quotas

pytestmark = pytest.mark.unit


def _row(pid, completion, score=1.0, idx=0, prompt=None, difficulty=1, tokens=None, finished=True, **kw):
    return {
        "prompt_id": pid,
        "prompt": prompt or f"{pid}:",
        "completion": completion,
        "score": score,
        "sample_idx": idx,
        "difficulty": difficulty,
        "num_tokens": len(completion) if tokens is None else tokens,
        "finished": finished,
        "round": 1,
        "judge_unparsed": "",
        **kw,
    }


def test_length_finish_and_decontamination_filters():
    rows = [
        _row("a", "12"),
        _row("a", "123456", idx=1),
        _row("a", "1", idx=2),
        _row("a", "123", idx=3, finished=False),
        _row("b", "9999", prompt="77+88=", idx=0),
    ]
    protected = contamination_index(["77+88=", "1650"], 4, "char")  # an eval prompt and its answer
    out = filter_rows(
        rows,
        FilterConfig(min_scores={}, min_tokens=2, max_tokens=5, drop_unfinished=True, decontaminate_ngram=4),
        protected,
    )
    assert [r["filter_reason"] for r in out] == ["kept", "tokens>5", "tokens<2", "unfinished", "contaminated"]
    # a completion that quotes an eval answer is contaminated too; 3-char overlap is below n = 4
    out = filter_rows(
        [_row("c", "x16505"), _row("c", "165", idx=1)], FilterConfig(min_scores={}, decontaminate_ngram=4), protected
    )
    assert [r["kept"] for r in out] == [False, True]


def test_dpo_pairs_best_vs_worst_and_margin():
    rows = [
        _row("p", "a", 0.9, 0, kept=True),
        _row("p", "b", 0.7, 1, kept=True),
        _row("p", "c", 0.2, 2, kept=False),
        _row("p", "d", 0.9, 3, kept=True),
        _row("q", "e", 0.5, 0, kept=True),
        _row("q", "e", 0.1, 1, kept=False),
    ]
    bw = build_pairs(rows, FilterConfig(pairs="best_vs_worst"))
    assert [(p["chosen"], p["rejected"]) for p in bw] == [("a", "c")]  # q: the only lower sample is the same text
    margin = build_pairs(rows, FilterConfig(pairs="margin", pair_margin=0.25, pairs_per_prompt=3))
    # gaps >= 0.25 from kept chosen: a-c 0.7, d-c 0.7, b-c 0.5 (a-b, d-b are 0.2)
    assert [(p["chosen"], p["rejected"]) for p in margin] == [("a", "c"), ("d", "c"), ("b", "c")]
    assert margin[0]["score_chosen"] == 0.9 and margin[0]["score_rejected"] == 0.2


def test_exact_and_minhash_dedup_within_round_and_against_history():
    prior = [_row("old", "the quick brown fox jumps over the lazy dog", prompt="p:")]
    rows = [
        _row("n1", "the quick brown fox jumps over the lazy dog!", prompt="p:"),  # near-dup of history
        _row("n2", "completely different words appear in this one", prompt="p:"),
        _row("n3", "completely different words appear in this one", prompt="p:"),  # exact dup (same prompt + text)
        _row("n4", "completely different words appear in this one.", prompt="p:"),
    ]  # near-dup within round
    cfg = SelectConfig(dedup="minhash", minhash_threshold=0.7, minhash_ngram=3, per_prompt_cap=0)
    out = select_rows(rows, cfg, prior, unit="word")
    assert [r["select_reason"] for r in out] == ["near_duplicate", "selected", "duplicate", "near_duplicate"]
    exact = select_rows(rows, SelectConfig(dedup="exact", per_prompt_cap=0), prior, unit="word")
    assert [r["select_reason"] for r in exact] == ["selected", "selected", "duplicate", "selected"]
    # texts shorter than a shingle are compared as whole texts, not all as one empty set
    assert minhash([_row("s", "ab"), _row("s", "cd")], [], 0.9, 5, "word", 64) == [None, None]


def test_greedy_max_similarity_by_hand():
    X = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [1, 0]], dtype=float)
    # cos: x0.x1 = .8, x0.x2 = 0, x2.x3 = .8, x1.x3 = .96
    assert greedy_max_similarity(X, 0.85) == [0, 1, 2]  # 3 too close to 1 (.96), 4 a copy of 0
    assert greedy_max_similarity(X, 0.85, block=2) == [0, 1, 2]  # the blocked pass agrees
    assert greedy_max_similarity(X, 0.85, prior=np.array([[0.0, 1.0]])) == [0, 1]
    assert greedy_max_similarity(X, 0.99, limit=2) == [0, 1]


def test_quotas_and_cluster_rebalance_by_hand():
    assert quotas({"a": 10, "b": 10, "c": 1}, 9) == {"a": 4, "b": 4, "c": 1}  # c's unused share flows to a and b
    assert quotas({3: 10, 4: 10}, 10, {3: 0.2, 4: 0.8}) == {3: 2, 4: 8}
    assert quotas({3: 1, 4: 10}, 10, {3: 0.5, 4: 0.5}) == {3: 1, 4: 9}
    assert quotas({"a": 2}, 5) == {"a": 2}
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    labels = ["x", "x", "x", "y", "y"]
    assert cluster_rebalance(scores, labels, 2) == [0, 4]  # one per cluster, each its best
    assert cluster_rebalance(scores, labels, 4) == [0, 1, 3, 4]


def test_deita_orders_by_quality_times_complexity():
    X = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
    # quality x complexity: .9 x 1, .5 x 3, .6 x 1 -> order 1, 2... sample 0 duplicates 1 (cos 1 > tau)
    assert deita(X, np.array([0.9, 0.5, 0.6]), np.array([1.0, 3.0, 1.0]), budget=3, tau=0.9) == [1, 2]
    assert deita(X, np.array([0.9, 0.5, 0.6]), np.array([1.0, 3.0, 1.0]), budget=1, tau=0.9) == [1]


def test_qdit_lambda_zero_is_quality_ranking_and_one_covers_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([5, 0], 0.1, (20, 2))
    b = rng.normal([0, 5], 0.1, (5, 2))
    X = np.vstack([a, b])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    scores = np.concatenate([np.linspace(1, 0.9, 20), np.linspace(0.5, 0.4, 5)])  # cluster a scores higher
    assert qdit(X, scores, 4, lam=0.0) == [0, 1, 2, 3]  # pure quality
    chosen = qdit(X, scores, 4, lam=1.0, k=5)
    assert any(i >= 20 for i in chosen) and any(i < 20 for i in chosen)  # coverage reaches the small cluster
    # earlier rounds already cover cluster a: pure coverage now spends the budget on b first
    assert qdit(X, scores, 1, lam=1.0, k=5, prior=X[:20])[0] >= 20


@pytest.mark.parametrize("method", ["score", "random", "cluster", "deita", "qdit"])
def test_select_invariants_budget_and_no_duplicates(method):
    rng = np.random.default_rng(1)
    rows = [
        _row(f"p{i % 15}", "".join(map(str, rng.integers(0, 10, 6))), float(rng.random()), idx=i, difficulty=i % 3)
        for i in range(60)
    ]
    rows += [dict(rows[0], sample_idx=99)]  # an exact duplicate
    cfg = SelectConfig(
        method=method, budget=12, per_prompt_cap=3, cluster_by="difficulty" if method == "cluster" else "features"
    )
    out = select_rows(rows, cfg, [])
    chosen = [r for r in out if r["selected"]]
    assert len(chosen) == 12
    assert len({(r["prompt"], r["completion"]) for r in chosen}) == 12
    assert max(sum(r["prompt_id"] == p for r in chosen) for p in {r["prompt_id"] for r in chosen}) <= 3
    assert out[-1]["select_reason"] == "duplicate"
    if method == "cluster":
        assert sorted(sum(r["difficulty"] == d for r in chosen) for d in range(3)) == [4, 4, 4]


def test_random_selection_is_blind_to_scores_and_fixed_by_its_seed():
    from selfimprove.stages.select.samplers import at_random

    drawn = at_random(100, 10, seed=3)
    assert drawn == sorted(np.random.default_rng(3).choice(100, 10, replace=False).tolist())
    assert at_random(100, 10, seed=3) == drawn != at_random(100, 10, seed=4)
    assert at_random(5, 10, seed=3) == at_random(5, 0, seed=3) == [0, 1, 2, 3, 4]
    rows = [_row(f"p{i}", str(i), score, idx=i) for i, score in enumerate(np.linspace(1, 0, 40))]
    cfg = SelectConfig(method="random", budget=10, per_prompt_cap=1)
    chosen = [i for i, r in enumerate(select_rows(rows, cfg, [], seed=3)) if r["selected"]]
    assert chosen == at_random(40, 10, seed=3) != list(range(10))  # not the top scores


def test_oracle_relabel_uses_references_and_corrupts_the_asked_share():
    from selfimprove.core import seeding
    from selfimprove.stages.select import oracle_relabel
    from selfimprove.tasks.addition import AdditionConfig, AdditionTask

    task = AdditionTask(AdditionConfig(seed_max_digits=3, eval_max_digits=6, pad_width=6), 0)
    rows = [
        {"prompt_id": f"p{i}", "completion": "0000000", "reference": f"{i:07d}"[::-1], "selected": i % 4 != 0}
        for i in range(400)
    ]
    clean = oracle_relabel(rows, task, 0.0, seeding.rng(0, "oracle_labels", 1))
    assert all(r["completion"] == r["reference"] for r in clean if r["selected"])
    assert all(r["completion"] == "0000000" for r in clean if not r["selected"])  # only what was chosen is relabelled
    assert all(r["self_completion"] == "0000000" for r in clean)
    noisy = oracle_relabel(rows, task, 0.25, seeding.rng(0, "oracle_labels", 1))
    wrong = [r for r in noisy if r["selected"] and r["completion"] != r["reference"]]
    assert 45 <= len(wrong) <= 105  # 300 selected x 0.25 = 75 expected (binomial sd 7.5)
    assert all(
        len(r["completion"]) == 7 and sum(a != b for a, b in zip(r["completion"], r["reference"])) == 1 for r in wrong
    )
    assert noisy == oracle_relabel(rows, task, 0.25, seeding.rng(0, "oracle_labels", 1))


def test_oracle_relabel_refuses_rows_without_reference():
    from selfimprove.core.typed_yaml import ConfigError
    from selfimprove.stages.select import oracle_relabel

    class NoRef:
        name = "generic"
        corrupts = False

    rows = [{"prompt_id": "x", "completion": "a", "reference": "", "selected": True}]
    with pytest.raises(ConfigError, match="prompt 'x' has no reference"):
        oracle_relabel(rows, NoRef(), 0.0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="cannot make a wrong label of the right shape"):
        oracle_relabel(rows, NoRef(), 0.1, np.random.default_rng(0))
