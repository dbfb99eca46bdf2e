"""Nothing a user brings can hurt a run: every bad input is refused before any work with one message naming the field
(or file and row) and the fix; foreign folders are never touched; one writer per run directory; stage checksums;
a kept recipe history; run directories from elsewhere do not run code."""

import json
from pathlib import Path

import pytest
from conftest import REPO, TINY_RECIPE, copy_run

from selfimprove.cli import main

GOOD_ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _generic(tmp: Path, prompts=None, seed=None, evals=None, **task) -> list[str]:
    """CLI arguments running a from-scratch generic recipe on local files (each replaceable by a broken one)."""
    prompts = prompts or _jsonl(tmp / "prompts.jsonl", [{"prompt": r["prompt"]} for r in GOOD_ROWS[60:90]])
    seed = seed or _jsonl(
        tmp / "seed.jsonl", [{"prompt": r["prompt"], "completion": r["answer"]} for r in GOOD_ROWS[:60]]
    )
    evals = evals or _jsonl(tmp / "eval.jsonl", GOOD_ROWS[90:])
    recipe = tmp / "generic.yaml"
    recipe.write_text(f"""
output_dir: {tmp / "run"}
rounds: 1
model: {{bootstrap: {{hidden_size: 32, num_layers: 2, num_heads: 2}}}}
task: {{name: generic, generic: {{prompts: {prompts}, seed_data: {seed}, eval_id: {evals}, verifier: numeric,
       max_new_tokens: 4}}}}
generate: {{num_samples: 3, batch_size: 32}}
filter: {{min_scores: {{format: 1.0, majority: 0.6}}}}
train: {{bootstrap_steps: 5, max_steps: 2, per_device_train_batch_size: 8}}
""")
    return [str(recipe), *[str(x) for kv in task.items() for x in (f"--task.generic.{kv[0]}", kv[1])]]


def _tiny(*args) -> list[str]:
    return [str(TINY_RECIPE), *map(str, args)]


