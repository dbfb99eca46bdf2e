"""A run directory is safe: foreign folders are never touched; one writer per run directory; stage checksums; a kept
recipe history; run directories from elsewhere run no code."""

import json
from pathlib import Path

import pytest
from conftest import GOOD_ROWS, TINY_RECIPE, copy_run, generic_args, write_jsonl

from selfimprove.cli import main


def _copy(tiny_run, tmp_path) -> Path:
    """The session's tiny run as it was after round 1: the tests below extend it, damage it or lock it."""
    return copy_run(tiny_run, tmp_path / "run", rounds=1)


@pytest.mark.e2e
def test_foreign_folder_is_never_touched(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "eval_sets").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(mine)]) == 2
    assert "holds a run's stages (eval_sets) but no recipe.yaml" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(other)]) == 2
    assert "is not empty and is not a selfimprove run" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["eval_sets", "notes.txt"] and (other / "thesis.tex").exists()


@pytest.mark.e2e
def test_run_missing_its_recipe_is_not_readopted(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    (run / "recipe.yaml").unlink()
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(run), "--filter.min_scores", "{majority: 0.9}"]) == 2
    assert "but no recipe.yaml" in capsys.readouterr().err


@pytest.mark.e2e
def test_one_writer_at_a_time(tiny_run, tmp_path, capsys):
    import os

    from selfimprove.core.runlock import run_lock

    run = _copy(tiny_run, tmp_path)
    with run_lock(run, "run"):
        for argv in (
            ["run", str(TINY_RECIPE), "--output_dir", str(run), "--rounds", "1"],
            ["stage", "evaluate", str(run), "--round", "1"],
            ["monitor", str(run)],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is in use by pid {os.getpid()} (selfimprove run)" in err, err
        assert main(["verify", str(run)]) == 0  # readers need no lock
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(run), "--rounds", "1"]) == 0  # released


@pytest.mark.e2e
def test_same_size_corruption_is_found_by_verify_and_redone(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    assert main(["verify", str(run)]) == 0 and "all intact" in capsys.readouterr().out
    arrow = next((run / "round_01" / "judge" / "data").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-100] ^= 0xFF  # one byte flipped: the size is unchanged
    arrow.write_bytes(bytes(data))
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "round_01/judge: data/" in out and "changed (content hash differs)" in out
    assert f"selfimprove stage judge {run} --round 1 --force" in out
    assert main(["stage", "judge", str(run), "--round", "1", "--force"]) == 0
    assert main(["verify", str(run)]) == 0  # redone identically: later stages are still valid


@pytest.mark.e2e
def test_truncated_file_is_refused_on_read(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    arrow = next((run / "round_01" / "select" / "data").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-10])
    assert main(["monitor", str(run)]) == 2
    assert "round_01/select is damaged" in capsys.readouterr().err


@pytest.mark.e2e
def test_changed_data_file_makes_later_stages_stale(tmp_path, capsys):
    args = generic_args(tmp_path)
    assert main(["run", *args]) == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(prompts.read_text().replace("6+0=", "6+0 ="))
    assert main(["verify", str(tmp_path / "run")]) == 1
    assert f"its input file:{prompts} is no longer the one it was made from" in capsys.readouterr().out


@pytest.mark.e2e
def test_forced_redo_that_fails_keeps_the_finished_stage(tiny_run, tmp_path, monkeypatch):
    from selfimprove import loop, registry
    from selfimprove.core.rows import load_rows
    from selfimprove.core.runs import open_run

    run = _copy(tiny_run, tmp_path)
    before = load_rows(run / "round_01" / "filter" / "data")

    def broken(ctx, k):
        with ctx.writing(k, "filter") as (out, meta):
            (out / "half").write_text("written, then")
            raise RuntimeError("the redo fails")

    monkeypatch.setitem(registry.STAGES, "filter", broken)
    with pytest.raises(RuntimeError):
        loop.run_stage(open_run(run), 1, "filter", force=True)
    assert (
        load_rows(run / "round_01" / "filter" / "data") == before
        and not (run / "round_01" / "filter" / "half").exists()
    )
    assert main(["verify", str(run)]) == 0


@pytest.mark.e2e
def test_recipe_history_and_the_recipe_of_every_round(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    assert (
        main(
            [
                "run",
                str(TINY_RECIPE),
                "--output_dir",
                str(run),
                "--rounds",
                "2",
                "--filter.min_scores",
                "{majority: 0.5}",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "run",
                str(TINY_RECIPE),
                "--output_dir",
                str(run),
                "--rounds",
                "2",
                "--filter.min_scores",
                "{majority: 0.5}",
                "--allow-recipe-change",
            ]
        )
        == 0
    )
    history = json.loads((run / "recipes" / "history.json").read_text())
    assert [h["from_round"] for h in history] == [0, 2]
    assert history[1]["changes"] == ["filter.min_scores.majority: 0.3 -> 0.5"]
    assert (run / history[0]["file"]).read_text() != (run / history[1]["file"]).read_text()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["recipe"] for m in metrics] == [history[0]["hash"], history[0]["hash"], history[1]["hash"]]
    assert json.loads((run / "round_02" / "filter" / "meta.json").read_text())["recipe"] == history[1]["hash"]
    from selfimprove.tools.compare import compare
    from selfimprove.tools.report import write_report

    page = write_report([str(run)], str(tmp_path / "report")).read_text()
    assert (
        "Recipe history" in page and history[0]["hash"] in page and "filter.min_scores.majority: 0.3 -&gt; 0.5" in page
    )
    result = compare(str(run / "round_01"), str(run / "round_02"))
    assert (result["a"]["recipe"], result["b"]["recipe"]) == (history[0]["hash"], history[1]["hash"])
    assert (
        main(
            [
                "run",
                str(TINY_RECIPE),
                "--output_dir",
                str(run),
                "--rounds",
                "1",
                "--filter.min_scores",
                "{majority: 0.5}",
            ]
        )
        == 2
    )
    assert "has already finished round 2" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_run_directory_from_elsewhere_runs_no_code(tmp_path, capsys):
    module = tmp_path / "evil_metrics.py"
    module.write_text("def score(rows):\n    return {'extra/n': len(rows)}\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        run = tmp_path / "run"
        assert (
            main(
                [
                    "run",
                    str(TINY_RECIPE),
                    "--output_dir",
                    str(run),
                    "--rounds",
                    "1",
                    "--monitor.extra_metrics",
                    "[evil_metrics:score]",
                ]
            )
            == 0
        )
        assert main(["monitor", str(run)]) == 2
        assert "monitor.extra_metrics: 'evil_metrics:score' (a Python module)" in capsys.readouterr().err
        assert main(["monitor", str(run), "--trust-recipe"]) == 0
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.e2e
def test_read_only_run_says_it_needs_write_access(tiny_run, tmp_path, monkeypatch, capsys):
    import errno
    import os

    run = _copy(tiny_run, tmp_path)
    real_open = os.open

    def read_only(path, *a, **kw):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(run), "--rounds", "1"]) == 2
    assert "is not writable (Read-only file system): selfimprove needs write access" in capsys.readouterr().err


