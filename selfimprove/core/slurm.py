"""Slurm: the allocation a run is inside, each model-bound stage as an ``srun`` step over its nodes (one ``accelerate
launch`` per node, ``--machine_rank`` from the task's rank), and the ``sbatch`` script ``selfimprove submit`` writes.

The orchestrator runs in the batch script on the allocation's first node and starts one step at a time, so training
and generation never hold the same GPUs. A step that fails is retried from the stage's clean state (every stage
removes what an interrupted attempt left, selfimprove.core.atomic); a stage is finished only by its own DONE, never
by a step's exit code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from selfimprove.core.config import SlurmConfig
from selfimprove.core.dist import run_until_done
from selfimprove.core.errors import UserError
from selfimprove.core.files import write_text

logger = logging.getLogger(__name__)

JOB_ENV = "SLURM_JOB_ID"
SCRIPT = "submit.sbatch"  # under RUN/slurm/, beside logs/


class StepFailed(UserError):
    """A stage's Slurm step failed on every try; the message names its logs."""


def in_allocation() -> bool:
    return bool(os.environ.get(JOB_ENV))


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True).stdout


def allocation_nodes() -> list[str]:
    """The allocation's node names, in Slurm's order (the batch script runs on the first)."""
    return _scontrol("show", "hostnames", os.environ["SLURM_JOB_NODELIST"]).split()


def node_address(node: str) -> str:
    """The address other nodes reach ``node`` at: its NodeAddr (often its hostname; not always resolvable as one)."""
    for field in _scontrol("show", "node", "-o", node).split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return node


