import json

import pytest

from selfimprove.tasks.addition import AdditionConfig, AdditionTask, expected_length, format_problem


@pytest.mark.unit
def test_lee_format_by_hand():
    assert format_problem(57, 8) == ("75+8=", "560")  # 65 reversed, padded to 2 + 1 digits
    assert format_problem(999, 1) == ("999+1=", "0001")  # 1000 reversed: a carry into a new digit
    assert format_problem(12, 34) == ("21+43=", "640")  # 46 -> "64" padded to 3
    assert format_problem(0, 0) == ("0+0=", "00")
    assert expected_length("999+1=") == 4 and expected_length("nonsense") is None


@pytest.mark.unit
def test_fixed_width_format_by_hand():
    # 57 + 8 with both operands padded to 4 digits: "7500" + "8000" = "56000" (65 reversed, padded to 4 + 1)
    assert format_problem(57, 8, pad_width=4) == ("7500+8000=", "56000")
    assert format_problem(9999, 1, pad_width=4) == ("9999+1000=", "00001")
    assert expected_length("7500+8000=") == 5
    t = AdditionTask(AdditionConfig(seed_max_digits=3, eval_max_digits=6, pad_width=6), 0)
    rows = t.seed_data() + t.eval_sets() + t.round_prompts(1, [], set())
    # every prompt and answer has the same shape, so a digit's distance to its operand digits never changes
    assert {len(r["prompt"]) for r in rows} == {14}
    assert {len(r.get("completion") or r["reference"]) for r in rows} == {7}
    assert all(
        t.is_correct(r["completion"], format_problem(*(int(x[::-1]) for x in r["prompt"][:-1].split("+")), 6)[1])
        for r in rows[:50]
    )


@pytest.mark.unit
def test_accelerated_curriculum_stops_at_the_padded_width():
    t = AdditionTask(AdditionConfig(seed_max_digits=3, curriculum="accelerated", eval_max_digits=6, pad_width=6), 0)
    hist = [{"task/max_difficulty": 5, "dev/accuracy/d6": 1.0}]
    assert t.target_digits(3, hist) == [6]


@pytest.mark.unit
def test_swapped_pairs_pose_each_new_problem_in_both_orders():
    t = AdditionTask(
        AdditionConfig(
            seed_max_digits=3, prompts_per_round=40, in_range_prompts=10, swapped_pairs=True, eval_max_digits=6
        ),
        0,
    )
    rows = t.round_prompts(1, [], set())
    new, in_range = rows[:40], rows[40:]
    assert len(new) == 40 and len({r["group_id"] for r in new}) == 20
    for x, y in zip(new[::2], new[1::2]):
        a, b = x["prompt"][:-1].split("+")
        assert x["group_id"] == y["group_id"] and y["prompt"] == f"{b}+{a}=" and x["reference"] == y["reference"]
    assert len({r["group_id"] for r in in_range}) == 10  # in-range prompts stay single


@pytest.mark.unit
def test_format_check_is_label_free_length_rule():
    t = AdditionTask(AdditionConfig(), 0)
    assert t.format_ok("75+8=", "560", True)
    assert not t.format_ok("75+8=", "56", True)  # too short
    assert not t.format_ok("75+8=", "560", False)  # no EOS
    assert not t.format_ok("75+8=", "5a0", True)


@pytest.mark.unit
def test_eval_sets_fixed_split_and_disjoint_from_training():
    cfg = AdditionConfig(seed_max_digits=3, seed_size=3000, eval_max_digits=5, eval_size_per_digit=30)
    t = AdditionTask(cfg, seed=1)
    ev = t.eval_sets()
    assert ev == AdditionTask(cfg, seed=1).eval_sets()
    assert {r["split"] for r in ev if r["difficulty"] <= 3} == {"id"} and {
        r["split"] for r in ev if r["difficulty"] > 3
    } == {"ood"}
    assert sum(r["difficulty"] == 1 for r in ev) == 30  # half of the 100 one-digit problems at most
    exclude = {r["prompt"] for r in ev}
    seed = t.seed_data(exclude)
    assert len(seed) == 3000 and not exclude & {r["prompt"] for r in seed}
    assert max(r["difficulty"] for r in seed) == 3
    prompts = t.round_prompts(1, [], exclude)
    assert not exclude & {r["prompt"] for r in prompts}
    assert {r["difficulty"] for r in prompts} == {4}


@pytest.mark.unit
def test_in_range_prompts_stay_in_the_seeded_range():
    t = AdditionTask(
        AdditionConfig(seed_max_digits=3, prompts_per_round=50, in_range_prompts=200, eval_max_digits=6), 0
    )
    hist = [{"task/max_difficulty": 5}]  # rounds have already moved the target to 6
    rows = t.round_prompts(3, hist, set())
    assert {r["difficulty"] for r in rows[:50]} == {6}
    assert {r["difficulty"] for r in rows[50:]} == {1, 2, 3}
    assert rows == t.round_prompts(3, hist, set())  # deterministic per (seed, round)


