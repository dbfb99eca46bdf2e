"""The judge served by vLLM as its own Slurm step (slurm.judge_server): the step's command on one node and across
nodes, the health check, restarts and stop against a real HTTP server process standing in for vLLM, and the recipe
checks. The real vLLM server on the local Slurm cluster runs in tests/test_slurm.py's slow tier."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import TINY_RECIPE

from selfimprove.backends import judge_server
from selfimprove.core import slurm
from selfimprove.core.config import JudgeServerConfig, SlurmConfig, load_recipe
from selfimprove.core.errors import UserError
from selfimprove.core.typed_yaml import ConfigError


@pytest.fixture
def nodes(monkeypatch):
    monkeypatch.setattr(slurm, "allocation_nodes", lambda: ["gpu-a", "gpu-b", "gpu-c", "gpu-d"])
    monkeypatch.setattr(slurm, "node_address", lambda node: "127.0.0.1")
    monkeypatch.setattr(judge_server, "POLL_S", 0.05)


@pytest.mark.unit
def test_one_judge_node_runs_vllms_openai_server_on_the_node_after_the_policys(nodes, tmp_path):
    cfg = SlurmConfig(
        nodes=2, judge_server=JudgeServerConfig(nodes=1, port=8011, python="/v/bin/python", args=["-tp", 8])
    )
    picked = judge_server.server_nodes(cfg)
    assert picked == ["gpu-c"]
    cmd = judge_server.server_command(cfg, "/models/judge", "judge-7b", picked, tmp_path, 29600)
    srun, task = cmd[: cmd.index("/v/bin/python")], cmd[cmd.index("/v/bin/python") :]
    assert srun[0] == "srun" and "--nodelist=gpu-c" in srun and "--ntasks=1" in srun
    assert f"--output={tmp_path}/judge-server.%t.log" in srun
    assert task[:5] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/judge"]
    flags = task[5:]
    assert flags[flags.index("--served-model-name") + 1] == "judge-7b" and flags[flags.index("--port") + 1] == "8011"
    assert flags[flags.index("--host") + 1] == "0.0.0.0" and flags[-2:] == ["-tp", "8"]


@pytest.mark.unit
def test_judge_nodes_beyond_the_allocation_are_refused_with_the_fix(nodes):
    cfg = SlurmConfig(nodes=3, judge_server=JudgeServerConfig(nodes=2))
    with pytest.raises(UserError, match=r"has 4 node\(s\) but slurm.nodes \+ slurm.judge_server.nodes = 5"):
        judge_server.server_nodes(cfg)


@pytest.mark.e2e
def test_an_engine_over_two_judge_nodes_serves_from_the_first_the_second_joins_headless(nodes, tmp_path):
    cfg = SlurmConfig(nodes=2, judge_server=JudgeServerConfig(nodes=2, python="/v/bin/python"))
    picked = judge_server.server_nodes(cfg)
    cmd = judge_server.server_command(cfg, "/models/judge", "j", picked, tmp_path, 29600)
    assert "--nodelist=gpu-c,gpu-d" in cmd and "--ntasks=2" in cmd
    task = cmd[cmd.index("bash") :]

    def as_run_on(rank: int) -> list[str]:  # the task's bash line, with echo standing in for the interpreter
        line = [*task[:4], "/bin/echo", *task[5:]]
        return subprocess.run(line, capture_output=True, text=True, env={"SLURM_PROCID": str(rank)}).stdout.split()

    first, second = as_run_on(0), as_run_on(1)
    assert first[:4] == ["-m", "vllm.entrypoints.cli.main", "serve", "/models/judge"]
    for words, rank in ((first, "0"), (second, "1")):
        assert words[words.index("--nnodes") + 1] == "2" and words[words.index("--node-rank") + 1] == rank
        assert words[words.index("--master-addr") + 1] == "127.0.0.1"  # gpu-c's NodeAddr
        assert words[words.index("--master-port") + 1] == "29600"
    assert "--headless" not in first and "--headless" in second


@pytest.mark.e2e
def test_the_batch_script_asks_for_the_policys_and_the_judges_nodes(tmp_path):
    cfg = SlurmConfig(nodes=2, judge_server=JudgeServerConfig(nodes=1))
    assert "#SBATCH --nodes=3" in slurm.batch_script(cfg, ["selfimprove", "run", "r.yaml"], tmp_path, "si")


# ---- the server's life: a real HTTP process standing in for vLLM ------------------------------------------------


def _ctx(tmp_path, **server):
    recipe = load_recipe(
        str(TINY_RECIPE),
        {
            "train.launcher": "slurm",
            "train.accelerate_config": "accelerate_configs/cpu_ddp_2proc.yaml",
            "filter.min_scores": {},
            "slurm.nodes": 1,
            "slurm.retries": 1,
            "judge.judges": ["llm"],
            "judge.llm.backend": "openai",
            "judge.llm.model": "judge-model",
            **{f"slurm.judge_server.{k}": v for k, v in server.items()},
        },
    )
    return SimpleNamespace(recipe=recipe, run_dir=tmp_path / "run")


def _stand_in(root, served: list[str]) -> list[str]:
    """A process answering GET /v1/models with ``served`` (python's own http.server over a folder)."""
    (root / "v1").mkdir(parents=True, exist_ok=True)
    (root / "v1" / "models").write_text(json.dumps({"data": [{"id": s} for s in served]}))
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root)]


