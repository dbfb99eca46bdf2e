"""The package layout is the architecture: stages depend on infrastructure, metrics, backends and tasks, never on the
orchestrator, the tools or each other; no module imports itself back through others; `import selfimprove` is light."""

import ast
import subprocess
import sys

from conftest import REPO

PKG = REPO / "selfimprove"


def _module(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(top_level_only: bool) -> dict[str, set[str]]:
    """{module: selfimprove modules it imports} (with top_level_only, only imports run when the module loads)."""
    out = {}
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        found = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfimprove"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("selfimprove")}
        out[_module(path)] = found
    modules = set(out)
    return {m: {d for d in deps if d in modules and d != m} for m, deps in out.items()}


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "stages" else None


def test_stages_never_import_the_orchestrator_tools_or_another_stage():
    bad = []
    for module, deps in _imports(top_level_only=False).items():
        stage = _stage_of(module)
        if stage is None:
            continue
        for dep in deps:
            other = _stage_of(dep)
            if dep in ("selfimprove.loop", "selfimprove.cli") or dep.startswith("selfimprove.tools"):
                bad.append(f"{module} -> {dep}")
            elif other is not None and other != stage:
                bad.append(f"{module} -> {dep}")
    assert not bad, bad


def test_infrastructure_and_metrics_never_import_stages_or_tools():
    bad = [
        f"{m} -> {d}"
        for m, deps in _imports(top_level_only=False).items()
        if m.startswith(("selfimprove.core", "selfimprove.metrics", "selfimprove.backends", "selfimprove.tasks"))
        for d in deps
        if d.startswith(("selfimprove.stages", "selfimprove.tools", "selfimprove.loop", "selfimprove.cli"))
    ]
    assert not bad, bad


def test_no_import_cycles():
    graph = _imports(top_level_only=True)
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(d) :], d]))
            if d not in state:
                visit(d, [*trail, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_import_selfimprove_loads_no_heavy_library():
    heavy = "('torch', 'transformers', 'trl', 'datasets')"
    code = f"import sys, selfimprove, selfimprove.registry; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