@pytest.mark.unit
def test_curricula():
    t = AdditionTask(AdditionConfig(seed_max_digits=3, curriculum="accelerated", dev_size_per_digit=20), 0)
    assert t.target_digits(1, []) == [4]
    hist = [{"task/max_difficulty": 4, "dev/accuracy/d5": 0.995, "dev/accuracy/d6": 0.99, "dev/accuracy/d7": 0.5}]
    assert t.target_digits(2, hist) == [5, 6, 7]
    assert AdditionTask(AdditionConfig(seed_max_digits=3), 0).target_digits(2, hist) == [5]


@pytest.mark.e2e
def test_no_eval_set_answer_reaches_a_decision(tmp_path):
    """The accelerated curriculum reads the dev split: eval accuracies at 0 or at 1 give the same round prompts,
    dev accuracies change them; dev problems are neither eval problems nor training problems; an alarm on an
    eval/ metric is refused."""
    from conftest import TINY_RECIPE, run_cli

    from selfimprove.core.config import ConfigError, load_recipe
    from selfimprove.core.prompts import prompt_key
    from selfimprove.core.rows import load_rows

    t = AdditionTask(AdditionConfig(seed_max_digits=3, curriculum="accelerated", dev_size_per_digit=20), 0)
    evals = {f"eval/accuracy/d{n}": 1.0 for n in range(1, 13)}
    base = {"task/max_difficulty": 4}
    assert t.target_digits(2, [{**base, **evals}]) == t.target_digits(2, [{**base, **{k: 0.0 for k in evals}}]) == [5]
    assert t.target_digits(2, [{**base, "dev/accuracy/d6": 1.0}]) == [5, 6, 7]  # d6 solved: go on to d7
    with pytest.raises(ConfigError, match="dev_size_per_digit"):
        load_recipe(None, {"task.addition.curriculum": "accelerated"})
    with pytest.raises(ConfigError, match="scored against the eval sets. answers"):
        load_recipe(None, {"monitor.alarms": [{"metric": "eval/accuracy/ood", "drop": 0.1}]})
    run = tmp_path / "run"
    out = run_cli(
        "run",
        TINY_RECIPE,
        "--output_dir",
        run,
        "--rounds",
        "1",
        "--task.addition.curriculum",
        "accelerated",
        "--task.addition.dev_size_per_digit",
        "10",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    dev, evals = load_rows(run / "eval_sets" / "dev"), load_rows(run / "eval_sets" / "data")
    keys = lambda rows: {prompt_key(r["prompt"]) for r in rows}  # noqa: E731
    trained = keys(load_rows(run / "seed_data" / "data")) | keys(load_rows(run / "round_01" / "generate" / "data"))
    assert dev and not keys(dev) & keys(evals) and not keys(dev) & trained
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("dev/accuracy/d4" in m and "eval/accuracy/d4" in m for m in metrics)


@pytest.mark.unit
def test_eval_metrics_frontier():
    t = AdditionTask(AdditionConfig(seed_max_digits=2, eval_max_digits=4), 0)
    rows = [
        {"difficulty": d, "split": "id" if d <= 2 else "ood", "correct": c}
        for d, cs in {1: [1, 1], 2: [1, 1], 3: [1, 0], 4: [1, 1]}.items()
        for c in cs
    ]
    m = t.eval_metrics(rows)
    assert m["eval/frontier"] == 2  # d3 is at 0.5, so d4 does not count
    assert m["eval/accuracy/id"] == 1.0 and m["eval/accuracy/ood"] == 0.75 and m["eval/accuracy/d3"] == 0.5


@pytest.mark.e2e
def test_shipped_main_job_and_control_run_end_to_end(tmp_path):
    """Both shipped addition recipes, as shipped but for size: fixed-width RoPE model, label-free rounds, control."""
    import json

    from conftest import REPO, run_cli
    from datasets import load_from_disk

    # 150 small steps teach the 13-digit answer shape, so the length rule (the vote is dropped here) keeps samples
    small = [
        "--rounds",
        1,
        "--train.bootstrap_steps",
        150,
        "--train.per_device_train_batch_size",
        16,
        "--train.max_steps",
        4,
        "--task.addition.seed_size",
        300,
        "--task.addition.prompts_per_round",
        30,
        "--task.addition.eval_size_per_digit",
        5,
        "--filter.min_scores",
        "{format: 1.0}",
    ]
    for name in ("addition_cpu", "addition_cpu_control"):
        run = tmp_path / name
        out = run_cli("run", REPO / "recipes" / "arithmetic" / f"{name}.yaml", "--output_dir", run, *small)
        assert out.returncode == 0, out.stderr[-3000:]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [0, 1] and "eval/accuracy/d12" in rows[-1]
        gen = load_from_disk(str(run / "round_01" / "generate" / "data"))
        assert {len(p) for p in gen["prompt"]} == {26} and set(gen["difficulty"]) == {6}  # 12 + 1 + 12 + 1, next count
        assert len(set(gen["prompt"])) == 30 and len(set(gen["group_id"])) == 15  # each problem in both orders
        assert "score_consistency" in load_from_disk(str(run / "round_01" / "judge" / "data")).column_names
        config = json.loads((run / "base_model" / "config.json").read_text())
        assert config["rope_parameters"]["rope_theta"] == 100.0
        used = json.loads((run / "round_01" / "train" / "meta.json").read_text())["rows_by_round"]
        assert (used["1"] > 0) == (name == "addition_cpu")  # the control trains on seed data only
