"""Execute the teaching notebooks: in the test suite and for ``make notebooks``.

Each notebook runs top to bottom in a kernel started from *this* interpreter (a kernelspec
written to a temp dir), so a fresh venv needs no installed kernel, and the kernel inherits
this process's environment (``PYTHONPATH`` included). Not imported by ``harness`` itself::

    python -m harness.course.render execute notebooks/02-nginx.ipynb
    python -m harness.course.render render            # HTML under notebooks/_build/
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/`` directory."""
    return Path(__file__).resolve().parents[2] / "notebooks"


def _kernel_spec_dir(base: Path) -> tuple[Path, str]:
    """A kernelspec that starts *this* interpreter, so a fresh venv needs no installed kernel."""
    name = "trustlab-python"
    kdir = base / "kernels" / name
    kdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "trustlab (this interpreter)",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec))
    return base / "kernels", name


def execute_notebook(path: Path, *, timeout: int = 120) -> Any:
    """Run the notebook at *path* top to bottom in a kernel of this interpreter; return the executed node.

    The kernel inherits this process's environment (``PYTHONPATH`` included) and runs in the
    notebook's directory. A failing cell raises ``nbclient.exceptions.CellExecutionError``.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # Not "trustlab-...": runner.sweep() treats that prefix as a lab directory.
    with tempfile.TemporaryDirectory(prefix="nbkernel-") as tmp:
        kernels, name = _kernel_spec_dir(Path(tmp))
        ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
        # IPC sockets in the private temp dir: nothing listens on TCP, even on loopback.
        km = KernelManager(kernel_name=name, kernel_spec_manager=ksm, transport="ipc", ip=str(Path(tmp) / "kernel-ipc"))
        # The kernel inherits this process's environment, PYTHONPATH included.
        client = NotebookClient(
            nb, km=km, timeout=timeout, kernel_name=name, resources={"metadata": {"path": str(path.parent)}}
        )
        try:
            client.execute()
        finally:
            # nbclient shuts down only kernels it started itself; this one is ours to stop.
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb


def images_without_alt(nb: Any) -> list[int]:
    """Indexes of code cells whose outputs show an image with no alt text.

    nbconvert's HTML gives a bare ``image/png`` output no alt text (and warns); notebook pictures
    go through :class:`harness.course.notebook.Picture`, an ``<img alt=...>`` in ``text/html``.
    """
    found = []
    for n, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html = str(data.get("text/html", ""))
            bare = "image/png" in data and "text/html" not in data
            if bare or re.search(r"<img(?![^>]*\balt=)", html):
                found.append(n)
    return found


def render_notebooks(src: Path | None = None, out: Path | None = None, *, timeout: int = 120) -> list[Path]:
    """Execute a copy of every ``notebooks/*.ipynb`` and write it as HTML under ``notebooks/_build/``."""
    from nbconvert import HTMLExporter

    src = Path(src) if src else notebooks_dir()
    out = Path(out) if out else src / "_build"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src.glob("[0-9][0-9]-*.ipynb")):
        nb = execute_notebook(path, timeout=timeout)
        body, _ = HTMLExporter().from_notebook_node(nb)
        target = out / f"{path.stem}.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
        print(f"wrote {target}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``execute NB...`` (exit 0 when every notebook ran) or ``render [--out DIR]``."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m harness.course.render", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run notebooks top to bottom; exit 1 on the first failing cell")
    ex.add_argument("paths", nargs="+", type=Path)
    ex.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    rd = sub.add_parser("render", help="execute copies of notebooks/*.ipynb and write HTML")
    rd.add_argument("--out", type=Path, default=None, help="default: notebooks/_build")
    rd.add_argument("--timeout", type=int, default=120)
    args = p.parse_args(argv)
    if args.command == "render":
        render_notebooks(out=args.out, timeout=args.timeout)
        return 0
    from nbclient.exceptions import CellExecutionError

    for path in args.paths:
        t0 = time.perf_counter()
        try:
            nb = execute_notebook(path, timeout=args.timeout)
        except CellExecutionError as exc:
            # Tracebacks from the kernel carry terminal colours; a log wants plain text.
            print(f"FAILED {path}: {_ANSI.sub('', str(exc))}", file=sys.stderr)
            return 1
        missing_alt = images_without_alt(nb)
        if missing_alt:
            print(
                f"FAILED {path}: cells {missing_alt} show an image without alt text; "
                "display plots with harness.plot_grid or harness.course.notebook.Picture",
                file=sys.stderr,
            )
            return 1
        print(f"ok {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":  # `make notebooks` runs: python -m harness.course.render render
    sys.exit(main())
