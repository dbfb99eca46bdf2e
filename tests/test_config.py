import logging
import os
import typing

import pytest
import yaml
from conftest import RECIPE_FILES, REPO, run_cli

from selfimprove.core.config import Recipe, load_recipe
from selfimprove.core.typed_yaml import ConfigError


@pytest.mark.unit
def test_every_shipped_recipe_parses():
    recipes = RECIPE_FILES + [REPO / "tests" / "tiny_addition.yaml"]
    assert len(recipes) >= 3
    for path in recipes:
        assert isinstance(load_recipe(str(path)), Recipe), path


@pytest.mark.unit
def test_all_problems_reported_at_once(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "rounds": "three",
                "generate": {"num_samples": 1, "temperature": 0.0, "top_p": 2.0},
                "train": {"learning_rat": 1e-3},
                "judge": {"judges": ["majority", "oracle"]},
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        load_recipe(str(bad))
    msg = str(err.value)
    assert "rounds: expected int, got 'three'" in msg
    assert "generate.top_p=2.0 must be in (0, 1]" in msg
    assert "train.learning_rat: unknown key. Did you mean 'learning_rate'?" in msg
    assert "judge.judges: 'oracle' is not a judge" in msg
    assert "a vote needs >= 2 samples" in msg
    assert "filter.min_scores.format: no judge 'format' runs" in msg  # the default threshold names a dropped judge
    assert len(err.value.problems) == 6


@pytest.mark.unit
def test_judge_filter_select_combinations():
    with pytest.raises(ConfigError) as err:
        load_recipe(
            None,
            {
                "judge.judges": ["reward", "llm"],
                "judge.llm.model": "",
                "filter.min_scores": {},
                "select.method": "qdit",
                "select.diversity_weight": 1.5,
                "select.target_mix": {3: 1.0},
            },
        )
    msg = str(err.value)
    assert "reward_model.path is empty" in msg and "llm.model is empty" in msg
    assert (
        "method='qdit' chooses under a budget, but budget=0" in msg and "diversity_weight=1.5 must be in [0, 1]" in msg
    )
    assert "target_mix names cluster labels" in msg


@pytest.mark.unit
def test_impossible_combinations():
    with pytest.raises(ConfigError, match="temperature=0 is greedy"):
        load_recipe(None, {"generate.temperature": 0, "generate.num_samples": 4})
    with pytest.raises(ConfigError, match="accelerate_config is empty"):
        load_recipe(None, {"train.launcher": "accelerate"})
    with pytest.raises(ConfigError, match="not divisible by num_heads=3"):
        load_recipe(None, {"model.bootstrap.num_heads": 3})
    with pytest.raises(ConfigError, match="filter.min_scores.verifier: no judge 'verifier' runs"):
        load_recipe(None, {"filter.min_scores": {"verifier": 1.0}})
    pad = {"task.addition.seed_max_digits": 5, "task.addition.eval_max_digits": 8, "task.addition.pad_width": 8}
    with pytest.raises(ConfigError, match="round 4 generates 9-digit operands, wider than the padding"):
        load_recipe(None, {**pad, "rounds": 4})
    with pytest.raises(ConfigError, match="pad_width=7 is shorter than the longest operand evaluated"):
        load_recipe(None, {**pad, "task.addition.pad_width": 7, "rounds": 2})
    load_recipe(None, {**pad, "rounds": 3})
    with pytest.raises(ConfigError, match="'consistency', which compares equivalent prompts, but this task poses none"):
        load_recipe(None, {"judge.judges": ["consistency"], "filter.min_scores": {}})


@pytest.mark.unit
def test_every_registry_entry_resolves_and_is_what_its_readers_list():
    from selfimprove import registry
    from selfimprove.core.config import JUDGES, TaskConfig

    for table in (registry.STAGES, registry.JUDGES, registry.TASKS):
        for name, entry in table.items():
            assert callable(registry.load(entry)), (name, entry)
    assert JUDGES == tuple(registry.JUDGES)  # recipe validation reads the registry, without importing a judge
    assert set(typing.get_args(typing.get_type_hints(TaskConfig)["name"])) == set(registry.TASKS)
    assert set(registry.ROUND0_STAGES) | set(registry.SHARDED_STAGES) <= set(registry.STAGES)


@pytest.mark.unit
def test_the_input_table_has_one_entry_per_registered_stage(tiny_recipe):
    from selfimprove import registry
    from selfimprove.core.rundir import RunContext

    ctx = RunContext(tiny_recipe, tiny_recipe.output_dir)
    assert list(ctx.input_table(1)) == list(registry.STAGES)


@pytest.mark.unit
def test_every_task_is_a_task_and_declares_what_it_can_do():
    from selfimprove import registry
    from selfimprove.tasks import Proposing, Task

    for name, entry in registry.TASKS.items():
        cls = registry.load(entry)
        assert issubclass(cls, Task) and not cls.__abstractmethods__ and cls.name == name, name
        assert (cls.corrupt is not Task.corrupt) == cls.corrupts, name  # corrupts: it has its own corrupt()
        members = {m for m in dir(Proposing) if not m.startswith("_")}
        assert cls.proposes == all(hasattr(cls, m) for m in members), name


@pytest.mark.unit
def test_overrides_are_typed():
    r = load_recipe(
        None, {"generate.num_samples": 8, "filter.enabled": False, "monitor.distinct_n": [2], "train.learning_rate": 1}
    )
    assert r.generate.num_samples == 8 and r.filter.enabled is False and r.monitor.distinct_n == [2]
    assert r.train.learning_rate == 1.0 and isinstance(r.train.learning_rate, float)
    with pytest.raises(ConfigError, match="filter.enabled: expected true or false, got 'no way'"):
        load_recipe(None, {"filter.enabled": "no way"})


@pytest.mark.e2e
def test_cli_help_lists_every_field():
    top = run_cli("--help")
    assert top.returncode == 0 and "run" in top.stdout and "stage" in top.stdout and "monitor" in top.stdout
    run = run_cli("run", "--help")
    assert run.returncode == 0
    from selfimprove.core.typed_yaml import iter_fields

    for name, f, _ in iter_fields(Recipe):
        assert f"--{name}" in run.stdout, name
        assert f.metadata.get("help"), f"{name} has no help text"


@pytest.mark.e2e
def test_cli_rejects_bad_override_before_work(tmp_path):
    out = run_cli(
        "run", REPO / "tests" / "tiny_addition.yaml", "--output_dir", tmp_path / "r", "--generate.num_samples", "0"
    )
    assert out.returncode == 2
    assert "generate.num_samples=0" in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.e2e
def test_both_option_spellings():
    """--a_b and --a-b both work, for recipe overrides and the commands' own options (as HfArgumentParser)."""
    from selfimprove.cli import make_parser
    from selfimprove.core.typed_yaml import collect_overrides

    args = make_parser().parse_args(
        [
            "run",
            "r.yaml",
            "--output-dir",
            "x",
            "--train.max-steps",
            "3",
            "--allow_recipe_change",
            "--log_level",
            "DEBUG",
        ]
    )
    assert collect_overrides(args) == {"output_dir": "x", "train.max_steps": 3}
    assert args.allow_recipe_change and args.log_level == "DEBUG"
    args = make_parser().parse_args(["compare", "a", "b", "--trust_recipe", "--permutations", "5"])
    assert args.trust_recipe and args.permutations == 5


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rank", "asked", "level"),
    [
        ("0", "INFO", logging.INFO),
        ("1", "INFO", logging.WARNING),
        ("1", "ERROR", logging.ERROR),
        (None, "DEBUG", logging.DEBUG),
    ],
)
def test_only_rank_zero_logs_info(monkeypatch, rank, asked, level):
    from selfimprove.core.logs import LEVEL_ENV, QUIET_ENV, setup_logging

    for key in (LEVEL_ENV, *QUIET_ENV):  # restored afterwards: setup_logging sets them for launched jobs
        monkeypatch.setenv(key, os.environ.get(key, ""))
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    setup_logging(asked)
    assert logging.getLogger().level == level and os.environ[LEVEL_ENV] == asked


