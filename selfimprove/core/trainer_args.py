"""The recipe's train section as TRL config arguments (``trl.SFTConfig`` / ``trl.DPOConfig`` / ``trl.GRPOConfig``).

Three kinds of argument:
- owned by the recipe: every TRL field that a recipe field already sets (``max_steps`` is ``train.max_steps``, ``beta``
  is ``train.dpo.beta``...). Setting one in ``train.trainer_args`` is refused, naming the recipe field to use, so the
  two can never disagree.
- engine defaults: what the engine prefers when the user says nothing (no checkpoints, no trackers, mixed precision
  following ``model.dtype`` on GPU, completion-only loss); ``train.trainer_args`` overrides any of them.
- everything else TRL accepts, passed as it is. Unknown names are refused with the closest TRL field.
Validation runs when the recipe loads, against the real TRL classes, before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools

from selfimprove.core import seeding
from selfimprove.core.typed_yaml import NUMBER

OWNED = {
    "output_dir": "the engine (each round trains into its own stage folder)",
    "max_steps": "train.max_steps (rounds) / train.bootstrap_steps (round 0)",
    "per_device_train_batch_size": "train.per_device_train_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size or train.gradient_accumulation_steps",
    "learning_rate": "train.learning_rate / train.round_learning_rate",
    "lr_scheduler_type": "train.lr_scheduler_type",
    "warmup_steps": "train.warmup_steps",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "logging_steps": "train.logging_steps",
    "seed": "seed (the recipe's)",
    "data_seed": "seed (the recipe's)",
    "use_cpu": "the engine (it trains on the GPU when one is visible)",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "activation_checkpointing": "train.gradient_checkpointing",
}
OWNED_DPO = {"beta": "train.dpo.beta", "loss_type": "train.dpo.loss_type", "max_length": "train.dpo.max_length"}
# GRPO samples inside the trainer, so the recipe's sampling settings and judges are its generation and rewards.
OWNED_GRPO = {
    "num_generations": "generate.num_samples (the group size)",
    "temperature": "generate.temperature (steered by alarms)",
    "top_p": "generate.top_p",
    "top_k": "generate.top_k",
    "max_completion_length": "generate.max_new_tokens",
    "use_vllm": "generate.backend ('vllm')",
    "vllm_gpu_memory_utilization": "generate.vllm.gpu_memory_utilization",
    "vllm_tensor_parallel_size": "generate.vllm.tensor_parallel_size",
    "vllm_max_model_length": "generate.vllm.max_model_len",
    "reward_weights": "judge.weights",
}
OWNED_BY_METHOD = {"sft": {}, "dpo": OWNED_DPO, "grpo": OWNED_GRPO}
CLASSES = {"sft": "SFTConfig", "dpo": "DPOConfig", "grpo": "GRPOConfig"}
# Models this large train with activation checkpointing on a GPU unless the recipe says otherwise: their activations,
# not their weights, are what overflows memory at useful batch sizes.
CHECKPOINTING_AUTO_PARAMS = 1_000_000_000


def config_class(method: str):
    """The TRL config class of a training method."""
    import trl

    return getattr(trl, CLASSES[method])


@functools.lru_cache(maxsize=None)
def _fields(method: str) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(config_class(method)))


@functools.lru_cache(maxsize=None)
def _number_fields(method: str) -> dict[str, type]:
    """TRL config fields typed float or int (or either or None): trainer_args given as '1e-3' become numbers."""
    out = {}
    for f in dataclasses.fields(config_class(method)):
        kind = str(f.type).replace("typing.", "").replace("Optional[", "").replace(" | None", "").rstrip("]")
        if kind in ("float", "int", "<class 'float'>", "<class 'int'>"):
            out[f.name] = float if "float" in kind else int
    return out


def numbers(args: dict, method: str) -> dict:
    """``args`` with each number written as a string in a numeric field read as that number ('1e-3' -> 0.001)."""
    kinds = _number_fields(method)
    out = dict(args)
    for key, value in args.items():
        if key in kinds and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            number = float(value)
            out[key] = int(number) if kinds[key] is int and number.is_integer() else number
    return out


def methods_used(train, rounds: int) -> list[str]:
    """TRL configs a run builds: round 0 is SFT (when it trains), later rounds ``train.method``."""
    used = ["sft"] if train.bootstrap_steps > 0 or (rounds > 0 and train.method == "sft") else []
    return used + ([train.method] if rounds > 0 and train.method != "sft" else [])


def _key_problem(name: str, key: str, value, methods: list[str], when) -> str | None:
    """The problem of one trainer argument passed to the configs of ``methods`` (None: none)."""
    owner = OWNED.get(key) or next((OWNED_BY_METHOD[m][key] for m in methods if key in OWNED_BY_METHOD[m]), None)
    if owner:
        return f"{name}: set by {owner}; remove it from trainer_args."
    for method in methods:
        cls = f"trl.{CLASSES[method]}"
        if key not in _fields(method):
            close = difflib.get_close_matches(key, sorted(_fields(method)), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else f" See {cls}'s documentation for its fields."
            return f"{name}: not a field of {cls}, which {when(method)} uses.{hint}"
        if key in _number_fields(method) and isinstance(numbers({key: value}, method)[key], str):
            return f"{name}: expected a number, got {value!r}."
    return None


def problems(train, rounds: int) -> list[str]:
    """Every problem of ``train.trainer_args``, each with its fix: a flat key reaches every TRL config the run builds,
    a section named after a method ({grpo: {beta: 0.04}}) that method's config only."""
    used = methods_used(train, rounds)
    when = lambda m: "round 0 (supervised bootstrap)" if m == "sft" and train.method != "sft" else "training"  # noqa: E731
    out = []
    for key, value in train.trainer_args.items():
        if key not in CLASSES:
            out.append(_key_problem(f"train.trainer_args.{key}", key, value, used, when))
        elif key not in ("sft", train.method) or not isinstance(value, dict):
            out.append(
                f"train.trainer_args.{key}: a section for {CLASSES[key]}'s arguments, but "
                + ("this recipe trains no such round." if isinstance(value, dict) else "it is not a mapping.")
            )
        else:
            out += [_key_problem(f"train.trainer_args.{key}.{k}", k, v, [key], when) for k, v in value.items()]
    return [p for p in out if p]


