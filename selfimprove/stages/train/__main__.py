"""``python -m selfimprove.stages.train RUN_DIR --round K`` (what ``accelerate launch`` and ``srun`` run)."""

from selfimprove.stages.train import main

main()