@pytest.mark.unit
def test_overlay_recipe_is_its_base_with_its_keys_applied(tmp_path):
    (tmp_path / "main.yaml").write_text(
        "output_dir: runs/a\ntask: {name: addition, addition: {seed_size: 500, pad_width: 12}}\n"
        "select: {dedup: exact, per_prompt_cap: 1}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "variant.yaml").write_text(
        "base: ../main.yaml\noutput_dir: runs/b\ntask: {addition: {seed_size: 700}}\nselect.budget: 9\n"
    )
    main, variant = load_recipe(str(tmp_path / "main.yaml")), load_recipe(str(tmp_path / "sub" / "variant.yaml"))
    assert variant.output_dir == "runs/b" and variant.task.addition.seed_size == 700
    assert variant.task.addition.pad_width == 12 and variant.select.dedup == "exact"  # the rest of the base's mapping
    assert variant.select.budget == 9 and main.select.budget == 0
    # an overlay of an overlay, a missing base and a cycle
    (tmp_path / "third.yaml").write_text("base: sub/variant.yaml\nrounds: 3\n")
    third = load_recipe(str(tmp_path / "third.yaml"))
    assert third.rounds == 3 and third.select.budget == 9
    (tmp_path / "bad.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base: 'nowhere.yaml' is not a file"):
        load_recipe(str(tmp_path / "bad.yaml"))
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_recipe(str(tmp_path / "loop.yaml"))


