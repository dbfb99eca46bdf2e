"""A GRPO round's wall time against a bare ``GRPOTrainer.train()``, measured side by side in one run.

The round (selfimprove.stages.train.run_train on round 1 of a run whose round 0 is trained here first) loads the
policy, builds the prompt dataset, trains with the run's judges as reward functions (gathered and judged whole),
keeps every rollout, saves the model, the rollouts and the stage's record. The bare side is what a TRL user writes:
the same checkpoint, prompts and GRPOConfig, one reward function calling the task's checker, ``train()`` timed
alone. One warm-up of each (imports, first calls), then interleaved repeats, best of each. Target: the round within
1.1x of the bare trainer.

    python scripts/bench_grpo.py [--steps 100] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "grpo" / "rewrite_grpo_cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="GRPO optimizer steps a round.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the study runner's default).")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    run = Path(tempfile.mkdtemp(prefix="bench-grpo-")) / "run"
    settings = ["--train.bootstrap_steps", "300", "--train.max_steps", str(args.steps)]
    subprocess.run(
        [sys.executable, "-m", "selfimprove", "run", str(RECIPE), "--output_dir", str(run), "--rounds", "0", *settings],
        check=True,
    )
    round_time(run, 2), bare_time(run, 2)  # warm-up: imports and first-call costs land outside the timings
    ours, bare = [], []
    for _ in range(args.repeats):
        ours.append(round_time(run, args.steps))
        bare.append(bare_time(run, args.steps))
    print(f"GRPO, {args.steps} steps of 64 completions (16 prompts x 4), {args.threads} torch thread(s):")
    print(f"  selfimprove round (load, train, keep rollouts, save): best {min(ours):.2f}s  all {fmt(ours)}")
    print(f"  bare GRPOTrainer.train():                             best {min(bare):.2f}s  all {fmt(bare)}")
    print(f"  ratio round / bare: {min(ours) / min(bare):.3f}x (target <= 1.1x)")


def fmt(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def _context(run: Path, steps: int):
    from selfimprove.core.runs import open_run

    ctx = open_run(str(run), trust=True)
    ctx.recipe.rounds, ctx.recipe.train.max_steps = 1, steps
    return ctx


def round_time(run: Path, steps: int) -> float:
    from selfimprove.stages.train import run_train

    ctx = _context(run, steps)
    shutil.rmtree(ctx.stage(1, "train"), ignore_errors=True)
    t0 = time.perf_counter()
    run_train(ctx, 1)
    return time.perf_counter() - t0


def bare_time(run: Path, steps: int) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from selfimprove.stages.train.grpo import grpo_args

    ctx = _context(run, steps)
    init = ctx.checkpoint(0)
    model, tok = AutoModelForCausalLM.from_pretrained(init), AutoTokenizer.from_pretrained(init)
    prompts = ctx.round_prompts(1)
    task = ctx.task

    def verifier(completions, reference, **kwargs):
        return [float(task.is_correct(c, r)) for c, r in zip(completions, reference)]

    out = tempfile.mkdtemp(prefix="bench-grpo-bare-")
    config = GRPOConfig(**grpo_args(ctx, 1, out, steps, 1, model.num_parameters(), prompts), reward_weights=[1.0])
    data = Dataset.from_list([{"prompt": p["prompt"], "reference": p["reference"]} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=[verifier], args=config, train_dataset=data, processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


if __name__ == "__main__":
    main()
