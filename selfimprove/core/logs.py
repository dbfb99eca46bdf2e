"""Logging for every process of a run: ours on stderr (rich on a terminal; plain, unwrapped lines in a file or a
pipe, so one grep finds a whole line), and other libraries' info lines, per-load progress bars and warnings silenced
unless the level is DEBUG. Launched jobs inherit the level through SELFIMPROVE_LOG_LEVEL."""

from __future__ import annotations

import logging
import os
import sys

LEVEL_ENV = "SELFIMPROVE_LOG_LEVEL"
# Libraries whose records below ERROR are noise at a user's level (accelerate's "[RANK 0] The used dataset had no
# length", DeepSpeed's "Setting accelerator to CPU", deprecation warnings): --log-level debug shows them.
LIBRARIES = (
    "accelerate", "datasets", "filelock", "httpx", "huggingface_hub", "peft", "sentence_transformers", "torch",
    "transformers", "trl", "urllib3", "py.warnings",
)  # fmt: skip
# Read when those libraries are imported (they set their own level then): transformers' and the hub's bars
# ("Loading weights", "Writing model shards"), their verbosity.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # one bar per dataset save
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
}


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def setup_logging(level: str | None = None) -> None:
    """Configure this process; ``level`` None: the level of the process that launched this one (else INFO). Under a
    launcher (RANK set) only rank 0 logs below WARNING, the others prefixed with their rank."""
    level = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    os.environ[LEVEL_ENV] = level
    rank = int(os.environ.get("RANK", "0"))
    if logging.getLevelName(level) == logging.DEBUG:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "debug")
    else:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        for name in LIBRARIES:
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("DeepSpeed").addFilter(_errors_only)  # it sets its own level when it is imported
    logging.captureWarnings(True)
    if rank and logging.getLevelName(level) in (logging.DEBUG, logging.INFO):
        level = "WARNING"
    prefix = f"[rank {rank}] " if rank else ""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
