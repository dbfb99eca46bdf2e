"""train.trainer_args: validated against TRL's config classes when the recipe loads; engine defaults yield to it; fields
the recipe owns are refused; mixed precision and activation checkpointing follow the model on GPU."""

import pytest

from selfimprove.core.config import load_recipe
from selfimprove.core.trainer_args import build_args
from selfimprove.core.typed_yaml import ConfigError

pytestmark = pytest.mark.unit


def test_old_name_is_refused_with_the_new_one():
    with pytest.raises(ConfigError, match="train.sft_args was renamed train.trainer_args"):
        load_recipe(None, {"train.sft_args": {"bf16": True}})


def test_unknown_and_owned_keys_are_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        load_recipe(None, {"train.trainer_args": {"optimm": "adamw_torch", "beta": 0.2, "learning_rate": 1e-4}})
    msg = str(err.value)
    assert "train.trainer_args.optimm: not a field of trl.SFTConfig, which training uses. Did you mean 'optim'?" in msg
    assert "train.trainer_args.learning_rate: set by train.learning_rate / train.round_learning_rate" in msg
    assert "train.trainer_args.beta: not a field of trl.SFTConfig" in msg  # beta is DPO's, and this recipe is SFT
    dpo = {"train.method": "dpo", "filter.pairs": "best_vs_worst"}
    with pytest.raises(ConfigError, match=r"trainer_args.beta: set by train.dpo.beta"):
        load_recipe(None, {**dpo, "train.trainer_args": {"beta": 0.2}})
    # a DPO-only field is fine when no SFT config is built, refused when round 0 bootstraps with SFT
    load_recipe(None, {**dpo, "train.bootstrap_steps": 0, "train.trainer_args": {"label_smoothing": 0.1}})
    with pytest.raises(ConfigError, match="label_smoothing: not a field of trl.SFTConfig, which round 0"):
        load_recipe(None, {**dpo, "train.trainer_args": {"label_smoothing": 0.1}})


def test_user_values_override_engine_defaults_and_the_recipe_wins_its_own_fields():
    r = load_recipe(None, {"train.trainer_args": {"bf16": True, "report_to": ["tensorboard"], "optim": "sgd"}})
    args = build_args(r, 1, "/tmp/x", steps=7, accumulation=2, method="sft", parameters=1000)
    assert args["bf16"] is True and args["report_to"] == ["tensorboard"] and args["optim"] == "sgd"
    assert args["max_steps"] == 7 and args["gradient_accumulation_steps"] == 2 and args["completion_only_loss"] is True
    from trl import SFTConfig

    SFTConfig(**args)  # TRL accepts the whole set


def test_mixed_precision_and_checkpointing_follow_the_model_on_gpu(monkeypatch):
    import torch

    r = load_recipe(None, {"model.dtype": "bfloat16"})
    cpu = build_args(r, 0, "/tmp/x", 5, 1, "sft", parameters=2_000_000_000)
    assert (
        cpu["bf16"] is False
        and cpu["use_cpu"] is True
        and not any(v is True for k, v in cpu.items() if "checkpointing" in k)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    big = build_args(r, 0, "/tmp/x", 5, 1, "sft", parameters=2_000_000_000)
    small = build_args(r, 0, "/tmp/x", 5, 1, "sft", parameters=500_000_000)
    name = next(k for k in big if k.endswith("checkpointing"))
    assert big["bf16"] is True and big["fp16"] is False and big[name] is True and small[name] is False
    assert (
        build_args(
            load_recipe(None, {"model.dtype": "bfloat16", "train.gradient_checkpointing": False}),
            0,
            "/tmp/x",
            5,
            1,
            "sft",
            parameters=2_000_000_000,
        )[name]
        is False
    )
    assert build_args(load_recipe(None, {"model.dtype": "float16"}), 0, "/tmp/x", 5, 1, "sft", 10)["fp16"] is True


@pytest.mark.unit
def test_a_round_shorter_than_logging_steps_still_logs_its_loss(tmp_path):
    from selfimprove.core.config import load_recipe
    from selfimprove.core.trainer_args import build_args

    r = load_recipe(None, {"train.logging_steps": 50})
    assert build_args(r, 1, str(tmp_path), 30, 1, "sft", 1000)["logging_steps"] == 30
    assert build_args(r, 1, str(tmp_path), 300, 1, "sft", 1000)["logging_steps"] == 50
