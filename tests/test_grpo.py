"""train.method 'grpo': TRL's GRPOTrainer rewarded by the run's judges, every rollout kept as the round's data with
values checked by hand (the judges' scores, the weighted reward, the group-relative advantage), TRL's per-step
metrics in metrics.jsonl, alarms that steer and roll back an online round, a kill mid-round that resumes to the
uninterrupted result, and whole groups judged when they straddle two processes."""

import json
import os
from collections import Counter, defaultdict

import numpy as np
import pytest
from conftest import TINY_RECIPE, copy_run, finished_run, run_cli

from selfimprove.core.config import load_recipe
from selfimprove.core.typed_yaml import ConfigError

# The tiny recipe as an online run: groups of 3, 12 completions a step (4 prompts), 10 steps a round; the judges are
# the format rule and a majority vote, weighted 1 : 3. A rollback alarm fires at round 1 (its 10 steps are under half
# of round 0's 30), so round 2 starts again from round 0's policy, sampling 0.5 hotter.
GRPO = [
    "--train.method",
    "grpo",
    "--train.per_device_train_batch_size",
    12,
    "--judge.weights",
    "{format: 1, majority: 3}",
    "--monitor.alarms",
    "[{metric: train/steps, drop: 0.5, vs: previous, action: rollback, steer_temperature: 0.5}]",
]


def _rows(path):
    from selfimprove.core.rows import load_rows

    return load_rows(path)


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    return finished_run(tmp_path_factory, "grpo", TINY_RECIPE, *GRPO)


