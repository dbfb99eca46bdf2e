"""The ``model`` and ``task`` sections: the starting policy, and the task (each task module owns its own options)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from selfimprove import registry
from selfimprove.core.typed_yaml import option


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
