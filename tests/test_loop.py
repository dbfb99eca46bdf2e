"""End to end through the real CLI: round folders, metrics.jsonl, lineage, resume after SIGKILL, recipe guard."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_RECIPE, copy_run, run_cli

from selfimprove import registry

STAGES = [s for s in registry.STAGES if s != "propose"]  # the tiny recipe proposes nothing


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.e2e
def test_round_folders_and_metrics(tiny_run):
    run = tiny_run
    assert (run / "recipe.yaml").exists() and (run / "base_model" / "DONE").exists()
    assert all((run / "round_00" / s / "DONE").exists() for s in ("train", "evaluate", "monitor"))
    for k in (1, 2):
        for s in STAGES:
            assert (run / f"round_{k:02d}" / s / "DONE").exists(), (k, s)
            assert (run / f"round_{k:02d}" / s / "meta.json").exists()
    routes = json.loads((run / "round_01" / "monitor" / "meta.json").read_text())["routes"]
    generated = routes["diversity/generated/ngram_vendi"]
    assert generated["route"] in ("exact", "subsample+exact") and generated["texts"] <= generated["of"]
    assert routes["diversity/probe/distinct_2"]["route"] == "exact"  # every diversity number says how it was made
    metrics = _metrics(run)
    assert [m["round"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        for key in (
            "eval/accuracy/id",
            "eval/accuracy/ood",
            "eval/frontier",
            "eval/accuracy/d1",
            "eval/accuracy/d5",
            "time/train_s",
            "time/evaluate_s",
            "train/last_loss",
        ):
            assert key in m, key
    for key in (
        "quality/acceptance_rate",
        "quality/mean_score",
        "diversity/generated/distinct_4",
        "diversity/generated/distinct_answers_per_prompt",
        "time/generate_s",
        "time/judge_s",
        "diversity/generated/ngram_vendi",
        "diversity/generated/answer_entropy",
        "quality/pass@3",
        "quality/pass@1",
    ):
        assert key in metrics[1], key
    assert metrics[1]["task/max_difficulty"] == 4 and metrics[2]["task/max_difficulty"] == 5
    # every second of a round accounted for: its stages (the monitor too), the work between them, and the share of
    # it that is not model-bound compute (sampling, judging or scoring with a model, training steps)
    assert metrics[0]["time/setup_s"] > 0
    for m in metrics:
        k, stages = m["round"], (STAGES if m["round"] else registry.ROUND0_STAGES)
        metas = [json.loads((run / f"round_{k:02d}" / s / "meta.json").read_text()) for s in stages]
        assert [m[f"time/{s}_s"] for s in stages] == [meta["wall_s"] for meta in metas]
        compute = sum(meta.get("compute_s", 0) + meta.get("train_runtime_s", 0) for meta in metas)
        assert m["time/compute_s"] == pytest.approx(compute, abs=2e-3) and compute > 0
        walls = sum(x["wall_s"] for x in metas)
        assert m["time/between_stages_s"] == pytest.approx(m["time/round_s"] - walls, abs=2e-3)
        assert m["time/between_stages_s"] >= 0 and 0 < m["time/overhead_s"] < m["time/round_s"]
        assert m["time/overhead_s"] == pytest.approx(m["time/round_s"] - compute, abs=2e-3)
    gen = json.loads((run / "round_01" / "generate" / "meta.json").read_text())
    assert 0 < gen["compute_s"] < gen["wall_s"]  # model.generate itself, not the model's loading
    # generated data really reaches training: round 2 trains on seed + round 1 + round 2 rows, half from round 2
    assert metrics[1]["quality/selected"] > 0 and metrics[2]["quality/selected"] > 0
    rows = json.loads((run / "round_02" / "train" / "meta.json").read_text())["rows_by_round"]
    assert rows["2"] == 80 and rows["0"] > 0 and rows["1"] > 0 and sum(rows.values()) == 160


@pytest.mark.e2e
def test_compute_ledger_by_hand(tiny_run):
    """compute/... per round from the run's own data, compute/total/... their running sums."""
    from selfimprove.core.rows import load_rows

    rows, totals = _metrics(tiny_run), {}
    for m in rows:
        k = m["round"]
        gen = load_rows(tiny_run / f"round_{k:02d}" / "generate" / "data") if k else []
        train = json.loads((tiny_run / f"round_{k:02d}" / "train" / "meta.json").read_text())
        want = {
            "samples_generated": len(gen),
            "prompts_posed": len({r["prompt_id"] for r in gen}),
            "generated_tokens": sum(r["num_tokens"] for r in gen),
            "judge_calls": 0,  # format and majority: rules, no model
            "proposals_sampled": 0,
            "sampled_tokens": sum(r["num_tokens"] for r in gen),  # no proposing: the generated tokens alone
            "train_rows": train["steps"] * train["global_batch"],
            "optimizer_steps": train["steps"],
        }
        for q, v in want.items():
            assert m[f"compute/{q}"] == v, (k, q)
            totals[q] = totals.get(q, 0) + v
            assert m[f"compute/total/{q}"] == totals[q], (k, q)
        assert 0 < m["compute/trained_tokens"] < m["compute/trained_positions"]  # batches padded to their longest
        pad = 1 - m["compute/trained_tokens"] / m["compute/trained_positions"]
        assert m["compute/padding_share"] == pytest.approx(pad, abs=1e-4)
    assert rows[-1]["compute/total/trained_tokens"] == sum(m["compute/trained_tokens"] for m in rows)


