"""The recipe: one typed dataclass per section, parsed from one YAML file plus ``--section.field`` overrides.

One module per group of sections (model and task, generate and propose, judge, filter and select, train, evaluate
and monitor, slurm); ``recipe`` composes them and holds the rules that span sections. Derived values (world size,
resolved paths, step counts) never go back into these objects; they live in each stage's ``meta.json``.
"""

from selfimprove.core.config.generate import GenerateConfig, OpenAIConfig, ProposeConfig, VLLMConfig
from selfimprove.core.config.judge import JUDGES, JudgeConfig, LLMJudgeConfig, RewardModelConfig
from selfimprove.core.config.model import BootstrapConfig, ModelConfig, TaskConfig
from selfimprove.core.config.monitor import AlarmConfig, EvaluateConfig, MonitorConfig
from selfimprove.core.config.recipe import (
    ADDED_FIELDS,
    LOCATION_FIELDS,
    Recipe,
    load_recipe,
    recipe_from_dict,
    recipe_hash,
    recipe_to_dict,
)
from selfimprove.core.config.select import FilterConfig, SelectConfig
from selfimprove.core.config.slurm import JudgeServerConfig, SlurmConfig
from selfimprove.core.config.train import DPOConfig, LoraConfig, SchedulerName, TrainConfig
from selfimprove.core.typed_yaml import ConfigError

__all__ = [
    "ADDED_FIELDS",
    "JUDGES",
    "LOCATION_FIELDS",
    "AlarmConfig",
    "BootstrapConfig",
    "ConfigError",
    "DPOConfig",
    "EvaluateConfig",
    "FilterConfig",
    "GenerateConfig",
    "JudgeConfig",
    "JudgeServerConfig",
    "LLMJudgeConfig",
    "LoraConfig",
    "ModelConfig",
    "MonitorConfig",
    "OpenAIConfig",
    "ProposeConfig",
    "Recipe",
    "RewardModelConfig",
    "SchedulerName",
    "SelectConfig",
    "SlurmConfig",
    "TaskConfig",
    "TrainConfig",
    "VLLMConfig",
    "load_recipe",
    "recipe_from_dict",
    "recipe_hash",
    "recipe_to_dict",
]
