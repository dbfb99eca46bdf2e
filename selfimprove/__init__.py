"""selfimprove: a self-improvement training loop engine.

A round: generate -> judge -> filter -> select -> train -> evaluate -> monitor.

Importing the package is light: torch, transformers, TRL, vLLM and DeepSpeed load only inside the stage that uses them.
"""

__version__ = "0.1.0"
