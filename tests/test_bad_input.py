"""Nothing a user brings can hurt a run: every bad input (recipe, data file, command line) is refused before any work
with one message naming the field (or file and row) and the fix."""

from pathlib import Path

import pytest
from conftest import REPO, TINY_RECIPE, generic_args, write_jsonl

from selfimprove.cli import main


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
        "global_batch_size=24 is not a multiple of per_device_train_batch_size (8) x 2 processes",
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
        lambda t: generic_args(t, prompts=str(_text(t, "p.jsonl", '{"prompt": "1+1="\n{oops'))),
        "p.jsonl cannot be read as .jsonl",
    ),
    (
        "prompts_not_utf8",
        lambda t: generic_args(t, prompts=str(_text(t, "p.jsonl", b'{"prompt": "\xff\xfe"}\n'))),
        "p.jsonl is not UTF-8",
    ),
    ("prompts_empty", lambda t: generic_args(t, prompts=str(_text(t, "p.jsonl", ""))), "p.jsonl"),
    (
        "prompts_no_column",
        lambda t: generic_args(t, prompts=write_jsonl(t / "p.jsonl", [{"text": "1+1="}])),
        "task.generic.prompt_field: column 'prompt' is missing from prompts (",
    ),
    (
        "prompts_null",
        lambda t: generic_args(t, prompts=write_jsonl(t / "p.jsonl", [{"prompt": "1+1="}, {"prompt": None}])),
        "p.jsonl row 1: column 'prompt' is null",
    ),
    (
        "prompts_blank",
        lambda t: generic_args(t, prompts=write_jsonl(t / "p.jsonl", [{"prompt": "  "}])),
        "p.jsonl row 0: column 'prompt' is empty",
    ),
    (
        "csv_empty_cell",
        lambda t: generic_args(t, prompts=str(_text(t, "p.csv", "prompt,answer\n1+1=,2\n,3\n"))),
        "p.csv row 1: column 'prompt' is null",
    ),
    (
        "csv_ragged",
        lambda t: generic_args(t, prompts=str(_text(t, "p.csv", "prompt\n1+1=\n1,2\n"))),
        "p.csv cannot be read as .csv (Error tokenizing data",
    ),
    (
        "seed_no_completion",
        lambda t: generic_args(t, seed=write_jsonl(t / "s.jsonl", [{"prompt": "1+1="}])),
        "task.generic.seed_completion_field: column 'completion' is missing from seed_data (",
    ),
    (
        "seed_null_completion",
        lambda t: generic_args(t, seed=write_jsonl(t / "s.jsonl", [{"prompt": "1+1=", "completion": None}])),
        "s.jsonl row 0: column 'completion' is null",
    ),
    (
        "eval_no_answers",
        lambda t: generic_args(t, evals=write_jsonl(t / "e.jsonl", [{"prompt": "1+1="}])),
        "task.generic.answer_field: column 'answer' is missing from eval_id (",
    ),
    ("eval_missing", lambda t: generic_args(t, evals=str(t / "nope.jsonl")), "nope.jsonl does not exist"),
    (
        "prompt_too_long",
        lambda t: generic_args(t, prompts=write_jsonl(t / "p.jsonl", [{"prompt": "1+" * 5000 + "1="}])),
        "which leaves 0 of the model's 256 positions for an answer",
    ),
    (
        "unknown_chars",
        lambda t: generic_args(t, prompts=write_jsonl(t / "p.jsonl", [{"prompt": "1+1=€"}])),
        "characters the model's tokenizer cannot encode: '€'",
    ),
    (
        "template_missing_column",
        lambda t: generic_args(t, prompt_template="'{{ question }}'"),
        "'question' is undefined",
    ),
    ("fewshot_missing", lambda t: generic_args(t, fewshot=t / "shots.jsonl"), "shots.jsonl does not exist"),
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
    out = capsys.readouterr().err  # refused, not taken for --train.learning_rate
    assert err.value.code == 2 and "unknown option '--train.learning_rat'. Did you mean '--train.learning_rate'?" in out


@pytest.mark.e2e
def test_every_data_file_problem_at_once_each_with_its_field(tmp_path, capsys):
    """Four missing files are four problems; a column two files lack is one problem naming both; a seed file with
    'answer' for 'completion' is told which field names the column."""
    missing = {name: str(tmp_path / f"{name}.jsonl") for name in ("p", "s", "e", "f")}
    assert (
        main(
            [
                "run",
                *generic_args(
                    tmp_path, prompts=missing["p"], seed=missing["s"], evals=missing["e"], fewshot=missing["f"]
                ),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    for field, name in (("prompts", "p"), ("seed_data", "s"), ("eval_id", "e"), ("fewshot", "f")):
        assert f"task.generic.{field}: {missing[name]} does not exist" in err, err
    seed = write_jsonl(tmp_path / "seed2.jsonl", [{"prompt": "1+1=", "answer": "2"}])
    no_answer = [{"prompt": "1+1=", "solution": "2"}]
    args = generic_args(
        tmp_path,
        seed=seed,
        evals=write_jsonl(tmp_path / "e2.jsonl", no_answer),
        eval_ood=write_jsonl(tmp_path / "o2.jsonl", no_answer),
    )
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert "task.generic.seed_completion_field: column 'completion' is missing from seed_data (" in err
    assert "columns ['answer', 'prompt']" in err
    answer = next(line for line in err.splitlines() if "task.generic.answer_field" in line)
    assert "eval_id (" in answer and "; eval_ood (" in answer and not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_cli_option_typo_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(TINY_RECIPE), "--train.max_step", "5", "--output-dri=x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage:" not in err
    assert "selfimprove run: unknown option '--train.max_step'. Did you mean '--train.max_steps'?" in err
    assert "unknown option '--output-dri'. Did you mean '--output-dir'?" in err
    assert "selfimprove run --help lists every option." in err