@pytest.mark.e2e
def test_lineage_and_checkpoints(tiny_run):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gen = load_from_disk(str(tiny_run / "round_01" / "filter" / "data"))
    for col in (
        "round",
        "checkpoint",
        "prompt_id",
        "temperature",
        "top_p",
        "seed",
        "score",
        "score_majority",
        "kept",
        "filter_reason",
    ):
        assert col in gen.column_names, col
    assert set(gen["round"]) == {1} and set(gen["checkpoint"]) == {"round_00/train/model"}
    assert len(gen) == 40 * 3
    ckpt = tiny_run / "round_02" / "train" / "model"
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert model.config.vocab_size == len(tok)


@pytest.mark.e2e
def test_rerun_is_a_noop_and_monitor_recomputes(tiny_run):
    before = (tiny_run / "metrics.jsonl").read_text()
    stamp = (tiny_run / "round_02" / "train" / "DONE").stat().st_mtime
    out = run_cli("run", TINY_RECIPE, "--output_dir", tiny_run)
    assert out.returncode == 0
    assert (tiny_run / "round_02" / "train" / "DONE").stat().st_mtime == stamp
    assert (tiny_run / "metrics.jsonl").read_text() == before
    out = run_cli("monitor", tiny_run)
    assert out.returncode == 0
    assert _strip_times(_metrics(tiny_run)) == _strip_times([json.loads(x) for x in before.splitlines()])


@pytest.mark.e2e
def test_changed_recipe_is_refused(tiny_run):
    out = run_cli("run", TINY_RECIPE, "--output_dir", tiny_run, "--generate.temperature", "0.5")
    assert out.returncode == 2
    assert "generate.temperature: 0.8 -> 0.5" in out.stderr and "--allow-recipe-change" in out.stderr


def _artifacts(run: Path) -> dict:
    """Every dataset row and every model tensor of a run, for exact comparison."""
    from safetensors.torch import load_file

    from selfimprove.core.rows import load_rows

    out = {}
    for data in sorted(run.glob("round_*/*/data")):
        out[str(data.relative_to(run))] = load_rows(data)
    for weights in sorted(run.glob("round_*/train/model/model.safetensors")):
        out[str(weights.relative_to(run))] = {k: v.tolist() for k, v in load_file(weights).items()}
    return out


# Kill points: a stage folder (or metrics.jsonl) and a point in its writing, where the process SIGKILLs itself
# (SELFIMPROVE_FAULT, selfimprove.core.files.fault_point). The default tier runs three; the slow tier all of them.
KILLS = ["round_01/train:start", "round_01/judge:before_done", "round_02/select:before_rename"]
MORE_KILLS = [
    "base_model:start",
    "eval_sets:before_done",
    "seed_data:before_rename",
    "round_00/train:before_rename",
    "round_00/monitor:after_rename",
    "round_01/generate:start",
    "round_01/filter:before_rename",
    "round_01/evaluate:before_done",
    "round_01/monitor:before_rename",
    "metrics.jsonl:before_rename",
    "round_02/generate:after_rename",
    "round_02/train:before_done",
    "round_02/monitor:before_done",
]