def free_port() -> int:
    """A port free on this node, the allocation's first, where every step's rank 0 runs (the rendezvous host)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def processes_per_node(cfg: SlurmConfig, accelerate_config: str) -> int:
    """slurm.processes_per_node, else slurm.gpus_per_node, else the accelerate config's processes per machine."""
    if cfg.processes_per_node:
        return cfg.processes_per_node
    if cfg.gpus_per_node:
        return cfg.gpus_per_node
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(accelerate_config)
    return max(1, config.num_processes // max(1, config.num_machines))


def step_command(
    cfg: SlurmConfig, accelerate_config: str, args: list[str], label: str, logs: Path, port: int
) -> list[str]:
    """``srun`` over the step's nodes, one task per node, each an ``accelerate launch`` whose machine rank is the
    task's rank (task 0 runs on the first node, the rendezvous host)."""
    nodes = allocation_nodes()[: cfg.nodes]
    per_node = processes_per_node(cfg, accelerate_config)
    launch = [
        "--config_file",
        accelerate_config,
        "--num_machines",
        str(len(nodes)),
        "--num_processes",
        str(per_node * len(nodes)),
        "--main_process_ip",
        node_address(nodes[0]),
        "--main_process_port",
        str(port),
    ]
    cpus = os.environ.get("SLURM_CPUS_ON_NODE")
    return [
        "srun",
        f"--job-name={label}",
        f"--nodes={len(nodes)}",
        f"--ntasks={len(nodes)}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(nodes)}",
        *([f"--cpus-per-task={cpus}"] if cpus else []),
        "--kill-on-bad-exit=1",  # one rank lost: the step ends instead of the others waiting in a collective
        f"--output={logs}/{label}.%t.log",
        "bash",
        "-c",  # the rank is known only inside the task
        'exec "$0" -m accelerate.commands.launch --machine_rank "$SLURM_PROCID" "$@"',
        sys.executable,  # this interpreter's accelerate: the venv must be on a filesystem every node mounts
        *launch,
        *args,
    ]


def run_step(
    cfg: SlurmConfig, run_dir: Path, label: str, accelerate_config: str, args: list[str], env: dict, done
) -> None:
    """Run one stage as a step, retried up to cfg.retries times; ``done()`` says whether the stage finished."""
    logs = run_dir / "slurm" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tries = cfg.retries + 1
    rc = run_until_done(
        lambda a: step_command(cfg, accelerate_config, args, f"{label}.try{a}", logs, cfg.port or free_port()),
        env,
        done,
        tries,
        lambda a: f"slurm step {label}.try{a}",
    )
    if rc is not None:
        raise StepFailed(
            f"the Slurm step for {label} failed {tries} time(s) (last exit status {rc}); its logs: "
            f"{logs}/{label}.try{tries}.*.log (one per node). Fix the cause and resubmit {run_dir / 'slurm' / SCRIPT}: "
            "the run resumes where it stopped."
        )


@dataclass(frozen=True)
class Sbatch:
    """The #SBATCH options of a script selfimprove writes (a run's job, a study's array): named, typed, each written
    only when set."""

    job_name: str
    nodes: int = 0
    ntasks_per_node: int = 0
    exclusive: bool = False
    output: str = ""  # the job's log, e.g. DIR/job-%j.log
    open_mode: str = ""
    chdir: str = ""
    array: str = ""
    partition: str = ""
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    mem: str = ""
    time: str = ""
    extra: tuple[str, ...] = ()  # more sbatch options as given, e.g. '--account=proj'

    def lines(self) -> list[str]:
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value in ("", 0, False):
                continue
            flag = "--" + f.name.replace("_", "-")
            opts.append(flag if value is True else f"{flag}={value}")
        return [f"#SBATCH {o}" for o in [*opts, *self.extra]]


def sbatch_script(opts: Sbatch, comments: list[str], commands: list[str]) -> str:
    """The one writer of sbatch scripts: shebang, #SBATCH options, comments, then the commands."""
    return "\n".join(["#!/bin/bash", *opts.lines(), *(f"# {c}" for c in comments), *commands, ""])


def batch_script(cfg: SlurmConfig, argv: list[str], run_dir: Path, job_name: str) -> str:
    """The ``sbatch`` script of a run: its options from ``cfg``, its command ``argv`` (``selfimprove run ...``)."""
    opts = Sbatch(
        job_name=job_name,
        output=f"{run_dir / 'slurm' / 'logs'}/job-%j.log",
        nodes=cfg.nodes + cfg.judge_server.nodes,  # the policy's steps', then the judge server's
        ntasks_per_node=1,  # one accelerate launch per node; it starts the node's processes
        exclusive=True,
        open_mode="append",  # a resubmitted job's log goes on after the cancelled one's
        chdir=str(Path.cwd()),
        partition=cfg.partition,
        gpus_per_node=cfg.gpus_per_node,
        time=cfg.time,
        extra=tuple(cfg.sbatch_args),
    )
    comments = [
        "Written by `selfimprove submit`. Edit it and resubmit with `sbatch` this file: the run resumes from its",
        "directory (finished stages are kept, an interrupted one restarts clean).",
    ]
    return sbatch_script(opts, comments, ["set -euo pipefail", "export PYTHONUNBUFFERED=1", "exec " + shlex.join(argv)])


def submit(cfg: SlurmConfig, argv: list[str], run_dir: Path, job_name: str, wait: bool = False) -> int:
    """Write RUN/slurm/submit.sbatch and ``sbatch`` it; with ``wait``, block until the job ends and return its exit
    status."""
    script = run_dir / "slurm" / SCRIPT
    (run_dir / "slurm" / "logs").mkdir(parents=True, exist_ok=True)
    write_text(script, batch_script(cfg, argv, run_dir, job_name))
    cmd = ["sbatch", *(["--wait"] if wait else []), str(script)]
    try:
        proc = subprocess.run(cmd, capture_output=not wait, text=True)
    except FileNotFoundError:
        raise UserError(f"sbatch is not on PATH: run 'selfimprove submit' on a Slurm login node ({script} is written)")
    if not wait:
        if proc.returncode:
            raise UserError(f"sbatch refused {script}: {proc.stderr.strip()}")
        print(proc.stdout.strip(), f"({script}; logs in {run_dir / 'slurm' / 'logs'})")
    return proc.returncode
