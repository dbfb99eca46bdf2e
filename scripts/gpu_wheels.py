"""The wheels the GPU check's machine lacks, downloaded here for it: Python 3.12, manylinux x86-64, no network.

That machine has torch (CUDA), transformers, accelerate and peft, and what they depend on; scripts/gpu_check.py also
needs trl, datasets and deepspeed, a transformers at this repo's pinned version, and for its engine rounds
selfimprove's own dependencies. This walks their requirements (each wheel's Requires-Dist, evaluated for Python 3.12 on
Linux x86-64), skips what the machine has, downloads the rest with ``pip download`` at constraints.txt's versions
(``pip wheel`` for a project that ships only a source archive, like DeepSpeed, whose wheel is pure Python), and packs
them into carries of at most --max-mib each (the device tool carries 64 MiB a call):

    python scripts/gpu_wheels.py [--have pip-list.json] [--dest gpu_wheels] [--max-mib 60]

There, one call per carry (the folder travels with the tree: name it in ``carry``), then the check:

    pip install --no-index --no-deps --target .gpu_site gpu_wheels/carry_1/*.whl
    PYTHONPATH=$PWD/.gpu_site:$PWD python scripts/gpu_check.py

--have: the machine's own ``pip list --format json`` (better than the default guess: the closure of torch,
transformers, accelerate and peft's requirements as installed here). Nothing is installed here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import tomllib
from packaging import tags
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "os_name": "posix",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython"}  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TARGET_TAGS = {
    *tags.cpython_tags((3, 12), ["cp312", "abi3", "none"], [*PLATFORMS, "linux_x86_64"]),
    *tags.compatible_tags((3, 12), "cp312", [*PLATFORMS, "linux_x86_64"]),
}
THERE = ("torch", "transformers", "accelerate", "peft")  # what the issue says the GPU machine has
WANTED = ("trl", "datasets", "deepspeed", "transformers")  # transformers: this repo's pin, newer than the machine's


def requirement_names(requires: list[str], extras: tuple[str, ...] = ()) -> list[str]:
    """The names a package's Requires-Dist lines need on the target (their markers evaluated for it)."""
    names = []
    for line in requires:
        req = Requirement(line)
        envs = [{**TARGET, "extra": e} for e in ("", *extras)]
        if req.marker is None or any(Marker(str(req.marker)).evaluate(env) for env in envs):
            names.append(canonicalize_name(req.name))
    return names


def assumed_there() -> set[str]:
    """The closure of THERE's requirements as installed in this environment, less the transformers pin we bring."""
    have, todo = set(), list(THERE)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in have:
            continue
        have.add(name)
        try:
            todo += requirement_names(metadata.requires(name) or [])
        except metadata.PackageNotFoundError:
            continue
    return have - {"transformers"}


def project_requirements() -> list[str]:
    """selfimprove's runtime dependencies (pyproject) and the [deepspeed] extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r).name for r in project["dependencies"] + project["optional-dependencies"]["deepspeed"]]


def fetch(name: str, dest: Path) -> Path:
    """One wheel for the target, at constraints.txt's version: downloaded, or built here when only an sdist exists."""
    before = set(dest.iterdir())
    platform = [f"--platform={p}" for p in PLATFORMS]
    target = ["--python-version=3.12", "--implementation=cp", "--abi=cp312", *platform]
    common = ["--no-deps", "-q", "-c", str(REPO / "constraints.txt"), name]
    pip = [sys.executable, "-m", "pip"]
    got = subprocess.run([*pip, "download", "--only-binary=:all:", *target, "-d", str(dest), *common], text=True,
                         capture_output=True)  # fmt: skip
    if got.returncode:
        built = subprocess.run([*pip, "wheel", "-w", str(dest), *common], text=True, capture_output=True)
        if built.returncode:
            raise SystemExit(f"{name}: no wheel for Python 3.12 manylinux x86-64:\n{got.stderr[-800:]}")
    (wheel,) = set(dest.iterdir()) - before
    if not parse_wheel_filename(wheel.name)[3] & TARGET_TAGS:
        raise SystemExit(f"{wheel.name}: not installable on Python 3.12 manylinux x86-64")
    return wheel


def wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def carries(wheels: list[Path], max_bytes: int) -> list[list[Path]]:
    """Wheels packed into carries under ``max_bytes`` each (largest first, first fit)."""
    out: list[list[Path]] = []
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        size = wheel.stat().st_size
        if size > max_bytes:
            raise SystemExit(f"{wheel.name} ({size / 2**20:.0f} MiB) is larger than one carry")
        spot = next((c for c in out if sum(w.stat().st_size for w in c) + size <= max_bytes), None)
        (spot if spot is not None else out.append([]) or out[-1]).append(wheel)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--have", default="", help="The GPU machine's `pip list --format json` (default: a guess).")
    parser.add_argument("--dest", default="gpu_wheels", help="Where the carries go (git-ignored).")
    parser.add_argument("--max-mib", type=float, default=60.0, help="At most this much per carry.")
    args = parser.parse_args()
    have = (
        {canonicalize_name(p["name"]) for p in json.loads(Path(args.have).read_text())} - {"transformers"}
        if args.have
        else assumed_there()
    )
    download = Path(tempfile.mkdtemp(prefix="gpu-wheels-"))
    todo, seen, skipped, wheels = [*WANTED, *project_requirements()], set(), set(), []
    while todo:
        name = canonicalize_name(todo.pop(0))
        if name in have:
            skipped.add(name)
        if name in seen or name in have:
            continue
        seen.add(name)
        wheels.append(fetch(name, download))
        todo += requirement_names(wheel_requires(wheels[-1]))
    dest = Path(args.dest) if Path(args.dest).is_absolute() else REPO / args.dest
    shutil.rmtree(dest, ignore_errors=True)
    for i, carry in enumerate(carries(wheels, int(args.max_mib * 2**20)), 1):
        folder = dest / f"carry_{i}"
        folder.mkdir(parents=True)
        for wheel in carry:
            shutil.move(wheel, folder / wheel.name)
        shown = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
        mib = sum(w.stat().st_size for w in folder.iterdir()) / 2**20
        print(f"{shown}: {len(carry)} wheels, {mib:.1f} MiB")
        print(f"  there: pip install --no-index --no-deps --target .gpu_site {shown}/*.whl")
    print(f"{len(wheels)} wheels; already there, not downloaded: {', '.join(sorted(skipped))}")


if __name__ == "__main__":
    main()
