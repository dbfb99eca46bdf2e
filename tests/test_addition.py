from selfimprove.config import AdditionConfig
from selfimprove.tasks.addition import AdditionTask, expected_length, format_problem


def test_lee_format_by_hand():
    assert format_problem(57, 8) == ("75+8=", "560")        # 65 reversed, padded to 2 + 1 digits
    assert format_problem(999, 1) == ("999+1=", "0001")     # 1000 reversed: a carry into a new digit
    assert format_problem(12, 34) == ("21+43=", "640")      # 46 -> "64" padded to 3
    assert format_problem(0, 0) == ("0+0=", "00")
    assert expected_length("999+1=") == 4 and expected_length("nonsense") is None


def test_format_check_is_label_free_length_rule():
    t = AdditionTask(AdditionConfig(), 0)
    assert t.format_ok("75+8=", "560", True)
    assert not t.format_ok("75+8=", "56", True)      # too short
    assert not t.format_ok("75+8=", "560", False)    # no EOS
    assert not t.format_ok("75+8=", "5a0", True)


def test_eval_sets_fixed_split_and_disjoint_from_training():
    cfg = AdditionConfig(seed_max_digits=3, seed_size=3000, eval_max_digits=5, eval_size_per_digit=30)
    t = AdditionTask(cfg, seed=1)
    ev = t.eval_sets()
    assert ev == AdditionTask(cfg, seed=1).eval_sets()
    assert {r["split"] for r in ev if r["difficulty"] <= 3} == {"id"} and {r["split"] for r in ev if r["difficulty"] > 3} == {"ood"}
    assert sum(r["difficulty"] == 1 for r in ev) == 30  # half of the 100 one-digit problems at most
    exclude = {r["prompt"] for r in ev}
    seed = t.seed_data(exclude)
    assert len(seed) == 3000 and not exclude & {r["prompt"] for r in seed}
    assert max(r["difficulty"] for r in seed) == 3
    prompts = t.round_prompts(1, [], exclude)
    assert not exclude & {r["prompt"] for r in prompts}
    assert {r["difficulty"] for r in prompts} == {4}


def test_in_range_prompts_stay_in_the_seeded_range():
    t = AdditionTask(AdditionConfig(seed_max_digits=3, prompts_per_round=50, in_range_prompts=200, eval_max_digits=6), 0)
    hist = [{"task/max_difficulty": 5}]  # rounds have already moved the target to 6
    rows = t.round_prompts(3, hist, set())
    assert {r["difficulty"] for r in rows[:50]} == {6}
    assert {r["difficulty"] for r in rows[50:]} == {1, 2, 3}
    assert rows == t.round_prompts(3, hist, set())  # deterministic per (seed, round)


def test_curricula():
    t = AdditionTask(AdditionConfig(seed_max_digits=3, curriculum="accelerated"), 0)
    assert t.target_digits(1, []) == [4]
    hist = [{"task/max_difficulty": 4, "eval/accuracy/d5": 0.995, "eval/accuracy/d6": 0.99, "eval/accuracy/d7": 0.5}]
    assert t.target_digits(2, hist) == [5, 6, 7]
    assert AdditionTask(AdditionConfig(seed_max_digits=3), 0).target_digits(2, hist) == [5]


def test_eval_metrics_frontier():
    t = AdditionTask(AdditionConfig(seed_max_digits=2, eval_max_digits=4), 0)
    rows = [{"difficulty": d, "split": "id" if d <= 2 else "ood", "correct": c}
            for d, cs in {1: [1, 1], 2: [1, 1], 3: [1, 0], 4: [1, 1]}.items() for c in cs]
    m = t.eval_metrics(rows)
    assert m["eval/frontier"] == 2  # d3 is at 0.5, so d4 does not count
    assert m["eval/accuracy/id"] == 1.0 and m["eval/accuracy/ood"] == 0.75 and m["eval/accuracy/d3"] == 0.5
