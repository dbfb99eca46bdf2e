"""The package layout is the architecture, checked on every import, including any inside a function:

    core (and registry.py, a table of names)  <  tasks, backends, metrics  <  stages  <  tools, smoke, loop  <  cli

A module imports from lower layers and from its own package only (tools never from the loop, a stage never from
another stage but for STAGE_CALLS), nothing imports itself back through others, and `import selfimprove` and the CLI
load no heavy library (the list ruff's TID253 keeps out of module top, in pyproject.toml)."""

import ast
import subprocess
import sys

import pytest
import tomllib
from conftest import REPO

PKG = REPO / "selfimprove"
LAYERS = {
    "core": 0,
    "registry": 0,
    "tasks": 1,
    "backends": 1,
    "metrics": 1,
    "stages": 2,
    "tools": 3,
    "smoke": 3,
    "loop": 3,
    "cli": 4,
    "__main__": 5,
}
HEAVY = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["flake8-tidy-imports"][
    "banned-module-level-imports"
]


def _module(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _targets(node) -> set[str]:
    """The selfimprove modules an import statement loads: `from pkg import sub` is the submodule when there is one."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
        subs = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
        return subs if len(subs) == len(node.names) else subs | {node.module}
    return set()


def _graph() -> dict[str, set[str]]:
    """{module: the selfimprove modules it imports anywhere in its source}."""
    return {m: {t for n in ast.walk(ast.parse(p.read_text())) for t in _targets(n)} - {m} for m, p in MODULES.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    return LAYERS.get(_group(module), 0)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "stages" else None


# The one stage that runs another's code: an online (GRPO) round judges its rollouts inside training, with the judge
# stage's judges as TRL reward functions (selfimprove.stages.judge.rewards).
STAGE_CALLS = {("train", "judge")}


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in graph.items():
        for d in deps:
            if (_stage(m), _stage(d)) in STAGE_CALLS:
                continue
            same = _group(d) == _group(m)
            if _layer(d) > _layer(m) or (_layer(d) == _layer(m) and not same and _layer(m) > 0):
                bad.append(f"{m} -> {d}")
            elif same and _stage(m) and _stage(d) and _stage(m) != _stage(d):
                bad.append(f"{m} -> {d} (another stage)")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[str]:
    found, state = [], {}

    def visit(m, trail):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append(" -> ".join([*trail[trail.index(d) :], d]))
            elif d not in state:
                visit(d, [*trail, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


@pytest.mark.unit
def test_every_import_follows_the_layers():
    assert layering_problems(_graph()) == []


@pytest.mark.unit
def test_no_import_cycles():
    assert cycles(_graph()) == []


@pytest.mark.unit
def test_the_checks_can_fail():
    """The rules above on a made-up graph with one of each fault."""
    graph = {
        "selfimprove.core.a": {"selfimprove.stages.train"},  # upward
        "selfimprove.tools.check": {"selfimprove.loop"},  # sideways in a layer
        "selfimprove.stages.train": {"selfimprove.stages.select.samplers"},  # another stage
        "selfimprove.metrics.x": {"selfimprove.metrics.y"},
        "selfimprove.metrics.y": {"selfimprove.metrics.x"},  # a cycle
    }
    assert layering_problems(graph) == [
        "selfimprove.core.a -> selfimprove.stages.train",
        "selfimprove.stages.train -> selfimprove.stages.select.samplers (another stage)",
        "selfimprove.tools.check -> selfimprove.loop",
    ]
    assert cycles(graph) == ["selfimprove.metrics.x -> selfimprove.metrics.y -> selfimprove.metrics.x"]


@pytest.mark.unit
def test_imports_inside_functions_are_only_heavy_libraries():
    """ruff (PLC0415 with TID253's list) says the same; this keeps the rule if the lint config drifts."""
    bad = []
    for m, p in MODULES.items():
        tree = ast.parse(p.read_text())
        top = {id(n) for n in tree.body} | {
            id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)
        }
        for n in ast.walk(tree):
            if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top:
                name = n.names[0].name if isinstance(n, ast.Import) else n.module or ""
                if name.split(".")[0] not in HEAVY:
                    bad.append(f"{m}:{n.lineno} {name}")
    assert bad == []


@pytest.mark.e2e
def test_import_selfimprove_and_the_cli_load_no_heavy_library():
    code = f"import sys, selfimprove, selfimprove.cli; print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.unit
def test_a_test_needs_exactly_one_tier_and_a_unit_test_starts_no_process(pytester):
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        test_tiers="""
        import subprocess, sys
        import pytest

        def test_untiered():
            pass

        @pytest.mark.unit
        def test_unit_starting_a_process():
            subprocess.run([sys.executable, "-c", "pass"])
        """
    )
    out = pytester.runpytest_inprocess("-p", "no:randomly")
    assert "each test needs exactly one of @pytest.mark.unit/e2e/slow" in str(out.stderr) + str(out.stdout)
    assert "test_untiered: none" in "\n".join(out.outlines + out.errlines)
    pytester.makepyfile(
        test_tiers="""
        import subprocess, sys
        import pytest

        @pytest.mark.unit
        def test_unit_starting_a_process():
            subprocess.run([sys.executable, "-c", "pass"])
        """
    )
    out = pytester.runpytest_inprocess("-p", "no:randomly")
    out.assert_outcomes(failed=1)
    assert "test_tiers.py::test_unit_starting_a_process is marked unit but starts a process" in "\n".join(out.outlines)
