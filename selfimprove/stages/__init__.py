"""The stages of a round, one module (or package) each, named as the stage: generate, judge, filter, select, train,
evaluate, monitor. Each has one public entry ``run_<stage>(ctx, k)``, reads its inputs from the run directory and
writes its folder atomically (selfimprove.core.atomic); the order and the dispatch are in selfimprove.registry.
Stages depend on selfimprove.core, .metrics, .backends and .tasks, never on the orchestrator or on each other."""