@pytest.mark.e2e
def test_every_rollout_is_kept_with_its_judges_reward_and_advantage(grpo_run):
    from selfimprove.registry import build_task

    task = build_task(load_recipe(str(grpo_run / "recipe.yaml")))
    rollouts = _rows(grpo_run / "round_01" / "train" / "rollouts")
    assert len(rollouts) == 10 * 12 and not (grpo_run / "round_01" / "generate").exists()
    groups = defaultdict(list)
    for i, r in enumerate(rollouts):
        groups[i // 3].append(r)
    for g in groups.values():
        assert len({(r["prompt_id"], r["step"]) for r in g}) == 1 and [r["sample_idx"] for r in g] == [0, 1, 2]
        answers = [task.answer(r["completion"]) for r in g]
        votes = Counter(a for a in answers if a is not None)
        for r, a in zip(g, answers):
            assert r["score_majority"] == (0.0 if a is None else votes[a] / 3)
            assert r["score"] == pytest.approx((r["score_format"] + 3 * r["score_majority"]) / 4)
        scores = np.array([r["score"] for r in g])
        expected = (scores - scores.mean()) / (scores.std(ddof=1) + 1e-4)
        assert [r["advantage"] for r in g] == pytest.approx(expected.tolist(), abs=1e-5)
    assert {r["checkpoint"] for r in rollouts} == {"round_00/train/model"}
    assert sorted({r["step"] for r in rollouts}) == list(range(10))

    line = _metrics(grpo_run)[1]
    assert line["train/reward"] == pytest.approx(np.mean([r["score"] for r in rollouts]), abs=1e-5)
    zero = np.mean([len({r["score"] for r in g}) == 1 for g in groups.values()])
    assert line["train/frac_reward_zero_std"] == pytest.approx(zero)
    assert "train/entropy" in line and "train/completions/mean_length/last" in line
    assert line["quality/generated"] == line["compute/samples_generated"] == line["compute/train_rows"] == 120
    assert line["compute/generated_tokens"] == sum(r["num_tokens"] for r in rollouts)
    assert line["quality/kept"] == sum(r["advantage"] != 0 for r in rollouts)  # carried a learning signal
    assert "diversity/generated/answer_entropy" in line and "diversity/selected/distinct_2" in line


@pytest.mark.e2e
def test_the_report_shows_online_rounds(grpo_run, tmp_path):
    out = run_cli("report", grpo_run, "--out", tmp_path / "report")
    assert out.returncode == 0, out.stderr[-3000:]
    page = (tmp_path / "report" / "report.html").read_text()
    assert (
        "highest advantage" in page and "Online (GRPO) rounds" in page and (tmp_path / "report" / "online.png").exists()
    )


@pytest.mark.e2e
def test_a_rollback_alarm_steers_and_restarts_an_online_round(grpo_run):
    fired = json.loads((grpo_run / "round_01" / "monitor" / "alarms.json").read_text())
    assert [a["action"] for a in fired] == ["rollback"]
    second = _rows(grpo_run / "round_02" / "train" / "rollouts")
    assert {r["temperature"] for r in _rows(grpo_run / "round_01" / "train" / "rollouts")} == {0.8}
    assert [r["temperature"] for r in second] == pytest.approx([1.3] * len(second))
    assert {r["checkpoint"] for r in second} == {"round_00/train/model"}  # round 1's policy is passed over
    assert json.loads((grpo_run / "round_02" / "train" / "meta.json").read_text())["init"] == "round_00/train/model"


@pytest.mark.e2e
def test_a_round_killed_mid_training_is_redone_to_the_same_result(grpo_run, tmp_path):
    """The kill lands as step 4's batch is sampled; the rerun removes the partial round and trains it again from its
    clean state, to the rollouts and weights of the run that was never killed."""
    from safetensors.torch import load_file

    run = copy_run(grpo_run, tmp_path / "run", rounds=0)
    env = {**os.environ, "SELFIMPROVE_FAULT": "round_01/train.partial:step_4"}
    killed = run_cli("run", TINY_RECIPE, "--output_dir", run, "--rounds", 1, *GRPO, env=env)
    assert killed.returncode != 0 and (run / "round_01" / "train.partial").exists()
    again = run_cli("run", TINY_RECIPE, "--output_dir", run, "--rounds", 1, *GRPO)
    assert again.returncode == 0, again.stderr[-3000:]
    path = "round_01/train/rollouts"
    assert _rows(run / path) == _rows(grpo_run / path)
    a, b = (load_file(r / "round_01/train/model/model.safetensors") for r in (run, grpo_run))
    assert all((a[n] == b[n]).all() for n in a)


@pytest.mark.e2e
def test_a_group_straddling_two_processes_is_judged_whole(tmp_path):
    """Groups of 4 in batches of 6 a process: every second group is split across the two ranks, and its majority vote
    still counts all 4 answers (round 0 does not train: the untrained policy's answers are votes enough)."""
    from selfimprove.registry import build_task

    run = tmp_path / "run"
    out = run_cli(
        "run", TINY_RECIPE, "--output_dir", run, "--rounds", 1, "--train.method", "grpo",
        "--generate.num_samples", 4, "--train.per_device_train_batch_size", 6, "--train.global_batch_size", 12,
        "--train.max_steps", 4, "--train.bootstrap_steps", 0, "--train.launcher", "accelerate",
        "--train.accelerate_config", "accelerate_configs/cpu_ddp_2proc.yaml", timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((run / "round_01" / "train" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["rows"] == 4 * 12
    task = build_task(load_recipe(str(run / "recipe.yaml")))
    rollouts = _rows(run / "round_01" / "train" / "rollouts")
    for start in range(0, len(rollouts), 4):
        g = rollouts[start : start + 4]
        assert len({(r["prompt_id"], r["step"]) for r in g}) == 1
        answers = [task.answer(r["completion"]) for r in g]
        votes = Counter(a for a in answers if a is not None)
        assert [r["score_majority"] for r in g] == [0.0 if a is None else votes[a] / 4 for a in answers]


@pytest.mark.unit
def test_grpo_arguments_are_checked_and_the_recipe_owns_sampling_and_rewards():
    from trl import GRPOConfig

    from selfimprove.core.trainer_args import build_args

    grpo = {"train.method": "grpo", "generate.num_samples": 4}
    args = {"bf16": False, "grpo": {"beta": 0.04, "loss_type": "dr_grpo", "entropy_coef": "1e-2"}}
    r = load_recipe(None, {**grpo, "train.trainer_args": args})
    built = build_args(r, 1, "/tmp/x", 5, 1, "grpo", 1000)
    assert built["beta"] == 0.04 and built["loss_type"] == "dr_grpo" and built["entropy_coef"] == 0.01
    assert "beta" not in build_args(r, 0, "/tmp/x", 5, 1, "sft", 1000)  # round 0's SFT gets the flat keys only
    GRPOConfig(**built)  # TRL accepts the whole set
    bad = {
        "train.trainer_args": {"grpo": {"num_generations": 8, "losstype": "dapo"}, "dpo": {"rpo_alpha": 1.0}},
        "judge.combine": "vote",
        "generate.backend": "openai",
        "train.global_batch_size": 10,
        "train.use_generated": False,
    }
    with pytest.raises(ConfigError) as err:
        load_recipe(None, {**grpo, **bad})
    msg = str(err.value)
    for part in (
        "train.trainer_args.grpo.num_generations: set by generate.num_samples (the group size)",
        "train.trainer_args.grpo.losstype: not a field of trl.GRPOConfig, which training uses. Did you mean "
        "'loss_type'?",
        "train.trainer_args.dpo: a section for DPOConfig's arguments, but this recipe trains no such round.",
        "train.method 'grpo' sums the judges' rewards with judge.weights: set judge.combine: mean.",
        "train.method 'grpo' samples with the policy it is training",
        "train.global_batch_size=10 completions a step is not a multiple of generate.num_samples=4",
        "train.use_generated: false trains on seed data only, which an online round cannot",
    ):
        assert part in msg