def method_args(train, method: str) -> dict:
    """The trainer arguments one method's config takes: the flat ones and its own section's."""
    flat = {k: v for k, v in train.trainer_args.items() if k not in CLASSES}
    return numbers({**flat, **train.trainer_args.get(method, {})}, method)


def checkpointing(train, parameters: int, gpu: bool) -> bool:
    if train.gradient_checkpointing is not None:
        return train.gradient_checkpointing
    return gpu and parameters >= CHECKPOINTING_AUTO_PARAMS


def checkpointing_args(method: str, on: bool) -> dict:
    """Activation checkpointing under the name this transformers uses (``activation_checkpointing`` from 5.24,
    ``gradient_checkpointing`` before). TRL turns it on by default, which is pure overhead for small models."""
    name = "activation_checkpointing" if "activation_checkpointing" in _fields(method) else "gradient_checkpointing"
    return {name: on, **({f"{name}_kwargs": {"use_reentrant": False}} if on else {})}


def build_args(recipe, k: int, output_dir: str, steps: int, accumulation: int, method: str, parameters: int) -> dict:
    """Keyword arguments of round k's ``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig`` (whose sampling and reward
    arguments ``grpo_args`` adds): engine defaults < trainer_args < recipe fields."""
    import torch

    t = recipe.train
    gpu = torch.cuda.is_available()
    defaults = dict(
        bf16=gpu and recipe.model.dtype == "bfloat16",
        fp16=gpu and recipe.model.dtype == "float16",
        save_strategy="no",
        report_to=[],
        disable_tqdm=False,
        dataloader_drop_last=True,
    )
    if method == "sft":  # rows arrive tokenised with a completion mask; nothing to truncate
        defaults.update(completion_only_loss=True, max_length=None)
    owned = dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=t.round_learning_rate if k > 0 and t.round_learning_rate else t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=min(t.logging_steps, max(steps, 1)),  # a round shorter than logging_steps still logs its loss
        seed=seeding.int_seed(recipe.seed, "train", k),
        data_seed=seeding.int_seed(recipe.seed, "train", k),
        use_cpu=not gpu,
        **checkpointing_args(method, checkpointing(t, parameters, gpu)),
    )
    if method == "dpo":
        owned.update(beta=t.dpo.beta, loss_type=[t.dpo.loss_type], max_length=t.dpo.max_length)
    return {**defaults, **method_args(t, method), **owned}
