"""The ``slurm`` section: the allocation 'selfimprove submit' asks for, and an LLM judge server as a step of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfimprove.core.typed_yaml import option


@dataclass
class JudgeServerConfig:
    """An LLM judge served by vLLM as its own Slurm step on nodes of the allocation set aside for it: started with the
    run, health-checked (GET /v1/models) before every judge stage, stopped when the run ends. It serves
    judge.llm.model under judge.llm.openai.model (or that name), and judge.llm.openai.base_url points at it."""

    nodes: int = option(0, "Nodes set aside for the judge server after slurm.nodes; 0 = no server step.", ge=0)
    port: int = option(8000, "Port the server listens on, on the first judge node.", ge=1)
    python: str = option("", "Interpreter of the vLLM environment (on every node); empty = this one.")
    args: list = option(
        [], "More vLLM server options, e.g. ['--tensor-parallel-size', '8', '--max-model-len', '8192']."
    )
    startup_timeout_s: float = option(1800.0, "Seconds the server may take to answer GET /v1/models.", gt=0)


@dataclass
class SlurmConfig:
    """The allocation 'selfimprove submit' asks for and how train.launcher 'slurm' uses it. Where the run goes, not
    what it does: none of it is part of the recipe's fingerprint, so a run may be resubmitted with other values."""

    nodes: int = option(1, "Nodes of the allocation; every model-bound step runs on all of them.", ge=1)
    processes_per_node: int = option(
        0, "Processes per node of each step; 0 = gpus_per_node, else the accelerate config's per machine.", ge=0
    )
    gpus_per_node: int = option(0, "sbatch --gpus-per-node (0 = not asked for).", ge=0)
    partition: str = option("", "sbatch --partition ('' = the cluster's default).")
    time: str = option("", "sbatch --time, e.g. 24:00:00 ('' = the partition's default).")
    sbatch_args: list = option([], "More sbatch options, one per item, e.g. ['--account=proj', '--qos=high'].")
    retries: int = option(
        1, "Tries after a stage's step fails (a node lost, a non-zero exit) before the run stops.", ge=0
    )
    port: int = option(0, "Rendezvous port of every step; 0 = a free port on the first node, chosen per step.", ge=0)
    judge_server: JudgeServerConfig = field(
        default_factory=JudgeServerConfig,
        metadata={"help": "A vLLM judge server as its own step (judge backend 'openai')."},
    )
