"""Multi-process for real: the tiny recipe trained by `accelerate launch` with 2 CPU processes over gloo under DDP,
DeepSpeed ZeRO-2 and ZeRO-3, generation sharded across ranks, and every shipped accelerate config validated."""

import json
import os
import sys

import pytest
import yaml
from conftest import REPO, TINY_RECIPE, run_cli

CONFIGS = sorted((REPO / "accelerate_configs").rglob("*.yaml"))


@pytest.mark.unit
def test_every_accelerate_config_is_valid_and_says_how_to_launch_it():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    assert len(CONFIGS) >= 10
    for path in CONFIGS:
        text = path.read_text()
        assert text.startswith("#") and "accelerate launch --config_file accelerate_configs/" in text, path
        cfg = ClusterConfig.from_yaml_file(str(path))
        assert cfg.distributed_type in set(DistributedType), path
        assert cfg.num_processes >= 1 and cfg.num_machines >= 1, path
        if cfg.distributed_type == DistributedType.DEEPSPEED:
            assert cfg.deepspeed_config["zero_stage"] in (2, 3), path
            if cfg.deepspeed_config["zero_stage"] == 3:  # checkpoints must be full folders the next round loads
                assert cfg.deepspeed_config["zero3_save_16bit_model"] is True, path
        if cfg.distributed_type == DistributedType.FSDP:
            assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT", path


@pytest.mark.unit
def test_global_batch_is_the_same_for_any_number_of_processes():
    from selfimprove.core.config import TrainConfig
    from selfimprove.stages.train import grad_accumulation

    cfg = TrainConfig(per_device_train_batch_size=8, global_batch_size=32)
    assert [grad_accumulation(cfg, w) * 8 * w for w in (1, 2, 4)] == [32, 32, 32]
    assert grad_accumulation(TrainConfig(per_device_train_batch_size=8, gradient_accumulation_steps=3), 2) == 3
    with pytest.raises(ValueError, match="not a multiple"):
        grad_accumulation(TrainConfig(per_device_train_batch_size=24, global_batch_size=32), 2)


@pytest.mark.unit
def test_reward_model_batch_is_pairs_per_step_for_any_number_of_processes():
    from selfimprove.stages.judge.train_reward import per_device_batch

    assert [per_device_batch(32, w) * w for w in (1, 2, 4)] == [32, 32, 32]
    with pytest.raises(ValueError, match="train_batch_size=6 is not a multiple of the 4 processes"):
        per_device_batch(6, 4)


GEN_BATCH = 16


