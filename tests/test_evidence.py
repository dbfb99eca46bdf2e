"""Evidence a study can rest on: no eval answer reaches a decision, and arms of one seed get the same tests."""

import json
import re
from pathlib import Path

import pytest
from conftest import GOOD_ROWS, TINY_RECIPE, generic_args, write_jsonl

from selfimprove.cli import main
from selfimprove.core import decisions
from selfimprove.core.config import AlarmConfig
from selfimprove.core.prompts import prompt_key
from selfimprove.core.rows import load_rows
from selfimprove.tasks.addition import AdditionConfig, AdditionTask
from selfimprove.tasks.countdown import CountdownConfig, CountdownTask
from selfimprove.tasks.rewrite import RewriteConfig, RewriteTask


def _sets(task) -> tuple[list, list, list]:
    """A task's eval, dev and held-out (probe) rows, drawn as a run draws them."""
    evals = task.eval_sets()
    exclude = {prompt_key(r["prompt"]) for r in evals}
    dev = task.dev_sets(exclude)
    return evals, dev, task.held_out("probe_draw", 10, exclude | {prompt_key(r["prompt"]) for r in dev})


# (task class, config class, fixed settings, arms: knobs a study varies between arms of one seed)
ARMS = [
    (
        RewriteTask,
        RewriteConfig,
        {"eval_id_rules": 8, "dev_size_per_level": 5, "eval_size_per_level": 20},
        [
            {"train_rules": 8},
            {"train_rules": 128},
            {"train_rules": 32, "seed_size": 50, "label_noise": 0.3, "step_mix": [1, 1]},
            {"train_rules": 32, "noop_share": 0.2, "prompts_per_round": 7},
        ],
    ),
    (
        AdditionTask,
        AdditionConfig,
        {"dev_size_per_digit": 5, "eval_size_per_digit": 20},
        [{}, {"seed_size": 50, "prompts_per_round": 3, "curriculum": "accelerated"}, {"in_range_prompts": 9}],
    ),
    (
        CountdownTask,
        CountdownConfig,
        {"dev_size_per_level": 5, "eval_size_per_level": 20},
        [{}, {"seed_size": 50, "prompts_per_round": 3}],
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize("task_cls, cfg_cls, fixed, arms", ARMS, ids=lambda x: getattr(x, "__name__", None))
def test_arms_of_one_seed_get_the_same_tests_row_for_row(task_cls, cfg_cls, fixed, arms):
    made = [_sets(task_cls(cfg_cls(**fixed, **arm), 3)) for arm in arms]
    for evals, dev, probe in made:
        assert evals and dev and probe
        keys = [{prompt_key(r["prompt"]) for r in rows} for rows in (evals, dev, probe)]
        assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])  # three apart sets
    for other in made[1:]:
        assert other == made[0]  # every row, every field, in order
    assert _sets(task_cls(cfg_cls(**fixed), 4))[0] != made[0][0]  # another seed: other tests


@pytest.mark.unit
def test_rewrite_held_out_rules_do_not_depend_on_the_training_rules():
    base = {"eval_size_per_level": 10}  # ID follows each arm's own rules here; OOD stays the same
    small, large = (RewriteTask(RewriteConfig(**base, train_rules=n), 0).eval_sets() for n in (8, 128))
    assert [r for r in small if r["split"] == "ood"] == [r for r in large if r["split"] == "ood"]
    assert [r for r in small if r["split"] == "id"] != [r for r in large if r["split"] == "id"]


@pytest.mark.unit
def test_a_decision_may_not_watch_an_eval_scored_metric():
    assert "eval sets' answers" in " ".join(AlarmConfig(metric="eval/accuracy/ood", action="steer").check())
    for metric in ("quality/probe/pass@1", "dev/accuracy/id", "diversity/generated/distinct_2", "wu_signature"):
        assert AlarmConfig(metric=metric, action="rollback").check() == []
    row = {"round": 1, "eval/accuracy/id": 0.5, "dev/accuracy/id": 0.4, "quality/probe/pass@1": 0.3}
    assert decisions.readable(row) == {"round": 1, "dev/accuracy/id": 0.4, "quality/probe/pass@1": 0.3}


@pytest.mark.e2e
def test_check_refuses_a_decision_on_eval_answers_before_any_work(tmp_path, capsys):
    alarm = "[{metric: eval/accuracy/id, drop: 0.2, action: rollback}]"
    out = tmp_path / "run"
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(out), "--monitor.alarms", alarm]) == 2
    err = capsys.readouterr().err
    assert "monitor.alarms[0].metric='eval/accuracy/id'" in err and "dev/..." in err and not out.exists()
    assert main(["check", str(TINY_RECIPE), "--monitor.alarms", alarm]) == 2
    assert "monitor.alarms[0].metric='eval/accuracy/id'" in capsys.readouterr().err