def _killed_then_resumed(point: str, tmp_path: Path, tiny_run: Path) -> Path:
    """The tiny run killed at ``point``, then resumed. A point in round k >= 1 is reached from the session's run as it
    was when round k-1 finished (what the killed process would have made by then, without making it again)."""
    import os

    run = tmp_path / "killed"
    k = int(point[6:8]) if point.startswith("round_") else 0
    if k >= 1:
        copy_run(tiny_run, run, rounds=k - 1)
    cmd = [sys.executable, "-m", "selfimprove", "run", str(TINY_RECIPE), "--output_dir", str(run)]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "SELFIMPROVE_FAULT": point}
    )
    assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])  # it died exactly there
    out = run_cli("run", TINY_RECIPE, "--output_dir", run)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def _assert_identical(run: Path, tiny_run: Path) -> None:
    assert not list(run.glob("*.partial")) and not list(run.glob("round_*/*.partial"))
    assert _strip_times(_metrics(run)) == _strip_times(_metrics(tiny_run))
    a, b = _artifacts(run), _artifacts(tiny_run)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    assert run_cli("verify", run).returncode == 0


@pytest.mark.e2e
@pytest.mark.parametrize("point", KILLS)
def test_resume_after_kill_matches_uninterrupted(point, tiny_run, tmp_path):
    _assert_identical(_killed_then_resumed(point, tmp_path, tiny_run), tiny_run)


@pytest.mark.slow
@pytest.mark.parametrize("point", MORE_KILLS)
def test_resume_after_kill_at_every_point(point, tiny_run, tmp_path):
    _assert_identical(_killed_then_resumed(point, tmp_path, tiny_run), tiny_run)


