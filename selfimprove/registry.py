"""Every kind of thing a recipe or a command names, listed once: the stages of a round, the judges and the tasks. An
entry names its implementation as ``module:attribute``, imported only when it is used, so reading a list (the CLI's
choices, recipe validation, the report's panels) imports nothing, and this module sits below every layer.

Adding one: write the function (or task class) and add its line here; everything that lists or dispatches reads it.
"""

from __future__ import annotations

import importlib

# A round's stages, in order; round 0 runs the last three on the seed data, and 'propose' runs only when the recipe
# asks for it (propose.mode, propose.share).
STAGES = {
    "propose": "selfimprove.stages.propose:run_propose",
    "generate": "selfimprove.stages.generate:run_generate",
    "judge": "selfimprove.stages.judge:run_judge",
    "filter": "selfimprove.stages.filter:run_filter",
    "select": "selfimprove.stages.select:run_select",
    "train": "selfimprove.stages.train:run_train",
    "evaluate": "selfimprove.stages.evaluate:run_evaluate",
    "monitor": "selfimprove.stages.monitor:run_monitor",
}
ROUND0_STAGES = ("train", "evaluate", "monitor")
# An online round (train.method 'grpo') samples and judges inside training: its data is the trainer's rollouts.
ONLINE_STAGES = ("propose", "train", "evaluate", "monitor")
SHARDED_STAGES = ("generate", "judge", "evaluate")  # model-bound: split their prompts across accelerate ranks
POLICY_SAMPLING_STAGES = ("propose", "generate", "evaluate")  # sample the policy through the kept vLLM engine
TIMED_STAGES = tuple(s for s in STAGES if s != "monitor")  # time/<stage>_s (the monitor cannot time itself)

# judge name -> function (env, rows) -> scores, or (scores, records)
JUDGES = {
    "verifier": "selfimprove.stages.judge.rules:verifier",
    "majority": "selfimprove.stages.judge.rules:majority",
    "consistency": "selfimprove.stages.judge.rules:consistency",
    "format": "selfimprove.stages.judge.rules:format_check",
    "random": "selfimprove.stages.judge.rules:random_scores",
    "reward": "selfimprove.stages.judge.reward_model:reward_model",
    "llm": "selfimprove.stages.judge.llm:pointwise",
    "llm_pairwise": "selfimprove.stages.judge.llm:pairwise",
}

# task name -> class(config section, seed); the recipe's task.<name> section configures it
TASKS = {
    "addition": "selfimprove.tasks.addition:AdditionTask",
    "countdown": "selfimprove.tasks.countdown:CountdownTask",
    "rewrite": "selfimprove.tasks.rewrite:RewriteTask",
    "generic": "selfimprove.tasks.generic:GenericTask",
}


def load(entry):
    """The object an entry names ('package.module:attribute': the one parser of such names, for these tables and for
    a recipe's monitor.extra_metrics); an entry that is already the object (a function put in a table by a plugin or
    a test) is itself. Raises ValueError (not 'module:attribute'), ImportError or AttributeError."""
    if callable(entry):
        return entry
    module, _, attribute = entry.partition(":")
    if not module or not attribute:
        raise ValueError(f"{entry!r} is not 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)


def build_task(recipe):
    """The recipe's task (TASKS), configured by its task.<name> section."""
    name = recipe.task.name
    return load(TASKS[name])(getattr(recipe.task, name), recipe.seed)