# The decisions both runs take: a steer alarm that fires at round 1 (train/rows falls from the seed's 400) and a
# rollback alarm on the probe's pass@1, which the probe's own answers score.
ALARMS = (
    "[{metric: train/rows, drop: 0.1, action: steer, steer_temperature: 0.4},"
    " {metric: quality/probe/pass@1, drop: 0.5, action: rollback}]"
)
DECIDED = ("generate", "judge", "filter", "select")


def _trained_on(run: Path) -> dict:
    """Every row a decision produced and every checkpoint tensor, per round."""
    from safetensors.torch import load_file

    out = {
        str(p.relative_to(run)): load_rows(p) for stage in DECIDED for p in sorted(run.glob(f"round_*/{stage}/data"))
    }
    for p in ("probe_set/data", "seed_data/data", "eval_sets/dev"):
        out[p] = load_rows(run / p) if (run / p).exists() else None
    for w in sorted(run.glob("round_*/train/model/model.safetensors")):
        out[str(w.relative_to(run))] = {k: v.tolist() for k, v in load_file(w).items()}
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training_other_eval(right: Path, wrong: Path) -> None:
    assert (right / "round_02" / "monitor").exists() and (wrong / "round_02" / "monitor").exists()
    a, b = _trained_on(right), _trained_on(wrong)
    assert a.keys() == b.keys() and any(k.endswith("model.safetensors") for k in a)
    for key in a:
        assert a[key] == b[key], key
    ma, mb = _metrics(right), _metrics(wrong)
    label_free = [{k: v for k, v in decisions.readable(m).items() if k != "recipe" and k[:5] != "time/"} for m in ma]
    # "recipe" is the recipe's fingerprint: the generic runs name other eval files
    assert label_free == [
        {k: v for k, v in decisions.readable(m).items() if k != "recipe" and k[:5] != "time/"} for m in mb
    ]
    assert any(m.get("alarm/train/rows") for m in ma)  # the steer alarm fired: a decision was taken
    assert ma[0]["eval/accuracy/id"] < 0.5 < mb[0]["eval/accuracy/id"]  # the wrong answers are what round 0 says
    assert {prompt_key(r["prompt"]) for r in load_rows(right / "probe_set" / "data")}.isdisjoint(
        {prompt_key(r["prompt"]) for r in load_rows(right / "eval_sets" / "data")}
    )


def _said(run: Path) -> dict[str, str]:
    """Round 0's greedy eval completion per prompt: wrong answers that the round-0 model gets 'right'."""
    return {r["prompt"]: r["completion"] for r in load_rows(run / "round_00" / "evaluate" / "data")}


@pytest.mark.e2e
def test_wrong_eval_answers_change_no_decision_on_a_built_in_task(tmp_path, monkeypatch):
    """The tiny addition run twice, the second with every eval reference wrong (round 0's own mistakes where it made
    one): identical data, decisions and weights in every round; only the eval metrics differ."""
    common = ["--rounds", "2", "--monitor.alarms", ALARMS, "--task.addition.dev_size_per_digit", "4"]
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(tmp_path / "right"), *common]) == 0
    said, right_eval = _said(tmp_path / "right"), AdditionTask.eval_sets

    def wrong_eval(self):
        rows = right_eval(self)
        return [{**r, "reference": said[r["prompt"]] if said[r["prompt"]] != r["reference"] else "0"} for r in rows]

    monkeypatch.setattr(AdditionTask, "eval_sets", wrong_eval)
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(tmp_path / "wrong"), *common]) == 0
    truth = {r["prompt"]: r["reference"] for r in load_rows(tmp_path / "right" / "eval_sets" / "data")}
    assert all(r["reference"] != truth[r["prompt"]] for r in load_rows(tmp_path / "wrong" / "eval_sets" / "data"))
    _assert_same_training_other_eval(tmp_path / "right", tmp_path / "wrong")


LEARN = ["--train.bootstrap_steps", "120", "--train.learning_rate", "0.003"]  # so round 0 writes numbers


@pytest.mark.e2e
def test_wrong_eval_answers_change_no_decision_on_the_generic_task(tmp_path):
    """The generic task on files, its eval file given again with every answer wrong: identical data and weights."""
    runs = {}
    for name in ("right", "wrong"):
        folder = tmp_path / name
        folder.mkdir()
        rows = GOOD_ROWS[90:]
        if name == "wrong":  # the number round 0 answered where it was wrong, else another wrong number
            said = {p: re.findall(r"-?[0-9]+", c) for p, c in _said(runs["right"]).items()}
            rows = [{**r, "answer": next((x for x in said[r["prompt"]][-1:] if x != r["answer"]), "-1")} for r in rows]
        args = generic_args(folder, evals=write_jsonl(folder / "eval.jsonl", rows))
        write_jsonl(folder / "prompts.jsonl", GOOD_ROWS[60:90])  # with answers: the probe's references come from here
        assert main(["run", *args, "--rounds", "2", "--monitor.alarms", ALARMS, "--train.max_steps", "3", *LEARN]) == 0
        runs[name] = folder / "run"
    _assert_same_training_other_eval(runs["right"], runs["wrong"])
