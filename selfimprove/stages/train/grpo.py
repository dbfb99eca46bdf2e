"""Online rounds (train.method 'grpo'): TRL's GRPOTrainer on the round's prompts, rewarded by the run's judges.

The trainer samples generate.num_samples completions of each prompt at every generation step (HF generate, or vLLM
in TRL's colocate or server mode with generate.backend 'vllm'), from the policy as it is at that step. Every
completion it sampled is kept as the round's data (``rollouts``): the prompt row and its lineage, the completion,
each judge's score, the combined reward, the group-relative advantage, the optimizer step whose policy sampled it,
its token count. TRL's per-step metrics (reward and its spread, the share of groups with one reward, entropy, KL,
clip ratios, completion lengths) are summarised per round (``summary``).
"""

from __future__ import annotations

import numpy as np

from selfimprove.core import seeding
from selfimprove.core.files import fault_point
from selfimprove.core.rundir import RunContext
from selfimprove.core.trainer_args import build_args
from selfimprove.metrics.alarms import steered_temperature
from selfimprove.stages.judge import run_env
from selfimprove.stages.judge.rewards import PROMPT_TEXT, JudgeRewards

# TRL's logged per-step metrics a round's summary keeps (train/<name> in metrics.jsonl: the round's mean; .../last)
STEP_METRICS = (
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "entropy",
    "kl",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_max",
    "completions/mean_length",
    "completions/clipped_ratio",
)


def grpo_args(ctx: RunContext, k: int, out: str, steps: int, accumulation: int, parameters: int, prompts) -> dict:
    """Round k's GRPOConfig arguments: the recipe's train section plus its sampling settings and judge weights."""
    r, g = ctx.recipe, ctx.recipe.generate
    args = build_args(r, k, out, steps, accumulation, "grpo", parameters)
    return {
        **args,
        "num_generations": g.num_samples,
        "temperature": steered_temperature(ctx, k),
        "top_p": g.top_p,
        "top_k": g.top_k,
        "max_completion_length": g.max_new_tokens or ctx.task.max_new_tokens(prompts),
        "use_vllm": g.backend == "vllm",
        "vllm_gpu_memory_utilization": g.vllm.gpu_memory_utilization,
        "vllm_tensor_parallel_size": g.vllm.tensor_parallel_size,
        "vllm_max_model_length": g.vllm.max_model_len or None,
    }


def prompt_dataset(ctx: RunContext, prompts: list[dict], tok):
    """The round's prompts as TRL reads them: ``prompt`` rendered as generation renders it (chat messages when the
    run uses the chat template, else the plain text), the row's own prompt and every other field beside it."""
    from datasets import Dataset

    fmt = ctx.prompt_format
    render = fmt.messages if fmt.uses_template(tok) else fmt.plain
    return Dataset.from_list([{**p, PROMPT_TEXT: p["prompt"], "prompt": render(p["prompt"])} for p in prompts])


def grpo_trainer(ctx: RunContext, k: int, model, tok, out, steps: int, accumulation: int, peft_config):
    """Round k's trainer; after ``train()``, ``rollouts`` and ``summary()`` hold what it sampled and logged."""
    from trl import GRPOConfig, GRPOTrainer

    prompts = ctx.round_prompts(k)
    seed = seeding.int_seed(ctx.recipe.seed, "train", k)
    env = run_env(ctx, ctx.checkpoint(k - 1), seeding.int_seed(ctx.recipe.seed, "judge", k))
    rewards = JudgeRewards(env, tok.eos_token_id)
    args = GRPOConfig(
        **grpo_args(ctx, k, str(out / "trainer"), steps, accumulation, model.num_parameters(), prompts),
        reward_weights=rewards.weights,
    )
    lineage = {
        "round": k,
        "checkpoint": ctx.relative(ctx.checkpoint(k - 1)),
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_completion_length,
        "seed": seed,
    }

    class RoundGRPO(GRPOTrainer):
        """GRPOTrainer that keeps every rollout with its rewards and advantage, and counts the tokens it trains on."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rollouts: list[dict] = []
            self.counts = np.zeros(2, dtype=np.int64)  # real tokens and all positions of this process's batches

        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            acc = self.accelerator
            advantages = acc.gather(batch["advantages"]).tolist()
            masks = (batch["prompt_mask"], batch["completion_mask"])
            real, positions = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
            self.counts += np.array([real, positions]) * self.args.num_iterations  # each pass trains on them
            if acc.is_main_process:
                g = self.num_generations
                self.rollouts += [
                    {
                        **row,
                        "sample_idx": i % g,
                        "advantage": a,
                        "step": self.state.global_step,
                        **lineage,
                    }
                    for i, (row, a) in enumerate(zip(rewards.batch, advantages))
                ]
            fault_point(out, f"step_{self.state.global_step}")  # tests kill a round here
            return batch

    return RoundGRPO(
        model=model,
        reward_funcs=rewards.functions,
        args=args,
        train_dataset=prompt_dataset(ctx, prompts, tok),
        processing_class=tok,
        peft_config=peft_config,
    )


def trained_tokens(trainer) -> tuple[int, int]:
    """(real tokens, all positions) of the prompt + completion batches every process trained on."""
    import torch

    both = trainer.accelerator.reduce(torch.tensor(trainer.counts, device=trainer.accelerator.device), "sum")
    return int(both[0]), int(both[1])


def rollout_counts(rollouts: list[dict]) -> dict:
    """What the round sampled, for the compute ledger (as a generate stage's meta records it)."""
    return {
        "generated": {
            "prompts": len({(r["step"], r["prompt_id"]) for r in rollouts}),
            "samples": len(rollouts),
            "tokens": int(sum(r["num_tokens"] for r in rollouts)),
        }
    }


def summary(log_history: list[dict]) -> dict:
    """The round's per-step metrics: {name: {mean, first, last}} over its log entries (each TRL's mean over its
    logging interval), for the names in STEP_METRICS that it logged."""
    out = {}
    for name in STEP_METRICS:
        values = [e[name] for e in log_history if e.get(name) is not None]
        if values:
            out[name] = {"mean": float(np.mean(values)), "first": values[0], "last": values[-1]}
    return out