def _serve_with(monkeypatch, commands: list[list[str]]):
    """Each start of the server runs the next of ``commands``; returns the list of started processes' commands."""
    started = []

    def command(cfg, model, name, nodes, logs, port):
        started.append(commands[len(started)])
        return started[-1]

    monkeypatch.setattr(judge_server, "server_command", command)
    return started


@pytest.mark.e2e  # starts a process
def test_ready_waits_for_the_server_then_tells_the_judge_stage_where_it_is_and_stop_ends_it(
    nodes, tmp_path, monkeypatch
):
    port = slurm.free_port()
    _serve_with(monkeypatch, [[*_stand_in(tmp_path / "www", ["judge-model"]), str(port)]])
    ctx = _ctx(tmp_path, nodes=1, port=port)
    with judge_server.judge_server(ctx) as server:
        assert server.nodes == ["gpu-b"] and server.url == f"http://127.0.0.1:{port}/v1"  # gpu-b's NodeAddr
        server.ready()  # polls until the process answers (it starts asynchronously)
        assert judge_server.served_url(ctx.run_dir) == server.url
        proc = server.proc
        assert proc.poll() is None
    assert proc.poll() is not None  # stopped with the run
    with pytest.raises(UserError, match="the judge server is not up"):
        judge_server.served_url(ctx.run_dir)


@pytest.mark.e2e  # starts a process
def test_a_server_step_that_ends_is_restarted_then_the_run_stops_naming_its_log(nodes, tmp_path, monkeypatch):
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    started = _serve_with(monkeypatch, [fail, fail, fail])
    ctx = _ctx(tmp_path, nodes=1)
    with judge_server.judge_server(ctx) as server:
        with pytest.raises(slurm.StepFailed, match=r"ended 2 time\(s\).*judge-server\.0\.log"):
            server.ready()
    assert len(started) == 2  # the first start and slurm.retries = 1 restart


@pytest.mark.e2e  # starts a process
def test_a_server_that_serves_another_model_is_named(nodes, tmp_path, monkeypatch):
    port = slurm.free_port()
    _serve_with(monkeypatch, [[*_stand_in(tmp_path / "www", ["other"]), str(port)]])
    ctx = _ctx(tmp_path, nodes=1, port=port)
    with judge_server.judge_server(ctx) as server:
        with pytest.raises(UserError, match=r"serves \['other'\], not 'judge-model'"):
            server.ready()


@pytest.mark.unit
def test_the_recipe_refuses_a_judge_server_it_cannot_use():
    with pytest.raises(ConfigError) as err:
        load_recipe(str(TINY_RECIPE), {"slurm.judge_server.nodes": 1, "judge.judges": ["format"]})
    text = str(err.value)
    assert "needs train.launcher 'slurm'" in text and "no LLM judge runs" in text
    assert "set judge.llm.backend to 'openai'" in text and "judge.llm.model is 'policy'" in text
