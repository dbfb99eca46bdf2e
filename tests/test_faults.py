"""Every fault a user can meet ends in one message that names the file or field and what to do, never in
"unexpected ..." and never after work has started: values the recipe refuses, a damaged run directory, a full disk,
a finished stage's file changed in place."""

import errno
import json

import pytest
import yaml
from conftest import REPO, copy_run

from selfimprove import cli
from selfimprove.core import integrity
from selfimprove.core.atomic import atomic_stage
from selfimprove.core.config import SchedulerName, load_recipe
from selfimprove.core.errors import RunDirError
from selfimprove.core.rundir import RunContext, rebuild_metrics
from selfimprove.core.runs import open_run
from selfimprove.core.typed_yaml import ConfigError


def _main(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _refused(overrides: dict, path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides)
    return str(info.value)


@pytest.mark.unit
def test_values_that_would_fail_after_round_0_are_refused_with_the_recipe():
    for task in ("addition", "countdown", "rewrite"):
        assert f"task.{task}.prompts_per_round=0 must be >= 1" in _refused(
            {"task.name": task, f"task.{task}.prompts_per_round": 0}
        )
    assert "train.lr_scheduler_type: 'bogus' is not one of 'linear' | 'cosine'" in _refused(
        {"train.lr_scheduler_type": "bogus"}
    )


@pytest.mark.unit
def test_the_scheduler_names_are_transformers_own():
    from typing import get_args

    from transformers import SchedulerType

    assert set(get_args(SchedulerName)) == {s.value for s in SchedulerType}


@pytest.mark.unit
def test_an_empty_section_is_its_defaults_and_a_value_is_not_a_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\ntask: {name: addition}\n")
    assert load_recipe(str(path), {"model.path": "x"}).model.path == "x"
    assert load_recipe(str(path)).model.path is None
    path.write_text("model: 3\n")
    assert "model: is 3, not a section, so model.path cannot be set in it." in _refused({"model.path": "x"}, str(path))


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, why", [("", "it is empty"), ("a: [1,\n", "it is not YAML"), ("- 1\n", "it holds a list, not a recipe")]
)
def test_a_damaged_run_recipe_gets_a_message(tmp_path, capsys, text, why):
    run = tmp_path / "run"
    (run / "recipes").mkdir(parents=True)
    (run / "recipes" / "000.yaml").write_text("rounds: 1\n")
    (run / "recipe.yaml").write_text(text)
    with pytest.raises(RunDirError, match=f"recipe.yaml is damaged: {why}.*copy the last of recipes/ \\(000.yaml\\)"):
        open_run(run)
    rc, err = _main(capsys, "monitor", run)
    assert rc == 2 and "is damaged" in err and "unexpected" not in err


@pytest.mark.unit
def test_a_full_disk_says_what_to_do(monkeypatch, capsys, tmp_path):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.arrow"))

    monkeypatch.setitem(cli.COMMANDS, "check", full)
    rc, err = _main(capsys, "check", tmp_path / "r.yaml")
    assert rc == 1 and "no space left on the device writing" in err and "rerun the same command" in err
    assert "unexpected" not in err


def _finished(folder, files: dict[str, str]) -> None:
    with atomic_stage(folder) as (out, _):
        for name, text in files.items():
            (out / name).write_text(text)


@pytest.mark.unit
def test_a_finished_monitor_that_lost_its_metrics_is_called_damaged(tmp_path):
    _finished(tmp_path / "round_00" / "monitor", {"metrics.json": json.dumps({"round": 0}), "alarms.json": "[]"})
    assert rebuild_metrics(tmp_path) == [{"round": 0}]
    (tmp_path / "round_00" / "monitor" / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="round_00/monitor is damaged: metrics.json is missing.*selfimprove verify"):
        rebuild_metrics(tmp_path)


@pytest.mark.unit
def test_an_input_changed_in_place_is_refused_before_a_stage_starts(tmp_path, monkeypatch):
    recipe = load_recipe(None, {"output_dir": str(tmp_path)})
    ctx = RunContext(recipe, tmp_path)
    _finished(tmp_path / "seed_data", {"rows.jsonl": '{"prompt": "1+1=", "completion": "2"}\n'})
    with ctx.writing(0, "train") as (out, _):  # intact: the stage runs
        (out / "x").write_text("")
    rows = tmp_path / "seed_data" / "rows.jsonl"
    rows.write_text(rows.read_text().replace("2", "3"))  # same size, other bytes
    monkeypatch.setattr(integrity, "_CONTENT_CHECKED", set())  # a resumed run: a new process hashes again
    started = False
    with pytest.raises(RunDirError, match="seed_data is damaged: rows.jsonl changed after the stage finished"):
        with ctx.writing(0, "train", {"force": True}):
            started = True
    assert not started


@pytest.mark.unit
def test_what_only_the_check_knows_is_refused_before_a_run_and_before_a_study(capsys, tmp_path):
    recipe = REPO / "recipes" / "countdown" / "quality_only_cpu.yaml"
    noisy = ["--select.labels", "oracle", "--select.oracle_label_noise", "0.1"]
    rc, err = _main(capsys, "run", recipe, "--output_dir", tmp_path / "run", *noisy)
    assert rc == 2 and "select.oracle_label_noise: task 'countdown' cannot make a wrong label" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    study = tmp_path / "study.yaml"
    arms = [
        {"name": "a", "overrides": {}},
        {"name": "b", "overrides": {"select.labels": "oracle", "select.oracle_label_noise": 0.1}},
    ]
    study.write_text(yaml.safe_dump({"base": str(recipe), "arms": arms}))
    rc, err = _main(capsys, "study", study, "--output_dir", tmp_path / "s")
    assert rc == 2 and "arm 'b': its recipe cannot run" in err and not (tmp_path / "s" / "a").exists()


@pytest.mark.e2e
def test_a_stage_run_by_hand_is_checked_first(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["monitor"]["extra_metrics"] = ["no_such_module:score"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = (run / "round_01" / "evaluate" / "DONE").stat().st_mtime_ns
    rc, err = _main(capsys, "stage", "evaluate", run, "--round", 1, "--force", "--trust-recipe")
    assert rc == 2 and "cannot run the stage" in err and "'no_such_module' does not import" in err
    assert (run / "round_01" / "evaluate" / "DONE").stat().st_mtime_ns == done
