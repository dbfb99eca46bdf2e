"""Study overhead and parallel speed-up, measured side by side in one run.

Runs the same tiny study (2 arms x 2 seeds of tests/tiny_addition.yaml, 1 round) with --jobs 1 and --jobs 2 into
fresh directories and prints: the study's own overhead (checking and writing the arms' recipes, aggregating: all
but the runs) as a share of its wall time (target <= 2%), and the wall-time ratio jobs 2 / jobs 1 (target <= 0.7 on
2 cores). Every run has 1 torch thread (the study's `threads`) in both settings, so they do the same work and make
the same numbers.

    python scripts/bench_study.py [--seeds 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))
    study = {
        "name": "bench",
        "base": str(REPO / "tests" / "tiny_addition.yaml"),
        "seeds": list(range(args.seeds)),
        "arms": [
            {"name": "a", "overrides": {"rounds": args.rounds}},
            {"name": "b", "overrides": {"rounds": args.rounds, "generate.temperature": 1.2}},
        ],
    }
    (tmp / "study.yaml").write_text(yaml.safe_dump(study))
    walls, timing = {}, {}
    for jobs in (1, 2):
        out = tmp / f"jobs{jobs}"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "selfimprove",
                "study",
                str(tmp / "study.yaml"),
                "--output_dir",
                str(out),
                "--jobs",
                str(jobs),
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        walls[jobs] = time.perf_counter() - start
        timing[jobs] = json.loads((out / "study.json").read_text())["timing"]
    for jobs in (1, 2):
        t = timing[jobs]
        overhead = walls[jobs] - t["runs_s"]  # start-up, checks, recipes, aggregation: everything but the runs
        print(
            f"--jobs {jobs}: wall {walls[jobs]:.1f} s (runs {t['runs_s']:.1f} s, {t['threads_per_run']} threads each); "
            f"study overhead {overhead:.2f} s (check + recipes {t['claim_s']:.2f} s, aggregate {t['aggregate_s']:.2f} "
            "s, "
            f"the rest start-up) = {100 * overhead / walls[jobs]:.2f}% of the wall time (target <= 2%)"
        )
    print(f"wall time --jobs 2 / --jobs 1 = {walls[2] / walls[1]:.2f} (target <= 0.70)")


if __name__ == "__main__":
    main()