@pytest.mark.e2e
def test_unexpected_error_is_one_line_and_a_log(tiny_run, tmp_path, monkeypatch, capsys):
    from selfimprove import registry

    run = _copy(tiny_run, tmp_path)

    def crash(ctx, k):
        raise ZeroDivisionError("deep inside a library")

    monkeypatch.setitem(registry.STAGES, "generate", crash)
    assert main(["run", str(TINY_RECIPE), "--output_dir", str(run), "--rounds", "2"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("selfimprove:")]
    assert len(lines) == 1 and "unexpected ZeroDivisionError in 'run': deep inside a library" in lines[0]
    err = lines[0]
    log = Path(err.split("full traceback: ")[1].rstrip(")"))
    assert log.parent == run / "logs" and "Traceback" in log.read_text() and "crash" in log.read_text()


@pytest.mark.unit
def test_rounds_from_100_are_counted(tmp_path):
    from selfimprove.core.rundir import round_numbers

    for k in (0, 7, 99, 100, 123):
        (tmp_path / f"round_{k:02d}").mkdir()
    (tmp_path / "round_xx").mkdir()
    assert round_numbers(tmp_path) == [0, 7, 99, 100, 123]


@pytest.mark.e2e
def test_tensorboard_holds_each_round_once_across_monitor_reruns(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert (
        main(
            ["run", str(TINY_RECIPE), "--output_dir", str(run), "--rounds", "1", "--monitor.report_to", "[tensorboard]"]
        )
        == 0
    )
    assert main(["monitor", str(run)]) == 0 and main(["monitor", str(run)]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/accuracy/id")] == [0, 1]  # the round is the step
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/last_loss")] == pytest.approx([m["train/last_loss"] for m in lines])


@pytest.mark.e2e
def test_eval_prompt_with_other_whitespace_never_reaches_training(tmp_path):
    from selfimprove.core.rows import load_rows

    rows = GOOD_ROWS[60:90] + [{"prompt": " " + GOOD_ROWS[95]["prompt"]}]  # an eval prompt with a leading space
    args = generic_args(tmp_path, prompts=write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows]))
    assert main(["run", *args]) == 0
    used = {r["prompt"].strip() for r in load_rows(tmp_path / "run" / "round_01" / "generate" / "data")}
    assert GOOD_ROWS[95]["prompt"] not in used and len(used) == 30 - 7  # a quarter of the pool held out as the probe


@pytest.mark.e2e
def test_metadata_paths_are_relative(tiny_run):
    meta = json.loads((tiny_run / "round_01" / "train" / "meta.json").read_text())
    assert meta["init"] == "round_00/train/model"