def _run(tmp_path, name, config, *extra):
    out = tmp_path / name
    args = [
        "run",
        TINY_RECIPE,
        "--output_dir",
        out,
        "--rounds",
        1,
        "--train.per_device_train_batch_size",
        8,
        "--train.global_batch_size",
        16,
        "--train.logging_steps",
        1,
        "--generate.batch_size",
        GEN_BATCH,  # 40 prompts: 3 batches, so both ranks generate
        *extra,
    ]
    if config:
        args += ["--train.launcher", "accelerate", "--train.accelerate_config", f"accelerate_configs/{config}"]
    proc = run_cli(*args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _train_meta(run, k):
    return json.loads((run / f"round_{k:02d}" / "train" / "meta.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("single"), "run", "")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "config", ["cpu_ddp_2proc.yaml", "cpu_zero2_2proc.yaml", "cpu_zero3_2proc.yaml", "cpu_fsdp2_2proc.yaml"]
)
def test_two_process_training_matches_one_process(single, tmp_path, config):
    from transformers import AutoModelForCausalLM

    if "zero" in config:
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")

    run = _run(tmp_path, "run", config)
    for k in (0, 1):
        one, two = _train_meta(single, k), _train_meta(run, k)
        assert two["world_size"] == 2 and one["world_size"] == 1  # really two processes
        assert two["global_batch"] == one["global_batch"] == 16 and two["gradient_accumulation"] == 1
        assert one["gradient_accumulation"] == 2 and two["rows"] == one["rows"]
        # same rows per step, same schedule: the loss curves agree up to float reduction order
        assert two["losses"] == pytest.approx(one["losses"], rel=2e-3, abs=2e-3)
    assert _train_meta(run, 0)["last_loss"] < _train_meta(run, 0)["first_loss"]
    model = AutoModelForCausalLM.from_pretrained(run / "round_01" / "train" / "model")  # a full folder, loads as-is
    assert sum(p.numel() for p in model.parameters()) > 0
    assert (run / "metrics.jsonl").read_text().count("\n") == 2


RM_ARGS = (
    "--judge.judges",
    "[format, majority, reward]",
    "--judge.reward_model.train",
    "true",
    "--judge.reward_model.train_pairs",
    120,
    "--judge.reward_model.train_steps",
    8,
    "--judge.reward_model.train_batch_size",
    8,
)


@pytest.mark.e2e
def test_reward_model_trained_by_two_processes_matches_one(tmp_path):
    """The run's reward model goes through the policy's launcher: with a 2-process DDP config it is its own
    accelerate job of 2 ranks; redone in one process from the same run it sees the same pairs per step (the
    batch is pairs per step, split over the ranks), so the loss curves agree."""
    import subprocess
    import sys

    run = _run(tmp_path, "run", "cpu_ddp_2proc.yaml", *RM_ARGS)
    two = json.loads((run / "reward_model" / "meta.json").read_text())
    assert two["world_size"] == 2 and len(two["losses"]) == 8
    assert 0.0 <= two["heldout_pairwise_accuracy"] <= 1.0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[1]["judge/reward_model/heldout_pairwise_accuracy"] == two["heldout_pairwise_accuracy"]
    judge = json.loads((run / "round_01" / "judge" / "meta.json").read_text())
    assert "reward" in judge["judges"]
    # the same step by hand in this one process (no launcher): the finished model stays until the new one is
    env = {k: v for k, v in os.environ.items() if k != "SELFIMPROVE_LAUNCHED"}
    cmd = [sys.executable, "-m", "selfimprove.stages.judge.train_reward", str(run), "--force"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((run / "reward_model" / "meta.json").read_text())
    assert "world_size" not in one and one["pairs"] == two["pairs"]
    assert one["losses"] == pytest.approx(two["losses"], rel=2e-3, abs=2e-3)
    assert one["heldout_pairwise_accuracy"] == pytest.approx(two["heldout_pairwise_accuracy"], abs=0.1)


@pytest.mark.e2e
def test_generation_sharded_across_ranks_equals_one_process(single, tmp_path):
    import shutil

    from selfimprove.core.rows import load_rows

    run = tmp_path / "copy"
    shutil.copytree(single, run)
    before = load_rows(run / "round_01" / "generate" / "data")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["generate"]["temperature"] > 0  # sampled, not greedy: identical all the same
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate_configs/cpu_ddp_2proc.yaml",
        "-m",
        "selfimprove",
        "stage",
        "generate",
        str(run),
        "--round",
        "1",
        "--force",
    ]
    # killed just before DONE: each rank's share is on disk, as a node of a cluster leaves it for rank 0
    killed = {**os.environ, "SELFIMPROVE_FAULT": "round_01/generate:before_done"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=killed)
    assert proc.returncode != 0
    shards = run / "round_01" / "generate.shards"
    share = [json.loads((shards / f"rank-{r:05d}.json").read_text()) for r in (0, 1)]
    prompts = [p for _, p in dict.fromkeys((row["prompt_id"], row["prompt"]) for row in before)]  # in prompt order
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # the backend's length-sorted batches
    batches = [order[j : j + GEN_BATCH] for j in range(0, len(order), GEN_BATCH)]
    assert len(batches) == 3
    for r in (0, 1):  # rank r wrote the samples of every other batch, and only those
        assert sorted(map(int, share[r])) == sorted(i for b in batches[r::2] for i in b)
        assert all(len(v) == recipe["generate"]["num_samples"] for v in share[r].values())
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "round_01" / "generate" / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert load_rows(run / "round_01" / "generate" / "data") == before
    assert not shards.exists()  # rank 0 assembled the stage, then removed the shares


@pytest.mark.e2e
def test_lora_rounds_save_merged_full_checkpoints(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = _run(
        tmp_path,
        "lora",
        "",
        "--train.lora.enabled",
        "true",
        "--train.lora.r",
        4,
        "--train.lora.target_modules",
        "[q_proj, v_proj]",
    )
    folder = run / "round_01" / "train" / "model"
    assert not (run / "round_01" / "train" / "adapter").exists() and not (folder / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(folder)  # a plain folder: no peft needed to load it
    before = AutoModelForCausalLM.from_pretrained(run / "round_00" / "train" / "model")
    changed = {n for n, p in merged.state_dict().items() if not torch.equal(p, before.state_dict()[n])}
    assert changed and all(("q_proj" in n or "v_proj" in n) for n in changed)  # only the adapted weights moved


STAGE_SCRIPT = """
import os, sys
from pathlib import Path
import torch.distributed as dist
from selfimprove.core.atomic import atomic_stage, is_done

dist.init_process_group("gloo")
failing, out = int(sys.argv[1]), Path(sys.argv[2])
try:
    with atomic_stage(out / "stage") as (folder, meta):
        (folder / "part.txt").write_text("x")
        if dist.get_rank() == failing:
            raise ValueError("boom on purpose")
except Exception as e:
    print(f"rank {dist.get_rank()} stopped: {type(e).__name__}: {e}", flush=True)
    sys.exit(3)
print(f"rank {dist.get_rank()} finished", flush=True)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_rank_stops_every_rank_and_writes_nothing(tmp_path, failing):
    """Without the agreement step the healthy rank waits in a barrier for ever (here: until the timeout)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port: torchrun's static rendezvous cannot take port 0
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        str(script),
        str(failing),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"rank {failing} stopped: ValueError: boom on purpose" in out
    other = 1 - failing
    assert (
        f"rank {other} stopped: StageFailedElsewhere: stage stage: rank {failing} failed (ValueError: boom on purpose)"
        in out
    )
    assert not (tmp_path / "stage").exists()  # nothing was committed


@pytest.mark.e2e  # starts a process
def test_a_job_is_run_until_its_stage_is_done_and_done_wins_over_its_exit_status(tmp_path):
    """run_until_done (the local launcher's and Slurm's retries): try 1 fails, try 2 writes DONE and then exits 3 (a
    rank aborting after the stage is written), so the stage counts as finished; a job that never finishes returns
    its last exit status after exactly ``tries`` runs."""
    from selfimprove.core.dist import run_until_done

    done, runs = tmp_path / "DONE", tmp_path / "runs"
    script = (
        "import pathlib, sys; r = pathlib.Path(sys.argv[1]); n = len(r.read_text()) if r.exists() else 0; "
        "r.write_text('x' * (n + 1)); n and pathlib.Path(sys.argv[2]).touch(); sys.exit(1 if n == 0 else 3)"
    )
    cmd = lambda a: [sys.executable, "-c", script, str(runs), str(done)]  # noqa: E731
    assert run_until_done(cmd, {}, done.exists, 3, lambda a: f"job try {a}") is None
    assert runs.read_text() == "xx"  # stopped at the try that finished
    never = lambda a: [sys.executable, "-c", "import sys; sys.exit(7)"]  # noqa: E731
    calls = []
    assert run_until_done(lambda a: calls.append(a) or never(a), {}, lambda: False, 2, str) == 7 and calls == [1, 2]