@pytest.mark.unit
def test_shipped_variants_differ_from_their_base_only_where_they_say():
    def flat(d, p=""):
        return {
            k2: v2
            for k, v in d.items()
            for k2, v2 in (flat(v, f"{p}{k}.") if isinstance(v, dict) else {f"{p}{k}": v}).items()
        }

    from selfimprove.core.config import recipe_to_dict

    for variant, base, differ in (
        ("arithmetic/addition_cpu_control", "arithmetic/addition_cpu", {"output_dir", "train.use_generated"}),
        (
            "countdown/diverse_cpu",
            "countdown/quality_only_cpu",
            {"output_dir", "select.dedup", "select.per_prompt_cap", "select.method", "select.budget"},
        ),
    ):
        a = flat(recipe_to_dict(load_recipe(str(REPO / "recipes" / f"{base}.yaml"))))
        b = flat(recipe_to_dict(load_recipe(str(REPO / "recipes" / f"{variant}.yaml"))))
        assert {k for k in a if a[k] != b[k]} == differ


@pytest.mark.unit
def test_configuration_reference_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (REPO / "docs" / "config_reference.md").read_text()
    assert page == module.render(), "docs/config_reference.md is stale: run python scripts/config_reference.py"
    for name in ("select.labels", "train.max_steps", "monitor.alarms[].metric", "task.rewrite.train_rules"):
        assert f"| `{name}` |" in page


@pytest.mark.unit
def test_a_mapping_merges_into_a_section_but_replaces_a_mapping_field():
    base = {"select": {"dedup": "exact", "budget": 5}, "filter": {"min_scores": {"verifier": 1.0}}}
    from selfimprove.core.typed_yaml import apply_overrides

    out = apply_overrides(base, {"select": {"budget": 9}, "filter.min_scores": {"format": 1.0}}, Recipe)
    assert out["select"] == {"dedup": "exact", "budget": 9}
    assert out["filter"]["min_scores"] == {"format": 1.0}  # a value, not a section: replaced
    assert apply_overrides({"filter": {"min_scores": {"a": 1}}}, {"filter": {"min_scores": {}}}, Recipe) == {
        "filter": {"min_scores": {}}
    }


@pytest.mark.unit
def test_numbers_written_as_yaml_1_1_strings_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 and 2e2 as strings; a TRL user means numbers, in a recipe, an override or
    trainer_args."""
    from selfimprove.core.trainer_args import build_args

    path = tmp_path / "r.yaml"
    path.write_text("train: {learning_rate: 1e-3, bootstrap_steps: 2e2, trainer_args: {adam_beta2: 9.99e-1}}\n")
    r = load_recipe(str(path), {"train.max_steps": 30.0, "train.round_learning_rate": "5e-4"})
    assert (r.train.learning_rate, r.train.bootstrap_steps, r.train.max_steps) == (0.001, 200, 30)
    assert type(r.train.bootstrap_steps) is int and r.train.round_learning_rate == 0.0005
    assert build_args(r, 1, str(tmp_path), 3, 1, "sft", 1000)["adam_beta2"] == 0.999
    with pytest.raises(ConfigError, match="train.max_steps: expected int, got 30.5"):
        load_recipe(None, {"train.max_steps": 30.5})
    with pytest.raises(ConfigError, match="train.trainer_args.adam_beta2: expected a number, got 'fast'"):
        load_recipe(None, {"train.trainer_args": {"adam_beta2": "fast"}})
