"""A real Slurm cluster on this machine for the slow tier: munged, slurmctld and three slurmd daemons (three
logical nodes of one CPU each; Debian's slurm-wlm is built with multiple-slurmd support), all with their own config,
sockets, ports and state under one temporary folder, so nothing of the machine's own setup is read or changed.
Stopped on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel")
NODES = ("n1", "n2", "n3")  # two for the policy's steps, one for a judge server


def missing() -> str:
    """Why a cluster cannot start here ('' when it can)."""
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    absent = [d for d in DAEMONS if shutil.which(d) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    return ""


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _conf(root: Path) -> str:
    ctld, slurmd, *node_ports = _ports(2 + len(NODES))
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 Port={p} CPUs=1 RealMemory=8000"
        for n, p in zip(NODES, node_ports)
    )
    return f"""ClusterName=selfimprove-test
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/sock
CredType=cred/munge
SlurmctldPort={ctld}
SlurmdPort={slurmd}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _wait_idle(env: dict, timeout: float = 60) -> None:
    """Until every node has registered (daemons start asynchronously; this polls their state, it does not guess)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True).stdout
        states = dict(line.split() for line in out.splitlines() if line.strip())
        if all(states.get(n) == "idle" for n in NODES):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the local Slurm nodes did not come up: {out!r}")


@contextlib.contextmanager
def local_cluster():
    """Yield the environment (SLURM_CONF set) in which sbatch/srun/scancel talk to a fresh 3-node cluster."""
    # munged checks that every folder above its socket is traversable by all, which pytest's tmp_path is not
    root = Path(tempfile.mkdtemp(prefix="selfimprove-slurm-", dir="/tmp"))
    root.chmod(0o755)
    munge = root / "munge"
    munge.mkdir()
    for sub in ("state", "log", *(f"spool/{n}" for n in NODES)):
        (root / sub).mkdir(parents=True)
    key = munge / "key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(munge, "munge", "munge")
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    (root / "slurm.conf").write_text(_conf(root))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    pid_files = [munge / "pid", root / "slurmctld.pid", *(root / f"slurmd.{n}.pid" for n in NODES)]
    try:
        subprocess.run(
            [
                "runuser", "-u", "munge", "--", "munged",
                f"--socket={munge}/sock", f"--key-file={key}", f"--pid-file={munge}/pid",
                f"--log-file={munge}/log", f"--seed-file={munge}/seed",
            ],
            check=True,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-c"], env=env, check=True)
        for n in NODES:
            subprocess.run(["slurmd", "-N", n], env=env, check=True)
        _wait_idle(env)
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        for pid_file in reversed(pid_files):  # slurmd, then slurmctld, then munged
            with contextlib.suppress(OSError, ValueError):
                _stop(int(pid_file.read_text().strip()))
        shutil.rmtree(root, ignore_errors=True)


def _stop(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then wait until the daemon is gone (SIGKILL if it is not by the timeout)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