def _text(tmp, name, text: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# (id, arguments after "run" given a tmp folder, text the one message must contain)
BAD = [
    ("top_k", lambda t: _tiny("--generate.top_k", -1), "generate.top_k=-1 must be >= 0"),
    ("batch_size", lambda t: _tiny("--generate.batch_size", 0), "generate.batch_size=0 must be >= 1"),
    ("max_new_tokens", lambda t: _tiny("--generate.max_new_tokens", -1), "generate.max_new_tokens=-1 must be >= 0"),
    ("logging_steps", lambda t: _tiny("--train.logging_steps", 0), "train.logging_steps=0 must be >= 1"),
    ("seed", lambda t: _tiny("--seed", -1), "seed=-1 must be >= 0"),
    ("learning_rate", lambda t: _tiny("--train.learning_rate", -1), "train.learning_rate=-1.0 must be > 0"),
    (
        "global_batch",
        lambda t: _tiny(
            "--train.launcher",
            "accelerate",
            "--train.accelerate_config",
            REPO / "accelerate_configs" / "cpu_ddp_2proc.yaml",
            "--train.per_device_train_batch_size",
            8,
            "--train.global_batch_size",
            24,
        ),
        "global_batch_size=24 is not a multiple",
    ),
    (
        "trainer_args",
        lambda t: _tiny("--train.trainer_args", "{bogus_arg: 1}"),
        "train.trainer_args.bogus_arg: not a field",
    ),
    (
        "min_scores_text",
        lambda t: _tiny("--filter.min_scores", "{majority: high}"),
        "filter.min_scores.majority='high' must be a number",
    ),
    (
        "weights_zero",
        lambda t: _tiny("--judge.weights", "{format: 0, majority: 0}", "--judge.judges", "[format, majority]"),
        "weights sum to 0",
    ),
    ("weights_negative", lambda t: _tiny("--judge.weights", "{majority: -1}"), "a judge's weight must be >= 0"),
    (
        "vote_threshold",
        lambda t: _tiny("--judge.vote_thresholds", "{majority: x}"),
        "vote_thresholds.majority='x' must be a number",
    ),
    ("num_heads", lambda t: _tiny("--model.bootstrap.num_heads", 0), "model.bootstrap.num_heads=0 must be >= 1"),
    ("model_path_missing", lambda t: _tiny("--model.path", t / "no-model"), "does not exist"),
    (
        "model_path_not_model",
        lambda t: _tiny("--model.path", _text(t, "x.txt", "hi").parent),
        "a folder without config.json",
    ),
    (
        "prompts_malformed",
        lambda t: _generic(t, prompts=str(_text(t, "p.jsonl", '{"prompt": "1+1="\n{oops'))),
        "p.jsonl cannot be read as .jsonl",
    ),
    (
        "prompts_not_utf8",
        lambda t: _generic(t, prompts=str(_text(t, "p.jsonl", b'{"prompt": "\xff\xfe"}\n'))),
        "p.jsonl is not UTF-8",
    ),
    ("prompts_empty", lambda t: _generic(t, prompts=str(_text(t, "p.jsonl", ""))), "p.jsonl"),
    (
        "prompts_no_column",
        lambda t: _generic(t, prompts=_jsonl(t / "p.jsonl", [{"text": "1+1="}])),
        "rows have no column 'prompt'",
    ),
    (
        "prompts_null",
        lambda t: _generic(t, prompts=_jsonl(t / "p.jsonl", [{"prompt": "1+1="}, {"prompt": None}])),
        "p.jsonl row 1: column 'prompt' is null",
    ),
    (
        "prompts_blank",
        lambda t: _generic(t, prompts=_jsonl(t / "p.jsonl", [{"prompt": "  "}])),
        "p.jsonl row 0: column 'prompt' is empty",
    ),
    (
        "csv_empty_cell",
        lambda t: _generic(t, prompts=str(_text(t, "p.csv", "prompt,answer\n1+1=,2\n,3\n"))),
        "p.csv row 1: column 'prompt' is null",
    ),
    (
        "csv_ragged",
        lambda t: _generic(t, prompts=str(_text(t, "p.csv", "prompt\n1+1=\n1,2\n"))),
        "p.csv cannot be read as .csv (Error tokenizing data",
    ),
    (
        "seed_no_completion",
        lambda t: _generic(t, seed=_jsonl(t / "s.jsonl", [{"prompt": "1+1="}])),
        "rows have no column 'completion'",
    ),
    (
        "seed_null_completion",
        lambda t: _generic(t, seed=_jsonl(t / "s.jsonl", [{"prompt": "1+1=", "completion": None}])),
        "s.jsonl row 0: column 'completion' is null",
    ),
    (
        "eval_no_answers",
        lambda t: _generic(t, evals=_jsonl(t / "e.jsonl", [{"prompt": "1+1="}])),
        "rows have no column 'answer'",
    ),
    ("eval_missing", lambda t: _generic(t, evals=str(t / "nope.jsonl")), "nope.jsonl does not exist"),
    (
        "prompt_too_long",
        lambda t: _generic(t, prompts=_jsonl(t / "p.jsonl", [{"prompt": "1+" * 5000 + "1="}])),
        "> the model's 256 positions",
    ),
    (
        "unknown_chars",
        lambda t: _generic(t, prompts=_jsonl(t / "p.jsonl", [{"prompt": "1+1=€"}])),
        "characters the model's tokenizer cannot encode: '€'",
    ),
    ("template_missing_column", lambda t: _generic(t, prompt_template="'{{ question }}'"), "'question' is undefined"),
    ("fewshot_missing", lambda t: _generic(t, fewshot=t / "shots.jsonl"), "shots.jsonl does not exist"),
    ("probe_size", lambda t: _tiny("--monitor.probe_size", -5), "monitor.probe_size=-5 must be >= 0"),
    ("yaml_malformed", lambda t: [str(_text(t, "r.yaml", "rounds: [1, 2\nseed: 0\n"))], "not valid YAML (line"),
    ("yaml_empty", lambda t: [str(_text(t, "r.yaml", ""))], "is empty"),
    ("yaml_list", lambda t: [str(_text(t, "r.yaml", "- a\n- b\n"))], "must be a YAML mapping"),
    ("yaml_duplicate", lambda t: [str(_text(t, "r.yaml", "rounds: 1\nrounds: 2\n"))], "duplicate key 'rounds'"),
    ("yaml_not_utf8", lambda t: [str(_text(t, "r.yaml", b"rounds: \xff\n"))], "not UTF-8"),
    ("recipe_missing", lambda t: [str(t / "none.yaml")], "no such recipe file"),
    ("override_not_yaml", lambda t: _tiny("--rounds", "[1,"), "--rounds [1,: not valid YAML"),
    ("output_dir_empty", lambda t: _tiny("--output_dir", ""), "output_dir is empty"),
    ("unknown_key", lambda t: [str(_text(t, "r.yaml", "trian: {}\n"))], "trian: unknown key. Did you mean 'train'?"),
    (
        "sft_args",
        lambda t: [str(_text(t, "r.yaml", "train: {sft_args: {bf16: true}}\n"))],
        "train.sft_args was renamed train.trainer_args",
    ),
    ("rounds_type", lambda t: _tiny("--rounds", "three"), "rounds: expected int"),
    ("dpo_beta", lambda t: _tiny("--train.dpo.beta", 0), "train.dpo.beta=0.0 must be > 0"),
    ("lora_dropout", lambda t: _tiny("--train.lora.dropout", 1.0), "train.lora.dropout=1.0 must be >= 0 and < 1"),
    ("gpu_memory", lambda t: _tiny("--generate.vllm.gpu_memory_utilization", 1.5), "must be > 0 and <= 1"),
    (
        "openai_concurrency",
        lambda t: _tiny("--generate.openai.concurrency", 0),
        "generate.openai.concurrency=0 must be >= 1",
    ),
    (
        "accelerate_missing",
        lambda t: _tiny("--train.launcher", "accelerate", "--train.accelerate_config", t / "no.yaml"),
        "no.yaml' does not exist",
    ),
    (
        "accelerate_malformed",
        lambda t: _tiny(
            "--train.launcher", "accelerate", "--train.accelerate_config", _text(t, "a.yaml", "distributed_type: 3\n")
        ),
        "is not a valid accelerate config",
    ),
    (
        "judge_template_missing",
        lambda t: _tiny(
            "--judge.judges", "[llm, format]", "--filter.min_scores", "{}", "--judge.llm.template", t / "t.txt"
        ),
        "t.txt' does not exist",
    ),
    (
        "extra_metrics",
        lambda t: _tiny("--monitor.extra_metrics", "[no_such_module:fn]"),
        "module 'no_such_module' does not import",
    ),
    (
        "embedder",
        lambda t: _tiny("--monitor.embedding", "true", "--monitor.embedder", t),
        "not a sentence-transformers folder",
    ),
    ("report_to", lambda t: _tiny("--monitor.report_to", "[mlflow]"), "'mlflow' is not a tracker"),
    ("eval_size", lambda t: _tiny("--task.addition.eval_size_per_digit", 0), "eval_size_per_digit=0 must be >= 1"),
    ("max_steps", lambda t: _tiny("--train.max_steps", -1), "train.max_steps=-1 must be >= 0"),
    ("per_prompt_cap", lambda t: _tiny("--select.per_prompt_cap", -1), "select.per_prompt_cap=-1 must be >= 0"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_before_any_work(case, tmp_path, capsys):
    _, make, expected = case
    args = make(tmp_path)
    code = main(["run", *args, "--output_dir", str(tmp_path / "run")] if "--output_dir" not in args else ["run", *args])
    out = capsys.readouterr()
    assert code == 2, out.err[-2000:]
    assert expected in out.err, out.err
    assert out.err.startswith("selfimprove: ") and "Traceback" not in out.err + out.out
    assert not (tmp_path / "run").exists()  # no model built, no stage written, not even the folder


@pytest.mark.e2e
def test_unknown_cli_prefix_is_not_guessed(capsys):
    with pytest.raises(SystemExit) as err:
        main(["run", str(TINY_RECIPE), "--train.learning_rat", "1"])
    assert err.value.code == 2 and "unrecognized arguments: --train.learning_rat" in capsys.readouterr().err


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
    args = _generic(tmp_path)
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
    assert [e.step for e in events.Scalars("eval/accuracy/id")] == [0, 1]


@pytest.mark.e2e
def test_eval_prompt_with_other_whitespace_never_reaches_training(tmp_path):
    from selfimprove.core.rows import load_rows

    rows = GOOD_ROWS[60:90] + [{"prompt": " " + GOOD_ROWS[95]["prompt"]}]  # an eval prompt with a leading space
    args = _generic(tmp_path, prompts=_jsonl(tmp_path / "p.jsonl", [{"prompt": r["prompt"]} for r in rows]))
    assert main(["run", *args]) == 0
    used = {r["prompt"].strip() for r in load_rows(tmp_path / "run" / "round_01" / "generate" / "data")}
    assert GOOD_ROWS[95]["prompt"] not in used and len(used) == 30 - 7  # a quarter of the pool held out as the probe


@pytest.mark.e2e
def test_metadata_paths_are_relative(tiny_run):
    meta = json.loads((tiny_run / "round_01" / "train" / "meta.json").read_text())
    assert meta["init"] == "round_00/train/model"
