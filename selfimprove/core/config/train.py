"""The ``train`` section: TRL's SFT / DPO / GRPO rounds and how they are launched."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfimprove.core.typed_yaml import option

# transformers' SchedulerType values (tests/test_config.py checks they still are), so a wrong name is refused with the
# recipe, not after round 0 has trained
SchedulerName = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
]


@dataclass
class LoraConfig:
    enabled: bool = option(False, "Train LoRA adapters (peft) instead of all weights.")
    r: int = option(16, "LoRA rank.", ge=1)
    alpha: int = option(32, "LoRA alpha (scale = alpha / r).", ge=1)
    dropout: float = option(0.05, "LoRA dropout.", ge=0, lt=1)
    target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "Module names that get adapters ('all-linear' as the only entry: every linear layer).",
    )


@dataclass
class DPOConfig:
    beta: float = option(0.1, "DPO beta: how far the policy may move from the reference.", gt=0)
    loss_type: str = option("sigmoid", "trl.DPOConfig loss type ('sigmoid' = DPO, 'ipo', 'hinge', 'robust', ...).")
    reference: Literal["base", "previous"] = option(
        "previous", "Reference model per round: the original base, or the previous round's checkpoint (iterative DPO)."
    )
    max_length: int = option(1024, "Truncate prompt + completion to this many tokens.", ge=2)


@dataclass
class TrainConfig:
    RENAMED = {"sft_args": "trainer_args"}
    method: Literal["sft", "dpo", "grpo"] = option(
        "sft",
        "Rounds >= 1: 'sft' (TRL SFTTrainer on selected samples, completion-only loss), 'dpo' (TRL DPOTrainer on the "
        "filter's (chosen, rejected) pairs) or 'grpo' (TRL GRPOTrainer, online: it samples generate.num_samples "
        "completions of the round's prompts each step and rewards them with the run's judges, combined by "
        "judge.weights; the round then runs no generate, judge, filter or select stage). Round 0 is always SFT on the "
        "seed.",
    )
    dpo: DPOConfig = field(default_factory=DPOConfig, metadata={"help": "DPO settings (train.method: dpo)."})
    init: Literal["previous", "base"] = option(
        "previous", "Start each round from the previous round's checkpoint or from the base model."
    )
    bootstrap_steps: int = option(2000, "Round-0 steps on the labelled seed data (0 skips the bootstrap).", ge=0)
    max_steps: int = option(500, "Optimizer steps per self-improvement round.", ge=0)
    per_device_train_batch_size: int = option(64, "Sequences per device per micro-step.", ge=1)
    gradient_accumulation_steps: int = option(
        1, "Micro-steps per optimizer step (ignored when global_batch_size is set).", ge=1
    )
    global_batch_size: int = option(
        0,
        "Sequences per optimizer step over all processes, the same whatever their number: gradient accumulation = "
        "global_batch_size / (per_device_train_batch_size x processes). 0 = per_device x accumulation x processes.",
        ge=0,
    )
    learning_rate: float = option(1e-3, "Peak learning rate.", gt=0)
    round_learning_rate: float = option(0.0, "Peak learning rate of rounds >= 1 (0 = learning_rate).", ge=0)
    lr_scheduler_type: SchedulerName = option("cosine", "transformers' learning-rate schedule (its SchedulerType).")
    warmup_steps: float = option(0.05, "Warm-up: steps, or a fraction of the round's steps when < 1.", ge=0)
    weight_decay: float = option(0.1, "AdamW weight decay.", ge=0)
    max_grad_norm: float = option(1.0, "Gradient clipping.", ge=0)
    use_generated: bool = option(True, "false trains the same steps on seed data only: the matched-compute control.")
    seed_data: Literal["keep", "drop"] = option("keep", "Keep the labelled seed data in every round's mix.")
    history: Literal["accumulate", "replace"] = option(
        "accumulate", "Train on all earlier rounds' accepted data, or the newest round's only."
    )
    newest_share: float = option(0.5, "Share of each round's training rows drawn from the newest round's data.")
    launcher: Literal["inprocess", "accelerate", "slurm"] = option(
        "inprocess",
        "Run training in the orchestrator process, as an 'accelerate launch' subprocess, or (slurm, inside an sbatch "
        "allocation: 'selfimprove submit') as an srun step of one 'accelerate launch' per node; with accelerate or "
        "slurm, generate.accelerate_config's stages are launched the same way.",
    )
    accelerate_config: str = option("", "accelerate YAML for launcher 'accelerate' or 'slurm' (per node).")
    launch_retries: int = option(
        1,
        "Tries after a stage's 'accelerate launch' job fails without finishing the stage (a rank lost to a signal, a "
        "non-zero exit), each from the stage's clean state, before the run stops. Slurm steps use slurm.retries.",
        ge=0,
    )
    logging_steps: int = option(
        50, "Log the loss every this many steps (a round with fewer steps logs once, at its end).", ge=1
    )
    trainer_args: dict = option(
        {},
        "Extra trl.SFTConfig / trl.DPOConfig / trl.GRPOConfig arguments (e.g. {bf16: true, optim: adamw_torch_fused}), "
        "checked against TRL's fields when the recipe loads; they override the engine's defaults, and fields the "
        "recipe already sets are refused. A flat key reaches every trainer the run builds; a section named after a "
        "method reaches that method's rounds only: {grpo: {loss_type: dr_grpo, beta: 0.04, entropy_coef: 0.01}}.",
    )
    gradient_checkpointing: bool | None = option(
        None,
        "Activation checkpointing: true / false, or null = on for models of >= 1B parameters on a GPU, off otherwise "
        "(always off on CPU unless set).",
    )
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(),
        metadata={
            "help": "LoRA adapters (PEFT) instead of full fine-tuning; merged into a full checkpoint after each round."
        },
    )

    def check(self) -> list[str]:
        p = []
        if not 0 <= self.newest_share <= 1:
            p.append(f"newest_share={self.newest_share} must be in [0, 1].")
        if self.launcher != "inprocess" and not self.accelerate_config:
            p.append(
                f"launcher is {self.launcher!r} but accelerate_config is empty. Name a file from accelerate_configs/."
            )
        return p
