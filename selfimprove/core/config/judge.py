"""The ``judge`` section: which judges score every sample, and how their scores combine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfimprove import registry
from selfimprove.core.config.generate import OpenAIConfig, VLLMConfig
from selfimprove.core.typed_yaml import is_number, option

JUDGES = tuple(registry.JUDGES)


@dataclass
class RewardModelConfig:
    path: str = option(
        "", "AutoModelForSequenceClassification folder or hub id (e.g. trained with TRL's RewardTrainer)."
    )
    batch_size: int = option(64, "Sequences per forward pass.", ge=1)
    max_length: int = option(1024, "Truncate prompt + completion to this many tokens.", ge=2)
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", "Weights dtype.")
    train: bool = option(
        False,
        "Train the reward model after round 0 with TRL's RewardTrainer (RUN/reward_model) from pairs the task builds "
        "without extra labels: each seed answer (chosen) against a wrong answer of the same shape (rejected, "
        "task.corrupt); the reward judge then uses it and path is its starting backbone ('' = round 0's policy).",
    )
    train_pairs: int = option(2000, "train: pairs drawn from the seed data (a share heldout_share is held out).", ge=2)
    heldout_share: float = option(0.1, "train: share of the pairs held out for the pairwise accuracy.", gt=0, lt=1)
    train_steps: int = option(300, "train: RewardTrainer optimizer steps.", ge=1)
    train_batch_size: int = option(32, "train: pairs per optimizer step, over all processes of the launcher.", ge=1)
    learning_rate: float = option(3.0e-4, "train: RewardTrainer learning rate.", gt=0)


@dataclass
class LLMJudgeConfig:
    model: str = option(
        "policy",
        "Judge checkpoint folder or hub id; 'policy' = the checkpoint that generated the round (self-judging).",
    )
    backend: Literal["hf", "vllm", "openai"] = option("hf", "Generation backend of the judge (the policy's backends).")
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "Judge backend 'vllm'."})
    openai: OpenAIConfig = field(
        default_factory=OpenAIConfig,
        metadata={"help": "Judge backend 'openai' (e.g. a judge model behind `vllm serve`)."},
    )
    template: str = option(
        "", "Prompt template file; empty = the built-in one for the judge ('llm': pointwise, 'llm_pairwise')."
    )
    max_score: int = option(10, "Pointwise scale: 'Score: N' with N in 0..max_score, stored as N / max_score.", ge=1)
    max_new_tokens: int = option(64, "Tokens the judge may write.", ge=1)
    batch_size: int = option(64, "Judge prompts per generate() call.", ge=1)
    max_pairs_per_prompt: int = option(
        6, "Pairwise: at most this many sample pairs per prompt (each judged in both orders); 0 = all.", ge=0
    )
    chat_template: bool = option(True, "Wrap judge prompts in the judge tokenizer's chat template when it has one.")
    eft_share: float = option(
        0.0,
        "Round 0: share of the bootstrap rows that teach the policy to judge (EFT, Yuan et al. 2024): the pointwise "
        "template with a seed problem and its answer ('Score: max_score') or a corrupted one (task.corrupt, "
        "'Score: 0'), so that model 'policy' writes verdicts. 0 = off.",
        ge=0,
        lt=1,
    )
    on_unparseable: Literal["zero", "neutral", "drop"] = option(
        "zero",
        "A judge output with no single trustworthy verdict scores 0 ('zero'), 0.5 ('neutral'), or is dropped by the "
        "filter ('drop'). Counted either way.",
    )


@dataclass
class JudgeConfig:
    judges: list[str] = option(
        ["format", "majority"], f"Judges that score every sample, from {JUDGES}. 'verifier' reads ground truth."
    )
    weights: dict = option({}, "Weight per judge for the combined 'score' column (default 1 each).")
    combine: Literal["mean", "vote"] = option(
        "mean",
        "'mean': score = weighted mean of the judges' scores; 'vote': weighted share of judges scoring >= their "
        "vote_thresholds.",
    )
    vote_thresholds: dict = option({}, "With combine 'vote': per-judge acceptance threshold (default 0.5).")
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig, metadata={"help": "The 'reward' judge."})
    llm: LLMJudgeConfig = field(
        default_factory=LLMJudgeConfig, metadata={"help": "The 'llm' and 'llm_pairwise' judges."}
    )

    def check(self) -> list[str]:
        p = [f"judges: {j!r} is not a judge. Use some of {list(JUDGES)}." for j in self.judges if j not in JUDGES]
        p += [
            f"weights: {k!r} is not in judges {self.judges}. Remove it or add the judge."
            for k in self.weights
            if k not in self.judges
        ]
        p += [
            f"vote_thresholds: {k!r} is not in judges {self.judges}."
            for k in self.vote_thresholds
            if k not in self.judges
        ]
        if not self.judges:
            p.append("judges is empty: name at least one judge, e.g. [format].")
        if self.reward_model.train and "reward" not in self.judges:
            p.append(
                "reward_model.train trains a reward model for the 'reward' judge, which judges does not name. "
                "Add 'reward' to judges, or set reward_model.train false."
            )
        if "reward" in self.judges and not self.reward_model.path and not self.reward_model.train:
            p.append(
                "judges has 'reward' but reward_model.path is empty: point it at a sequence-classification model "
                "folder."
            )
        if {"llm", "llm_pairwise"} & set(self.judges) and not self.llm.model:
            p.append(
                "judges has an LLM judge but llm.model is empty: use 'policy' (self-judging) or a model folder / hub "
                "id."
            )
        if self.llm.eft_share and ("llm" not in self.judges or self.llm.model != "policy"):
            p.append(
                "llm.eft_share teaches the policy to judge, for the 'llm' judge with llm.model 'policy'. Add 'llm' "
                "to judges and set llm.model: policy, or set llm.eft_share: 0."
            )
        p += [
            f"{name}.{k}={v!r} must be a number."
            for name in ("weights", "vote_thresholds")
            for k, v in getattr(self, name).items()
            if not is_number(v)
        ]
        weights = [self.weights.get(j, 1.0) for j in self.judges]
        if all(is_number(w) for w in weights):
            if any(w < 0 for w in weights):
                p.append(f"weights={self.weights}: a judge's weight must be >= 0.")
            elif self.judges and sum(weights) == 0:
                p.append(
                    f"weights={self.weights}: the judges' weights sum to 0, so no score can be combined. Give at "
                    "least one judge a positive weight."
                )
        return p
