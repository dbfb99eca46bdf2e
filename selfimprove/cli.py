"""``selfimprove`` command line: run the loop, submit it to Slurm, check a recipe, run one stage, recompute a run's
metrics, verify a run's integrity, compare two checkpoints, run a controlled study, or write an HTML report.

A problem the user can fix (selfimprove.core.errors.UserError: a recipe, a data file, a run directory) prints one
message and exits 2. Anything else prints one line saying what failed and where its traceback was written, and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from selfimprove import loop, registry
from selfimprove.core import slurm
from selfimprove.core.atomic import is_done
from selfimprove.core.config import Recipe, load_recipe
from selfimprove.core.dist import LAUNCHED_ENV, dist_rank_world, in_launched_job, leave, watch_crashes
from selfimprove.core.errors import UserError
from selfimprove.core.logs import LEVEL_ENV, setup_logging
from selfimprove.core.rundir import round_numbers
from selfimprove.core.runlock import run_lock
from selfimprove.core.runs import open_run, refuse_foreign
from selfimprove.core.typed_yaml import ConfigError, add_override_arguments, collect_overrides, did_you_mean
from selfimprove.smoke import serving, smoke_recipe
from selfimprove.stages.monitor import run_monitor
from selfimprove.tools import study
from selfimprove.tools.check import check_recipe, print_report
from selfimprove.tools.compare import compare, print_table, write_json
from selfimprove.tools.report import write_report
from selfimprove.tools.verify import verify_run

TRUST_HELP = (
    "Run the interpreters (generate.vllm.python, judge.llm.vllm.python) and modules (monitor.extra_metrics) "
    "this run's recipe names; without it, a run directory whose recipe names any is refused."
)
SMOKE_HELP = (
    "Run the recipe shrunk, on this machine, with no hub access: tiny models of the same architecture, local "
    "stand-ins for hub datasets, CPU twins of GPU settings, a loopback server for any served judge "
    "(selfimprove.smoke lists every substitution; the run's recipe.yaml records them)."
)


SUBMIT_TEXT = {
    "help": "Submit a recipe as a Slurm job (sbatch) that runs it over N nodes; resubmitting resumes it.",
    "description": "Writes RUN_DIR/slurm/submit.sbatch (readable: edit and resubmit it with sbatch) and submits it. "
    "The job runs 'selfimprove run RECIPE' on the allocation's first node; with train.launcher 'slurm' each "
    "model-bound stage is an srun step over every node. Step logs: RUN_DIR/slurm/logs/.",
}
SUBMIT_SHORTHANDS = {"nodes": int, "partition": str, "gpus_per_node": int, "time": str}  # --nodes = --slurm.nodes


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="Recipe YAML (see recipes/).")
    for key, kind in SUBMIT_SHORTHANDS.items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, dest=f"slurm_{key}", type=kind, default=None, help=f"Shorthand for --slurm.{key}.")
    p.add_argument(
        "--wait", action="store_true", help="Block until the job ends (sbatch --wait); exit with its status."
    )
    add_override_arguments(p, Recipe)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="Recipe YAML (see recipes/).")
    p.add_argument(
        "--allow-recipe-change",
        "--allow_recipe_change",
        action="store_true",
        help="Resume a run directory even though its saved recipe differs.",
    )
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    add_override_arguments(p, Recipe)


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="Recipe YAML (see recipes/).")
    p.add_argument("--smoke", action="store_true", help="Check the recipe as --smoke would run it. " + SMOKE_HELP)
    p.add_argument("--json", default=None, help="Also write the report (problems, facts, example prompts, plan) here.")
    add_override_arguments(p, Recipe)


def _stage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=list(registry.STAGES), help="Stage to run.")
    p.add_argument("run_dir", help="Run directory made by 'selfimprove run'.")
    p.add_argument("--round", type=int, required=True, help="Round number (0 is the bootstrap round).")
    p.add_argument(
        "--force",
        action="store_true",
        help="Redo the stage even if it is marked done (the finished one is replaced only when the new one is "
        "finished).",
    )
    p.add_argument("--trust-recipe", "--trust_recipe", action="store_true", help=TRUST_HELP)
    p.add_argument(
        "--launched",
        action="store_true",
        help="This process is already the launched job (e.g. started by hand with 'accelerate launch'): "
        "run the stage here even if the recipe names an accelerate config for it.",
    )


def _monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="Run directory.")
    p.add_argument("--trust-recipe", "--trust_recipe", action="store_true", help=TRUST_HELP)


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="Run directory.")


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="Baseline checkpoint: a round folder or a save_pretrained folder.")
    p.add_argument("b", help="Checkpoint compared against A.")
    p.add_argument(
        "--run",
        default=None,
        help="Run directory whose task, eval/probe sets, sampling and judges to use (default: A's).",
    )
    p.add_argument(
        "--json", default=None, help="Also write the full result (metrics, win-rate, KL, samples) to this JSON file."
    )
    p.add_argument(
        "--samples", type=int, default=5, help="Side-by-side samples for the prompts where A and B differ most."
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=2000,
        help="Paired bootstrap resamples of the eval and probe prompts (95%% CI of B - A of every per-prompt metric).",
    )
    p.add_argument(
        "--permutations",
        type=int,
        default=50,
        help="Paired permutations for the probe's corpus-level metrics (each recomputes them on both sides; 0 = none).",
    )
    p.add_argument("--trust-recipe", "--trust_recipe", action="store_true", help=TRUST_HELP)


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="Study YAML (see recipes/studies/).")
    p.add_argument(
        "--output_dir",
        "--output-dir",
        default=None,
        help="Study directory (default: the study's output_dir, else runs/studies/NAME).",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Runs at a time (each with the study's `threads` torch threads, default 1, so --jobs never changes a "
        "number).",
    )
    p.add_argument("--smoke", action="store_true", help="Run every arm with --smoke. " + SMOKE_HELP)
    p.add_argument(
        "--slurm",
        action="store_true",
        help="Write STUDY_DIR/study.sbatch (a job array, one task per run) instead of running here.",
    )
    p.add_argument(
        "--only", type=int, default=None, help="Run only the run with this index in plan.json (a Slurm array task)."
    )
    p.add_argument("--aggregate", action="store_true", help="Only aggregate what has finished (no runs).")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", help="Run directories (several are overlaid), or one study directory.")
    p.add_argument("--out", default=None, help="Output folder (default: RUN_DIR/report of the first run).")


# command: (its help and description, what adds its arguments, its default --log-level)
PARSERS = {
    "run": (
        {
            "help": "Run or resume a recipe.",
            "description": "Run a recipe; rerunning on an existing run directory resumes it.",
        },
        _run_args,
        "INFO",
    ),
    "submit": (SUBMIT_TEXT, _submit_args, "INFO"),
    "check": (
        {
            "help": "Preflight a recipe: resolve models, data, configs and servers; print the plan.",
            "description": "Checks everything a run needs without training or generating anything; exits 0 only "
            "when there is no problem.",
        },
        _check_args,
        "WARNING",
    ),
    "stage": ({"help": "Run one stage of one round on an existing run directory."}, _stage_args, "INFO"),
    "monitor": (
        {"help": "Recompute every completed round's metrics and metrics.jsonl of a run."},
        _monitor_args,
        "INFO",
    ),
    "verify": (
        {
            "help": "Check every finished stage's files and inputs against its DONE record.",
            "description": "Hashes every file of every finished stage; names each damaged or stale stage and the "
            "command that redoes it. Exits 1 when it finds a problem.",
        },
        _verify_args,
        "WARNING",
    ),
    "compare": (
        {
            "help": "Compare two checkpoints on one run's eval and probe sets.",
            "description": "A and B: round folders (runs/x/round_02) or save_pretrained folders.",
        },
        _compare_args,
        "WARNING",
    ),
    "study": (
        {
            "help": "Run a controlled study: arms x seeds, each a run; aggregate with confidence intervals.",
            "description": "Runs (or resumes) every arm x seed of a study file as ordinary run directories under the "
            "study directory, then writes study.json, study.csv and a table: per arm mean and 95% t CI over seeds, "
            "and each arm's paired difference from the baseline.",
        },
        _study_args,
        "INFO",
    ),
    "report": (
        {"help": "Write a self-contained HTML report (and PNG plots) of one or more runs, or of a study."},
        _report_args,
        "INFO",
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfimprove",
        allow_abbrev=False,
        description="Self-improvement training loops: generate, judge, filter, select, train, evaluate, monitor.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = {}
    for name, (text, add_arguments, level) in PARSERS.items():
        p = parser.commands[name] = sub.add_parser(name, allow_abbrev=False, **text)  # no --prefix guessing
        add_arguments(p)
        p.add_argument(
            "--log-level",
            "--log_level",
            help=f"Python logging level (default {level}, or the launching run's); DEBUG also shows other libraries' "
            "info, warnings and progress bars.",
        )
        p.set_defaults(default_log_level=level)
    return parser


def _recipe(args, notes: list | None = None):
    """The command's recipe: its file, with --smoke's substitutions when asked, then its overrides."""
    prepare = smoke_recipe if getattr(args, "smoke", False) else None
    return load_recipe(args.recipe, collect_overrides(args), prepare, notes)


def _check(args) -> int:
    recipe = _recipe(args)
    if args.smoke:
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


def _run(args) -> int:
    notes: list[str] = []
    recipe = _recipe(args, notes)
    note = "--smoke substitutions:\n" + "\n".join(notes) if args.smoke else ""
    with serving(recipe) if args.smoke else contextlib.nullcontext():
        problems = check_recipe(recipe).problems + loop.start_problems(recipe)
        if problems:  # all at once, before the run directory is touched
            raise ConfigError(problems, "cannot start")
        loop.run_loop(recipe, args.allow_recipe_change, note)
    return 0


def _submit(args) -> int:
    # the job reruns exactly this command line: the recipe, the overrides, and the shorthands as slurm.* overrides
    raw = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("override:")}
    overrides = collect_overrides(args)
    for key in SUBMIT_SHORTHANDS:
        value = getattr(args, f"slurm_{key}")
        if value is not None:
            overrides[f"slurm.{key}"] = value
            raw[f"slurm.{key}"] = json.dumps(value)  # quoted: YAML would read a time of 1:00 as 60
    recipe = load_recipe(args.recipe, overrides)
    if recipe.slurm.nodes > 1 and recipe.train.launcher != "slurm":
        raise ConfigError(
            [
                f"slurm.nodes={recipe.slurm.nodes} but train.launcher is {recipe.train.launcher!r}: only launcher "
                "'slurm' runs a stage over several nodes. Set --train.launcher slurm."
            ],
            "cannot submit",
        )
    problems = check_recipe(recipe).problems
    if problems:
        raise ConfigError(problems, "cannot submit")
    run_dir = Path(recipe.output_dir).resolve()
    refuse_foreign(run_dir)
    argv = [sys.executable, "-m", "selfimprove", "run", str(Path(args.recipe).resolve())]
    argv += [x for k, v in raw.items() for x in (f"--{k}", v)]
    return slurm.submit(recipe.slurm, argv, run_dir, f"selfimprove-{run_dir.name}", wait=args.wait)


def _stage(args) -> int:
    watch_crashes()

    if args.launched:
        os.environ[LAUNCHED_ENV] = args.name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under accelerate launch: join the process group
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    ctx = open_run(args.run_dir, trust=args.trust_recipe)
    by_hand = not (in_launched_job() or dist_rank_world()[1] > 1)
    problems = check_recipe(ctx.recipe).problems if by_hand else []  # a launched job's run was checked at its start
    if problems:
        raise ConfigError(problems, "cannot run the stage")
    # a job the orchestrator launched runs under its lock; a stage started by hand takes the run's lock itself
    lock = run_lock(ctx.run_dir, "stage") if by_hand else contextlib.nullcontext()
    with lock:
        if not loop.run_stage(ctx, args.round, args.name, force=args.force):
            logging.getLogger("selfimprove").info(
                "round %d %s is already done (use --force to redo it)", args.round, args.name
            )
    leave()
    return 0


def _monitor(args) -> int:
    ctx = open_run(args.run_dir, trust=args.trust_recipe)
    with run_lock(ctx.run_dir, "monitor"):
        for k in round_numbers(ctx.run_dir):
            if is_done(ctx.stage(k, "evaluate")):
                logging.getLogger("selfimprove").info(loop.summary_line(run_monitor(ctx, k)))
    return 0


def _verify(args) -> int:
    checked, problems = verify_run(args.run_dir)
    for problem in problems:
        print(problem)
    print(f"{checked} finished stages checked: " + (f"{len(problems)} problem(s)" if problems else "all intact"))
    return 1 if problems else 0


def _compare(args) -> int:
    result = compare(
        args.a,
        args.b,
        args.run,
        args.samples,
        trust=args.trust_recipe,
        resamples=args.resamples,
        permutations=args.permutations,
    )
    print_table(result)
    if args.json:
        write_json(result, args.json)
    return 0


def _study(args) -> int:
    s = study.load_study(args.study, args.output_dir)
    if args.slurm:
        print(study.slurm_script(s, args.smoke))
        return 0
    if args.aggregate:
        result = study.aggregate(s)
    else:
        result = study.run_study(s, args.jobs, args.smoke, args.only)
    if result:
        study.print_table(result)
        print(f"tables: {s.output_dir / 'study.md'}; every number: {s.output_dir / 'study.json'}")
    return 0


def _report(args) -> int:
    print(write_report(args.run_dirs, args.out))
    return 0


COMMANDS = {
    "run": _run,
    "submit": _submit,
    "check": _check,
    "stage": _stage,
    "monitor": _monitor,
    "verify": _verify,
    "compare": _compare,
    "study": _study,
    "report": _report,
}


def _traceback_log(args) -> str:
    """Write the current exception's traceback into the run's logs/ (else a temporary file); return the path."""
    run = getattr(args, "run_dir", None)
    if run is None and getattr(args, "recipe", None):
        try:
            run = _recipe(args).output_dir
        except Exception:  # the recipe itself may be what failed
            run = None
    logs = Path(run) / "logs" if run and Path(run, "recipe.yaml").exists() else None
    try:
        if logs is not None:
            logs.mkdir(exist_ok=True)
            path = logs / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        else:
            path = Path(tempfile.mkstemp(prefix="selfimprove-error-", suffix=".log")[1])
        path.write_text(f"selfimprove {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        return str(path)
    except OSError:
        return "(could not be written: the traceback follows)\n" + traceback.format_exc()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; an unknown option gets the command's usage and the closest option's name, as an unknown
    recipe key does."""
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if not unknown:
        return args
    options = [t.split("=", 1)[0] for t in unknown if t.startswith("-")]
    if not options:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    known = [o for action in parser.commands[args.command]._actions for o in action.option_strings]
    for option in options:
        hint = did_you_mean(option, known)
        hint = hint if hint.startswith(" Did you mean") else ""  # not hundreds of overrides
        print(f"selfimprove {args.command}: unknown option {option!r}.{hint}", file=sys.stderr)
    print(f"selfimprove {args.command} --help lists every option.", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    inherited = os.environ.get(LEVEL_ENV) if in_launched_job() else None  # a stage job logs as its run does
    setup_logging(args.log_level or inherited or args.default_log_level)
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"selfimprove: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfimprove: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _unexpected(args, err)
        print(
            f"selfimprove: no space left on the device{f' writing {err.filename}' if err.filename else ''} "
            f"({err.strerror}). Finished stages are kept and the interrupted one is redone: free space (or set "
            "output_dir on a larger disk, or HF_HOME / TMPDIR for caches), then rerun the same command.",
            file=sys.stderr,
        )
        return 1
    except Exception as err:
        return _unexpected(args, err)


def _unexpected(args, err: BaseException) -> int:
    """Not the user's to fix: one line here, the whole story in the log."""
    where = _traceback_log(args)
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    print(
        f"selfimprove: unexpected {type(err).__name__} in '{args.command}': {first} (full traceback: {where})",
        file=sys.stderr,
    )
    return 1
