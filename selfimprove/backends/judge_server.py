"""A judge served by vLLM as its own Slurm step (``slurm.judge_server``): started on the nodes after ``slurm.nodes``
when the run starts, so it loads while round 0 trains; health-checked with ``GET /v1/models`` before every judge stage
(restarted, up to ``slurm.retries`` times, if its step has ended); stopped when the run ends, failed or not. The
judge stage may run as a step on other nodes: it finds the server through RUN/slurm/judge_server.json, written once
the server answers, and removed when it stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from selfimprove.backends import openai_server
from selfimprove.core import slurm
from selfimprove.core.config import Recipe, SlurmConfig
from selfimprove.core.errors import UserError
from selfimprove.core.files import write_text
from selfimprove.core.rundir import RunContext

logger = logging.getLogger(__name__)

URL_FILE = "judge_server.json"  # under RUN/slurm/
LABEL = "judge-server"
POLL_S = 2.0
STOP_GRACE_S = 60.0


def served_name(recipe: Recipe) -> str:
    """The name the judge stage asks for: judge.llm.openai.model, else judge.llm.model."""
    return recipe.judge.llm.openai.model or recipe.judge.llm.model


def server_nodes(cfg: SlurmConfig) -> list[str]:
    """The allocation's nodes after the first ``cfg.nodes`` (those run the policy's steps)."""
    nodes = slurm.allocation_nodes()
    want = cfg.nodes + cfg.judge_server.nodes
    if len(nodes) < want:
        raise UserError(
            f"the allocation has {len(nodes)} node(s) but slurm.nodes + slurm.judge_server.nodes = {want}: submit "
            f"with --nodes {cfg.nodes} (selfimprove submit adds the judge's nodes) or lower slurm.judge_server.nodes."
        )
    return nodes[cfg.nodes : want]


def server_command(cfg, model: str, name: str, nodes: list[str], logs: Path, master_port: int) -> list[str]:
    """``srun`` of one task per judge node. One node: vLLM's OpenAI server. Several: one engine spanning them
    (vLLM's multiprocess multi-node mode): the first node serves, the others join it ``--headless``."""
    s = cfg.judge_server
    common = ["--served-model-name", name, "--host", "0.0.0.0", "--port", str(s.port), *map(str, s.args)]
    python = s.python or sys.executable
    if len(nodes) == 1:
        task = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *common]
    else:
        spread = ["--nnodes", str(len(nodes)), "--master-addr", slurm.node_address(nodes[0])]
        serve = [python, "-m", "vllm.entrypoints.cli.main", "serve", model, *common, *spread]
        rank = 'if [ "$SLURM_PROCID" -gt 0 ]; then set -- "$@" --headless; fi; exec "$@" --node-rank "$SLURM_PROCID"'
        task = ["bash", "-c", rank, "bash", *serve, "--master-port", str(master_port)]
    return [
        "srun",
        f"--job-name={LABEL}",
        f"--nodes={len(nodes)}",
        f"--ntasks={len(nodes)}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(nodes)}",
        "--kill-on-bad-exit=1",
        f"--output={logs}/{LABEL}.%t.log",
        *task,
    ]


def serves_judge(recipe: Recipe) -> bool:
    """Whether the run serves its LLM judge itself (slurm.judge_server, under the slurm launcher)."""
    return bool(recipe.slurm.judge_server.nodes) and recipe.train.launcher == "slurm"


def served_models(url: str) -> list[str] | None:
    """The model names ``GET url/models`` lists; None while nothing answers."""
    try:
        return openai_server.served_models(url)
    except openai_server.SERVER_ERRORS:
        return None


def served_url(run_dir: Path) -> str:
    """The judge server's base URL, for the judge stage (on any node)."""
    path = Path(run_dir) / "slurm" / URL_FILE
    if not path.exists():
        raise UserError(
            f"slurm.judge_server is on but {path} does not exist: the judge server is not up. Judge stages run inside "
            "'selfimprove run' under Slurm, which starts the server first."
        )
    return json.loads(path.read_text())["base_url"]


class JudgeServer:
    """The server step of one run: ``ready()`` before a judge stage, ``stop()`` at the end."""

    def __init__(self, ctx: RunContext):
        self.cfg, self.run_dir = ctx.recipe.slurm, ctx.run_dir
        self.model, self.name = ctx.recipe.judge.llm.model, served_name(ctx.recipe)
        self.logs = self.run_dir / "slurm" / "logs"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        nodes = server_nodes(self.cfg)
        self.nodes, self.url = nodes, f"http://{slurm.node_address(nodes[0])}:{self.cfg.judge_server.port}/v1"

    @property
    def log(self) -> Path:
        return self.logs / f"{LABEL}.0.log"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = server_command(self.cfg, self.model, self.name, self.nodes, self.logs, slurm.free_port())
        logger.info("judge server step on %s: %s", ",".join(self.nodes), " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        self.starts += 1

    def ready(self) -> None:
        """Block until the server lists the judge's model; restart its step if it has ended."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                if self.starts > self.cfg.retries:
                    raise slurm.StepFailed(self._ended(f"it ended {self.starts} time(s)"))
                logger.warning("judge server step ended (exit %s); restarting it", self.proc.returncode)
            self.start()
        deadline = time.monotonic() + self.cfg.judge_server.startup_timeout_s
        while (served := served_models(self.url)) is None:
            if self.proc.poll() is not None:
                return self.ready()  # ended while starting: restart it or stop with its log
            if time.monotonic() > deadline:
                self.stop()
                raise slurm.StepFailed(
                    self._ended(
                        f"it did not answer GET {self.url}/models in {self.cfg.judge_server.startup_timeout_s}s"
                    )
                )
            time.sleep(POLL_S)
        if self.name not in served:
            raise UserError(
                f"the judge server at {self.url} serves {served}, not {self.name!r}: set judge.llm.openai.model to the "
                "served name (or leave it empty to serve judge.llm.model under its own name)."
            )

        write_text(self.run_dir / "slurm" / URL_FILE, json.dumps({"base_url": self.url, "nodes": self.nodes}))

    def _ended(self, why: str) -> str:
        return f"the judge server step failed ({why}); its log: {self.log}. Fix the cause and resubmit the run."

    def stop(self) -> None:
        (self.run_dir / "slurm" / URL_FILE).unlink(missing_ok=True)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # srun passes SIGTERM on to the server, which shuts down cleanly
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _NoServer:
    def ready(self) -> None:
        pass


@contextlib.contextmanager
def judge_server(ctx: RunContext):
    """The run's judge server while the block runs (a no-op stand-in when slurm.judge_server is off)."""
    if not serves_judge(ctx.recipe):
        yield _NoServer()
        return
    server = JudgeServer(ctx)
    server.start()
    try:
        yield server
    finally:
        server.stop()
