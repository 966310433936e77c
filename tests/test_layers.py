"""The package's architecture, read from its static import graph (imports inside functions and
under ``if TYPE_CHECKING`` count: a type-level arrow is an arrow).

* no import circle;
* the declared layers, bottom first (:data:`LAYERS`): a module imports only its own layer or
  below, and every module has a layer;
* no private name (``_x``) of a harness module is used by another one: what crosses a module
  boundary is public.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import harness

ROOT = Path(harness.__file__).resolve().parent

#: Bottom first. Folders are roles: proxies/ (drivers, installations), configs/ (parsers,
#: adapters, rules), runtimes/ (the lab: seat, sandbox, workers, local/docker/remote, images),
#: report/ (terminal, pictures, pages), course/ (challenges, notebooks, classroom).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "harness.errors",
            "harness.vocab",
            "harness.versions",
            "harness.processes",
            "harness.assets",
            "harness.lockfile",
            "harness.runtimes",
        ),
    ),
    (
        "data and what runs in a lab",
        (
            "harness.results",
            "harness.pki",
            "harness.proxies",
            "harness.proxies.*",
            "harness.runtimes.sandbox",
            "harness.runtimes.limits",
            "harness.runtimes.tether",
            "harness.runtimes.seat",
            "harness.runtimes.probe",
            # What the results page says of a conformance case (the page and the run both read it).
            "harness.conformance.notes",
        ),
    ),
    ("scenarios and configs", ("harness.scenarios", "harness.verdicts", "harness.configs", "harness.configs.*")),
    # The typed job a worker is handed and the events it writes back (built from scenarios).
    ("lab workers", ("harness.runtimes.contract", "harness.runtimes.nsworker", "harness.runtimes.dockerworker")),
    ("runtimes", ("harness.runtimes.*",)),
    # proxies/install is `trustlab proxies install`: it builds Debian roots with the images' tools.
    (
        "the lab's commands",
        ("harness.runner", "harness.check", "harness.held", "harness.audit", "harness.proxies.install"),
    ),
    ("presentation", ("harness.report", "harness.report.*")),
    ("course and conformance", ("harness.conformance", "harness.conformance.*", "harness.course", "harness.course.*")),
    (
        "entry points",
        ("harness", "harness.cli", "harness.doctor", "harness.canary", "harness.pytest_plugin", "harness.__main__"),
    ),
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(("harness", *path.relative_to(ROOT).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Module -> the harness modules it imports anywhere (top level, in a function, for types)."""
    mods = _modules()
    texts = sources if sources is not None else {name: path.read_text() for name, path in mods.items()}
    known = {**mods, **dict.fromkeys(texts)}
    graph: dict[str, set[str]] = {}
    for name, text in texts.items():
        found = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            found |= {_resolve(t, known) for t in targets if t.startswith("harness")}  # type: ignore[arg-type]
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
        for w in graph.get(v, ()):
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


def _layer(module: str) -> int | None:
    """The index of *module*'s layer: its most specific pattern decides."""
    best: tuple[int, int] | None = None
    for i, (_, patterns) in enumerate(LAYERS):
        for pat in patterns:
            if fnmatch.fnmatchcase(module, pat) and (best is None or len(pat) > best[1]):
                best = (i, len(pat))
    return best[0] if best else None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for a, targets in graph.items():
        for b in targets:
            la, lb = _layer(a), _layer(b)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]})")
    return sorted(out)


def _private_uses(sources: dict[str, str]) -> list[str]:
    """``module: uses other._name``: each private name (or private module) of a harness module
    used by another module: ``from x import _y``, ``import x._y``, or ``x._y`` on an imported
    module."""
    mods = {**_modules(), **dict.fromkeys(sources)}
    out = []
    for name, text in sources.items():
        aliases: dict[str, str] = {}
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("harness"):
                        out += [f"{name}: imports {a.name}" for part in a.name.split(".") if _private(part)]
                        aliases[a.asname or a.name.split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
                if any(_private(part) for part in node.module.split(".")):
                    out.append(f"{name}: imports from {node.module}")
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if _private(a.name):
                        out.append(f"{name}: imports {full}")
                    elif full in mods:
                        aliases[a.asname or a.name] = full
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
                owner = aliases.get(node.value.id)
                if owner and owner != name:
                    out.append(f"{name}: uses {owner}.{node.attr}")
    return sorted(set(out))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _sources() -> dict[str, str]:
    return {name: path.read_text() for name, path in _modules().items()}


def test_no_import_circle_even_at_type_level() -> None:
    assert _cycles(_graph()) == [], "an import runs back up: break it (a protocol for the types it needs)"


def test_every_module_has_a_layer_and_no_import_runs_up_one() -> None:
    graph = _graph()
    assert [m for m in graph if _layer(m) is None] == [], "give each new module its layer in LAYERS"
    assert _upward(graph) == []


def test_no_private_name_crosses_modules() -> None:
    assert _private_uses(_sources()) == [], "make the name public, or keep its use inside its module"


def test_the_checks_find_what_they_look_for() -> None:
    """Each check, on a small package that breaks it: they cannot pass by finding nothing."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _upward({"harness.vocab": {"harness.runner"}, "harness.runner": {"harness.vocab"}}) == [
        "harness.vocab (foundation) imports harness.runner (the lab's commands)"
    ]
    sources = {
        "harness.zz_a": "from harness.zz_b import _hidden\nimport harness.zz_b as b\nb._peek()\n",
        "harness.zz_b": "def _hidden(): ...\ndef _peek(): ...\n_hidden()\n",
        "harness.zz_c": "from harness.runtimes import _worker\n",
    }
    assert _private_uses(sources) == [
        "harness.zz_a: imports harness.zz_b._hidden",
        "harness.zz_a: uses harness.zz_b._peek",
        "harness.zz_c: imports harness.runtimes._worker",
    ]
    assert _graph(
        {"harness.zz_t": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness import runner\n"}
    )["harness.zz_t"] == {"harness.runner"}


def test_results_sit_below_the_runner_and_presentation() -> None:
    graph = _graph()
    # harness.versions (version numbers and prefixes, issue 15) is as low as vocab: it imports nothing.
    assert graph["harness.results"] <= {"harness.vocab", "harness.versions"}
    assert not graph["harness.versions"]
    for user in ("harness.runner", "harness.report", "harness.verdicts", "harness.course.notebook"):
        assert "harness.results" in graph[user], user
    # Nothing a lab worker runs imports the layers above it (the docker lab has no trustme).
    above = {"harness.runner", "harness.report", "harness.verdicts", "harness.course.notebook", "harness.cli"}
    for worker in ("harness.runtimes.nsworker", "harness.runtimes.dockerworker", "harness.runtimes.contract"):
        assert not graph[worker] & above, worker
