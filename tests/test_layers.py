"""The package's layers: no import circle (counting imports inside functions), and the data
types below everything that makes or shows them."""

from __future__ import annotations

import ast
from pathlib import Path

import harness

ROOT = Path(harness.__file__).resolve().parent


def _graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports anywhere (top level or in a function); imports
    under ``if TYPE_CHECKING`` are not imports at run time."""
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(("harness", *path.relative_to(ROOT).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            found |= {resolve(t) for t in targets if t.startswith("harness")}
        graph[name] = found - {name, "harness", ""}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            groups.append(sorted([v, *group]))

    for v in graph:
        if v not in index:
            visit(v)
    return [g for g in groups if len(g) > 1]


def test_no_import_circle() -> None:
    # A proxy module needs Scenario for its annotations only: import it under TYPE_CHECKING
    # (harness.scenarios asks the registry which directives a kind takes).
    assert _cycles(_graph()) == [], "an import runs back up: break it (see harness/proxies/nginx.py)"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_results_sit_below_the_runner_and_presentation() -> None:
    graph = _graph()
    assert graph["harness.results"] <= {"harness.vocab"}
    for user in ("harness.runner", "harness.report", "harness.verdicts", "harness.notebook"):
        assert "harness.results" in graph[user], user
    # Nothing a lab worker runs imports the layers above it (the docker lab has no trustme).
    above = {"harness.runner", "harness.report", "harness.verdicts", "harness.notebook", "harness.cli"}
    for worker in ("harness.runtimes._nsworker", "harness.runtimes._dockerworker", "harness.runtimes.contract"):
        assert not graph[worker] & above, worker
