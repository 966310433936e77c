"""harness.runtimes.images is a package split by job behind one facade: callers import from
``harness.runtimes.images``, never a private name of it (STYLE: no private name crosses a module
boundary), and ``python -m harness.runtimes.images`` still runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import harness
from harness.runtimes import images

REPO = Path(harness.__file__).resolve().parent.parent
PACKAGE = REPO / "harness" / "images"


def _private_uses(source: str) -> list[str]:
    """``name`` for every private name of harness.runtimes.images that *source* reaches: imported from it,
    read off a name bound to it or one of its modules, or patched by dotted path."""
    tree = ast.parse(source)
    bound: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "harness":
                bound |= {a.asname or a.name for a in node.names if a.name == "images"}
            elif node.module.startswith("harness.runtimes.images"):
                found += [a.name for a in node.names if a.name.startswith("_")]
                bound |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            bound |= {a.asname for a in node.names if a.asname and a.name.startswith("harness.runtimes.images")}
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("harness.runtimes.images.")
        ):
            found += [part for part in node.value.split(".") if part.startswith("_") and part != "__main__"]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if (isinstance(base, ast.Name) and base.id in bound) or ast.unparse(base).startswith(
                "harness.runtimes.images"
            ):
                found.append(node.attr)
    return found


def test_the_checker_finds_private_uses() -> None:
    src = (
        "from harness import images as img\n"
        "from harness.runtimes.images.rootfs import _mmdebstrap\n"
        "from harness.runtimes.images import daemon\n"
        "img._get(c, 'x'); daemon._tls(d); mp.setattr('harness.runtimes.images.plan._root_entry', f)\n"
        "images._get(c, 'x')\n"  # another module's `images` name: not bound to the package here
    )
    assert sorted(_private_uses(src)) == ["_get", "_mmdebstrap", "_root_entry", "_tls"]
    assert _private_uses("from harness import images\nimages.get(c, 'x'); images.__all__\n") == []


def test_no_private_name_of_the_package_is_used_outside_it() -> None:
    offenders = {}
    for top in ("harness", "tests", "benchmarks"):
        for path in sorted((REPO / top).rglob("*.py")):
            if PACKAGE in path.parents:
                continue
            uses = _private_uses(path.read_text())
            if uses:
                offenders[str(path.relative_to(REPO))] = uses
    assert offenders == {}, "make the name public in harness/runtimes/images and import it from there"


def test_the_facade_exports_a_sorted_all_that_resolves() -> None:
    assert images.__all__ == sorted(images.__all__)
    assert [n for n in images.__all__ if not hasattr(images, n)] == []
    public = {n for n, v in vars(images).items() if not n.startswith("_") and not isinstance(v, type(images))}
    assert public - {"annotations"} <= set(images.__all__)


def test_no_function_of_the_package_runs_past_sixty_lines() -> None:
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_def and node.end_lineno and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.name}")
    assert long == []


def test_python_m_harness_images_runs_and_refuses_a_bad_command() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "harness.runtimes.images", "--help"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "build" in ok.stdout and "dockerfile-base" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "harness.runtimes.images", "bild"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "invalid choice: 'bild'" in bad.stderr