@pytest.mark.e2e
def test_kill_inside_a_forced_redo_keeps_the_stage(tiny_run, tmp_path):
    """SIGKILL between setting the finished stage aside and moving the new one in: the next run restores it."""
    import os
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    proc = subprocess.run(
        [sys.executable, "-m", "selfimprove", "stage", "filter", str(run), "--round", "1", "--force"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SELFIMPROVE_FAULT": "round_01/filter:between_renames"},
    )
    assert proc.returncode == -signal.SIGKILL and not (run / "round_01" / "filter").exists()
    out = run_cli("run", TINY_RECIPE, "--output_dir", run)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_identical(run, tiny_run)


@pytest.mark.e2e
def test_train_stage_by_hand_with_accelerate_launch(tiny_run, tmp_path):
    """The process boundary: round 2's training launched alone reproduces the loop's checkpoint, and the loop
    resumes."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    for stage in ("train", "evaluate", "monitor"):
        shutil.rmtree(run / "round_02" / stage)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "single_process.yaml"),
        "-m",
        "selfimprove.stages.train",
        str(run),
        "--round",
        "2",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((run / "round_02" / "train" / "meta.json").read_text())
    assert meta["world_size"] == 1 and meta["steps"] == 10
    assert (
        _artifacts(run)["round_02/train/model/model.safetensors"]
        == _artifacts(tiny_run)["round_02/train/model/model.safetensors"]
    )
    out = run_cli("run", TINY_RECIPE, "--output_dir", run)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _strip_times(_metrics(run)) == _strip_times(_metrics(tiny_run))


@pytest.mark.e2e
def test_stage_command_redoes_one_stage_identically(tiny_run, tmp_path):
    import shutil

    from selfimprove.core.rows import load_rows

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    out = run_cli("stage", "evaluate", run, "--round", "1")
    assert out.returncode == 0 and "already done" in out.stderr
    out = run_cli("stage", "evaluate", run, "--round", "1", "--force")
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_rows(run / "round_01" / "evaluate" / "data") == load_rows(tiny_run / "round_01" / "evaluate" / "data")
    out = run_cli("stage", "judge", tmp_path / "nowhere", "--round", "1")
    assert out.returncode == 2 and "not a run directory" in out.stderr


@pytest.mark.e2e
def test_every_stage_launched_as_a_one_process_accelerate_job(tiny_run, tmp_path):
    """With 1-process accelerate configs for training and for the sharded stages, each of those stages is launched
    exactly once (the launched job knows from the explicit marker that it is the job) and the run equals the
    in-process one."""
    run = tmp_path / "launched"
    single = REPO / "accelerate_configs" / "single_process.yaml"
    out = run_cli(
        "run",
        TINY_RECIPE,
        "--output_dir",
        run,
        "--rounds",
        1,
        "--train.launcher",
        "accelerate",
        "--train.accelerate_config",
        single,
        "--generate.accelerate_config",
        single,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    launched = [line for line in out.stderr.splitlines() if "launching the " in line]
    assert len(launched) == 6  # round 0: train, evaluate; round 1: generate, judge, train, evaluate
    assert [m["round"] for m in _metrics(run)] == [0, 1]
    assert json.loads((run / "round_01" / "train" / "meta.json").read_text())["world_size"] == 1
    other_recipe = lambda rows: [{k: v for k, v in r.items() if k != "recipe"} for r in _strip_times(rows)]  # noqa: E731
    assert other_recipe(_metrics(run)) == other_recipe(_metrics(tiny_run)[:2])  # same numbers, another launcher


@pytest.mark.e2e
def test_a_launched_stage_whose_job_dies_is_tried_again_from_its_clean_state(tmp_path):
    """train.launch_retries: the round-0 training job is SIGKILLed once just before its DONE; the run tries it again,
    finishes, and the stage is the one an undisturbed launched run writes."""
    import os

    run = tmp_path / "run"
    args = ["run", TINY_RECIPE, "--output_dir", run, "--rounds", 0, "--train.launcher", "accelerate"]
    args += ["--train.accelerate_config", "accelerate_configs/single_process.yaml"]
    env = {**os.environ, "SELFIMPROVE_FAULT": "round_00/train:before_done", "SELFIMPROVE_FAULT_ONCE": tmp_path / "x"}
    out = subprocess.run(
        [sys.executable, "-m", "selfimprove", *map(str, args)], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "x").exists() and "the train job failed (exit status" in out.stderr
    assert "trying again" in out.stderr
    again = run_cli("run", TINY_RECIPE, "--output_dir", tmp_path / "plain", "--rounds", 0, *args[6:])
    assert again.returncode == 0, again.stderr[-3000:]
    weights = lambda r: (r / "round_00" / "train" / "model" / "model.safetensors").read_bytes()  # noqa: E731
    assert weights(run) == weights(tmp_path / "plain")
    fails = ["--train.launch_retries", "0"]  # no retry: the run stops
    env["SELFIMPROVE_FAULT_ONCE"] = str(tmp_path / "y")
    out = subprocess.run(
        [sys.executable, "-m", "selfimprove", *map(str, args), "--output_dir", tmp_path / "r0", *fails],
        cwd=REPO, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode != 0 and not (tmp_path / "r0" / "round_00" / "train" / "DONE").exists()


NOISE = (
    "Loading weights", "Writing model shards", "The used dataset had no length", "Setting accelerator", "{'loss'",
    "Warning", "WARNING", "it/s]", "batch/s]",
)  # fmt: skip


@pytest.mark.e2e
def test_console_frames_the_run(tiny_run, tmp_path):
    """Piped, the console is the run's frame and its stage lines, nothing from other libraries: a banner, one
    unwrapped line per round (round k/N, the headline diversity number, an ETA until the last), a closing line with
    where the results are and what to run next; the same lines in RUN/logs/console.log; a rerun has nothing to do."""
    console = (tiny_run.parent / "console.txt").read_text()
    assert not [n for n in NOISE if n in console], console
    lines = console.splitlines()
    assert f"selfimprove run: {tiny_run} (new); 3 of rounds 0-2 to do" in lines[0]
    rounds = [line for line in lines if " | acc id " in line]
    metrics = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    for k, (line, m) in enumerate(zip(rounds, metrics, strict=True)):
        entropy = m["diversity/probe/answer_entropy"]
        assert f"round {k}/2 | " in line and f"probe answer entropy {entropy:.3f}" in line
        assert ("ETA " in line) == (k < 2)
    assert "round 1/2: generate" in console and lines[-1].split(" INFO ", 1)[1].startswith("done; round 2")
    assert f"Results: {tiny_run / 'metrics.jsonl'}. Next: selfimprove report {tiny_run}" in lines[-1]
    logged = (tiny_run / "logs" / "console.log").read_text()
    assert all(line.split(" INFO ", 1)[1] in logged for line in lines if " INFO " in line)
    run = copy_run(tiny_run, tmp_path / "run")
    again = run_cli("run", TINY_RECIPE, "--output_dir", run, "--log-level", "WARNING")  # the frame still shows
    assert again.returncode == 0 and "nothing to do: every round was already done" in again.stderr
    assert " | acc id " not in again.stderr
