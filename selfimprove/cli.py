"""``selfimprove`` command line: run the loop, run one stage, recompute a run's metrics, compare two checkpoints,
or write a run's HTML report."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from selfimprove.config import Recipe, load_recipe
from selfimprove.typed_yaml import ConfigError, add_override_arguments, collect_overrides

STAGE_NAMES = ("generate", "judge", "filter", "select", "train", "evaluate", "monitor")
SMOKE_HELP = ("Run the recipe shrunk, on this machine, with no hub access: tiny models of the same architecture, local "
              "stand-ins for hub datasets, CPU twins of GPU settings, a loopback server for any served judge "
              "(selfimprove.smoke lists every substitution; the run's recipe.yaml records them).")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfimprove", description="Self-improvement training loops: generate, judge, filter, select, train, evaluate, monitor.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Run or resume a recipe.", description="Run a recipe; rerunning on an existing run directory resumes it.")
    run.add_argument("recipe", help="Recipe YAML (see recipes/).")
    run.add_argument("--allow-recipe-change", action="store_true", help="Resume a run directory even though its saved recipe differs.")
    run.add_argument("--log-level", default="INFO", help="Python logging level.")
    run.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    add_override_arguments(run, Recipe)
    chk = sub.add_parser("check", help="Preflight a recipe: resolve models, data, configs and servers; print the plan.",
                         description="Checks everything a run needs without training or generating anything; exits 0 "
                                     "only when there is no problem.")
    chk.add_argument("recipe", help="Recipe YAML (see recipes/).")
    chk.add_argument("--smoke", action="store_true", help="Check the recipe as --smoke would run it. " + SMOKE_HELP)
    chk.add_argument("--json", default=None, help="Also write the report (problems, facts, example prompts, plan) here.")
    chk.add_argument("--log-level", default="WARNING", help="Python logging level.")
    add_override_arguments(chk, Recipe)
    stage = sub.add_parser("stage", help="Run one stage of one round on an existing run directory.")
    stage.add_argument("name", choices=STAGE_NAMES, help="Stage to run.")
    stage.add_argument("run_dir", help="Run directory made by 'selfimprove run'.")
    stage.add_argument("--round", type=int, required=True, help="Round number (0 is the bootstrap round).")
    stage.add_argument("--force", action="store_true", help="Redo the stage even if it is marked done.")
    stage.add_argument("--launched", action="store_true",
                       help="This process is already the launched job (e.g. started by hand with 'accelerate launch'): "
                            "run the stage here even if the recipe names an accelerate config for it.")
    stage.add_argument("--log-level", default="INFO", help="Python logging level.")
    mon = sub.add_parser("monitor", help="Recompute every completed round's metrics and metrics.jsonl of a run.")
    mon.add_argument("run_dir", help="Run directory.")
    mon.add_argument("--log-level", default="INFO", help="Python logging level.")
    cmp_ = sub.add_parser("compare", help="Compare two checkpoints on one run's eval and probe sets.",
                          description="A and B: round folders (runs/x/round_02) or save_pretrained folders.")
    cmp_.add_argument("a", help="Baseline checkpoint: a round folder or a save_pretrained folder.")
    cmp_.add_argument("b", help="Checkpoint compared against A.")
    cmp_.add_argument("--run", default=None, help="Run directory whose task, eval/probe sets, sampling and judges to use (default: A's run).")
    cmp_.add_argument("--json", default=None, help="Also write the full result (metrics, win-rate, KL, samples) to this JSON file.")
    cmp_.add_argument("--samples", type=int, default=5, help="Side-by-side samples for the prompts where A and B differ most.")
    cmp_.add_argument("--log-level", default="WARNING", help="Python logging level.")
    rep = sub.add_parser("report", help="Write a self-contained HTML report (and PNG plots) of one or more runs.")
    rep.add_argument("run_dirs", nargs="+", help="Run directories; several are overlaid.")
    rep.add_argument("--out", default=None, help="Output folder (default: RUN_DIR/report of the first run).")
    rep.add_argument("--log-level", default="INFO", help="Python logging level.")
    return parser


def _setup_logging(level: str) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # one bar per dataset save drowns the log
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        handlers = [RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)]
    except ImportError:  # rich is optional
        handlers = [logging.StreamHandler()]
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=handlers)


def _check(args) -> int:
    import contextlib
    import dataclasses
    import json

    from selfimprove.check import check_recipe, print_report

    recipe = load_recipe(args.recipe, collect_overrides(args), smoke=args.smoke)
    if args.smoke:
        from selfimprove.smoke import serving

        context = serving(recipe)
    else:
        context = contextlib.nullcontext(recipe)
    with context:
        report = check_recipe(recipe)
    print_report(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dataclasses.asdict(report), fh, indent=2)
    return 2 if report.problems else 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    _setup_logging(args.log_level)
    from selfimprove import loop

    try:
        if args.command == "run":
            notes: list[str] = []
            recipe = load_recipe(args.recipe, collect_overrides(args), smoke=args.smoke, notes=notes)
            if args.smoke:
                from selfimprove.smoke import serving

                with serving(recipe):
                    loop.run_loop(recipe, args.allow_recipe_change, "--smoke substitutions:\n" + "\n".join(notes))
            else:
                loop.run_loop(recipe, args.allow_recipe_change)
        elif args.command == "check":
            return _check(args)
        elif args.command == "stage":
            from selfimprove.rundir import LAUNCHED_ENV, barrier, dist_rank_world

            if args.launched:
                os.environ[LAUNCHED_ENV] = args.name

            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under accelerate launch: join the process group
                import torch
                from accelerate import PartialState

                PartialState(cpu=not torch.cuda.is_available())
            ctx = loop.open_run(args.run_dir)
            if args.force and dist_rank_world()[0] == 0:
                import shutil

                shutil.rmtree(ctx.stage(args.round, args.name), ignore_errors=True)
            barrier()
            if not loop.run_stage(ctx, args.round, args.name):
                logging.getLogger("selfimprove").info("round %d %s is already done (use --force to redo it)", args.round, args.name)
        elif args.command == "compare":
            from selfimprove.compare import compare, print_table, write_json

            result = compare(args.a, args.b, args.run, args.samples)
            print_table(result)
            if args.json:
                write_json(result, args.json)
        elif args.command == "report":
            from selfimprove.report import write_report

            print(write_report(args.run_dirs, args.out))
        else:
            ctx = loop.open_run(args.run_dir)
            from selfimprove.monitor import run_monitor

            k = 0
            while (ctx.stage(k, "evaluate") / "DONE").exists():
                logging.getLogger("selfimprove").info(loop.summary_line(run_monitor(ctx, k)))
                k += 1
    except (ConfigError, loop.RecipeMismatch, FileNotFoundError, ImportError) as err:
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    return 0
