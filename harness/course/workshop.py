"""``trustlab workshop``: an attendee's preflight, and the instructor's offline bundle.

``preflight`` says READY or exactly what to fix: the runtime (the proxies, namespaces; docker
and its image when that is the runtime), the state directory, and a smoke run that grades one
challenge per proxy on the real servers (the solution must be SOLVED, a starting config not).

``bundle DIR`` writes the offline kit::

    DIR/README.md             what to run on each laptop
    DIR/wheelhouse/           trustlab and every dependency, for pip install --no-index --find-links
    DIR/trustlab-images.tar   the docker image (when docker and the image are on this machine)
    DIR/notebooks/            the notebooks, and their rendered HTML
    DIR/docs/                 INSTRUCTOR.md and the project README
    DIR/manifest.json         every file with its size and sha256

It is written to ``DIR.partial`` and renamed at the end: an interrupted bundle leaves nothing
that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, lockfile
from harness.errors import LabError

#: One warm-up per proxy: its solution must be SOLVED and (for the first) its start "not yet".
SMOKE = ("nginx-ca-without-verify", "apache-verify-none", "haproxy-verify-none")


@dataclass
class PreflightReport:
    ready: bool
    lines: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def preflight(*, runtime: str = "auto") -> PreflightReport:
    """Check this machine for a workshop; every problem is one ``FIX`` line saying what to do."""
    from harness.course import challenges
    from harness.proxies import driver
    from harness.runtimes.local import check_namespaces

    t0 = time.perf_counter()
    lines: list[str] = [f"trustlab {__version__} workshop preflight"]
    fixes = 0

    def ok(msg: str) -> None:
        lines.append(f"  ok    {msg}")

    def fix(msg: str) -> None:
        nonlocal fixes
        fixes += 1
        lines.append(f"  FIX   {msg}")

    local_ok = True
    if runtime in ("auto", "local"):
        apt = {"nginx": "nginx", "apache": "apache2", "haproxy": "haproxy"}
        missing = [k for k in apt if not driver(k).find_binary()]
        for tool, pkg in (("unshare", "util-linux"), ("ip", "iproute2")):
            if not shutil.which(tool):
                missing.append(tool)
                apt[tool] = pkg
        problem = None if any(t in missing for t in ("unshare", "ip")) else check_namespaces()
        local_ok = not missing and not problem
        if local_ok:
            ok("local runtime: nginx, apache, haproxy and private namespaces")
        elif runtime == "local":
            if missing:
                fix(
                    f"local runtime: install {', '.join(missing)}: sudo apt-get install "
                    + " ".join(apt[m] for m in missing)
                )
            if problem:
                fix(f"local runtime: {problem}")
    chosen = "local" if runtime == "auto" and local_ok else runtime
    if chosen in ("auto", "docker"):
        try:
            from harness.runtimes import images

            ready, why = images.docker_ready()
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            ready, why = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if ready:
            ok(f"docker runtime: {why}")
            chosen = "docker"
        else:
            fix(
                f"docker runtime: {why} (start Docker; then `trustlab images load trustlab-images.tar` "
                "from the workshop bundle, or `trustlab images build`)"
            )
            if runtime == "auto":
                fix("or, on Linux: sudo apt-get install nginx apache2 haproxy (the local runtime)")
    try:
        directory = challenges.state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".preflight"
        probe.write_text("ok\n")
        probe.unlink()
        ok(f"progress is kept in {directory}")
    except OSError as exc:
        fix(f"state directory {challenges.state_dir()}: {exc.strerror}; set TRUSTLAB_STATE_DIR to a writable one")
    if not fixes:
        try:
            for n, cid in enumerate(SMOKE):
                ch = challenges.get(cid)
                g = challenges.grade(ch, ch.solution_file, runtime=chosen)
                if not g.solved:
                    why = g.rejected or "; ".join(
                        f"{f['identity']} {f['outcome']}: {f['reason']}" for f in g.failures[:2]
                    )
                    fix(f"smoke run: {ch.proxy.value} did not grade {cid}'s solution SOLVED: {why}")
                    continue
                if n == 0 and challenges.grade(ch, ch.start_file, runtime=chosen).solved:
                    fix(f"smoke run: {ch.proxy.value} graded {cid}'s broken start SOLVED (impostors not refused)")
                    continue
                ok(f"smoke run: {ch.proxy.value} graded {cid} on the real server ({g.duration_s:.2f} s)")
        except LabError as exc:
            fix(f"smoke run: {exc}")
    dt = time.perf_counter() - t0
    if fixes:
        lines.append(f"NOT READY: fix the {fixes} FIX line(s) above, then run trustlab workshop preflight again")
    else:
        lines.append(f"READY ({chosen} runtime, {dt:.1f} s). Next: trustlab challenge list")
    return PreflightReport(ready=not fixes, lines=lines, duration_s=dt)


# -- bundle ----------------------------------------------------------------------------------
@dataclass
class BundleResult:
    path: Path
    parts: list[str]
    size_mb: float


_README = """# trustlab workshop kit (trustlab {version})

Everything an attendee needs, without network access.

## Which laptops this kit installs on

The wheelhouse carries wheels for **{where}** only: compiled dependencies come as wheels for one
platform and one Python version. `./install.sh` checks this laptop first and refuses clearly elsewhere.

    ./install.sh                                     # a venv in trustlab-venv/, from wheelhouse/ only
    trustlab-venv/bin/trustlab workshop preflight    # READY, or one FIX line per problem

Linux with nginx, apache2 and haproxy installed uses the local runtime; with Docker, load the image
first: `trustlab-venv/bin/trustlab images load trustlab-images.tar`.

## macOS, Windows, or another Python: the classroom image

With Docker Desktop and the image in this kit (`trustlab-images.tar`, when the instructor built it
with the classroom image), no Python is needed on the laptop:

    docker load -i trustlab-images.tar
    docker run --rm -p 127.0.0.1:8888:8888 trustlab/classroom:current

and open the URL it prints: JupyterLab with the notebooks, the challenges and trustlab inside.

## Then

    trustlab challenge list
    trustlab challenge start nginx-ca-without-verify
    trustlab challenge check nginx-ca-without-verify

The notebooks are in notebooks/ (rendered HTML in notebooks/html/); the instructor's guide is
docs/INSTRUCTOR.md.

## Contents

{contents}
"""

#: install.sh: the wheelhouse installs only where its wheels were built for (issue 21); the
#: platform and Python are checked first, with one line saying what to use instead.
_INSTALL = """#!/bin/sh
# Install trustlab from wheelhouse/ into trustlab-venv/, offline: only on {where}.
set -eu
cd "$(dirname "$0")"
os=${{TRUSTLAB_KIT_OS:-$(uname -s)}}
arch=${{TRUSTLAB_KIT_ARCH:-$(uname -m)}}
py=${{PYTHON:-python3}}
pyver=${{TRUSTLAB_KIT_PYTHON:-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)}}
case " {platforms} " in *" $os-$arch "*) ;; *)
    echo "install.sh: this wheelhouse is for {where}; this is $os $arch: use the classroom image (README.md)" >&2
    exit 2;;
esac
case " {pythons} " in *" $pyver "*) ;; *)
    echo "install.sh: this wheelhouse is for Python {pythons}; $py is $pyver:" \\
         "install that Python, or use the classroom image (README.md)" >&2
    exit 2;;
esac
"$py" -m venv trustlab-venv
trustlab-venv/bin/pip install -q --no-index --find-links wheelhouse 'trustlab{extras}'
echo "installed: trustlab-venv/bin/trustlab (next: trustlab-venv/bin/trustlab workshop preflight)"
"""

_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "arm64"}


def _platform_of(tag: str) -> str:
    """``OS-arch`` as ``uname -sm`` says it, for one wheel platform tag."""
    system = (
        "Linux"
        if tag.startswith(("manylinux", "musllinux", "linux"))
        else ("Darwin" if tag.startswith("macosx") else "Windows" if tag.startswith("win") else tag)
    )
    arch = next((v for k, v in _ARCH.items() if tag.endswith(k)), tag.rsplit("_", 1)[-1])
    return f"{system}-{arch}"


def wheel_targets(wheels: list[Path]) -> tuple[list[str], list[str]]:
    """(``OS-arch`` as ``uname -sm`` says it, ``X.Y`` Python versions) every binary wheel carries.

    A pure wheel (``py3-none-any``) runs anywhere; the binary ones decide where the wheelhouse
    installs: the platforms and CPython versions common to all of them."""
    platforms: set[str] | None = None
    pythons: set[str] | None = None
    for wheel in wheels:
        parts = wheel.name[:-4].split("-")
        if len(parts) < 5:
            continue
        py, abi, plat = parts[-3], parts[-2], parts[-1]
        if plat == "any":
            continue
        mine = {_platform_of(tag) for tag in plat.split(".")}
        platforms = mine if platforms is None else platforms & mine
        vers = {f"{t[2]}.{t[3:]}" for t in py.split(".") if t.startswith("cp") and len(t) > 3}
        if abi == "abi3" and vers:
            low = min(vers, key=lambda v: tuple(map(int, v.split("."))))
            vers = {f"3.{m}" for m in range(int(low.split(".")[1]), 15)}
        if vers:
            pythons = vers if pythons is None else pythons & vers
    return sorted(platforms or ()), sorted(pythons or (), key=lambda v: tuple(map(int, v.split("."))))


def _where(platforms: list[str], pythons: list[str]) -> str:
    plat = ", ".join(p.replace("-", " ") for p in platforms) or "any platform"
    return f"{plat} with Python {' or '.join(pythons) if pythons else '3'}"


def _checkout() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise LabError("workshop bundle: run it from a trustlab checkout (pip wheel builds trustlab from its source)")
    return root


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: In a wheel: the marker that says the kit ships no solutions (read by :mod:`harness.course.challenges`).
SCORED_MARKER = "harness/_data/labs/challenges/SCORED"
_SOLUTION = re.compile(r"^harness/_data/labs/challenges/[^/]+/solution/")


def strip_solutions(wheel: Path) -> int:
    """Rewrite *wheel* without the challenges' reference solutions (and with the scored-kit
    marker), its RECORD recomputed; returns how many files were left out."""
    import base64
    import zipfile

    tmp = wheel.with_name(wheel.name + ".tmp")
    dropped, record_name, rows = 0, "", []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if _SOLUTION.match(info.filename):
                dropped += 1
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info.filename
                continue
            data = src.read(info)
            dst.writestr(info, data)
            rows.append((info.filename, data))
        marker = b"This kit is for a scored workshop: it ships no reference solutions.\n"
        dst.writestr(SCORED_MARKER, marker)
        rows.append((SCORED_MARKER, marker))

        def digest(data: bytes) -> str:
            return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

        record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in rows)
        dst.writestr(record_name or "RECORD", record + f"{record_name},,\n")
    os.replace(tmp, wheel)
    return dropped


def bundle(
    target: Path,
    *,
    images: bool = True,
    notebooks: bool = True,
    extras: tuple[str, ...] = ("docker", "notebooks"),
    scored: bool = False,
    say: Callable[[str], None] = lambda s: None,
) -> BundleResult:
    """Write the offline workshop kit to *target* (a new or empty directory); see the module doc.

    *scored*: the kit of a scored workshop (:mod:`harness.course.scoring`): its trustlab wheel carries no
    reference solutions and the instructor's guide (the answers) stays out.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LabError(f"{target}: exists and is not an empty directory; choose a new one")
    if not target.parent.is_dir():
        raise LabError(f"{target}: directory {target.parent} does not exist")
    root = _checkout()
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    parts: list[str] = []
    try:
        spec = f"{root}[{','.join(extras)}]" if extras else str(root)
        say(f"wheelhouse: pip wheel {spec}")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(work / "wheelhouse"),
                *lockfile.write_constraints(work),
                spec,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise LabError(f"workshop bundle: pip wheel failed: {tail[0]}")
        parts.append(f"wheelhouse ({len(list((work / 'wheelhouse').glob('*.whl')))} wheels)")
        if scored:
            for wheel in (work / "wheelhouse").glob("trustlab-*.whl"):
                n = strip_solutions(wheel)
                say(f"scored kit: {n} reference solution(s) left out of {wheel.name}")
            parts.append("no solutions (scored)")
        if images:
            try:
                from harness.runtimes import images as img

                ready, why = img.docker_ready()
            except Exception as exc:  # noqa: BLE001 - the image is optional in the kit
                ready, why = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if ready:
                say("image: trustlab images save")
                img.save(work / "trustlab-images.tar", progress=say)
                parts.append("trustlab-images.tar")
            else:
                say(f"image: left out ({why})")
        if notebooks:
            src = root / "notebooks"
            dest = work / "notebooks"
            dest.mkdir()
            for nb in sorted(src.glob("*.ipynb")) + [src / "README.md"]:
                if nb.is_file():
                    shutil.copy2(nb, dest / nb.name)
            (dest / "html").mkdir()
            sources = sorted(src.glob("[0-9][0-9]-*.ipynb"))
            built = [src / "_build" / f"{nb.stem}.html" for nb in sources]  # `make notebooks` output
            if sources and all(
                h.is_file() and h.stat().st_mtime >= nb.stat().st_mtime for h, nb in zip(built, sources, strict=True)
            ):
                for html in built:
                    shutil.copy2(html, dest / "html" / html.name)
            else:
                from harness.course.render import render_notebooks

                say("notebooks: executing and rendering them")
                built = render_notebooks(src, dest / "html")
            parts.append(f"notebooks ({len(built)} rendered)")
        (work / "docs").mkdir()
        guides = (root / "docs" / "reference.md", root / "README.md")
        for doc in guides if scored else (root / "docs" / "INSTRUCTOR.md", *guides):
            if doc.is_file():
                shutil.copy2(doc, work / "docs" / doc.name)
        parts.append("guide")
        files = sorted(p for p in work.rglob("*") if p.is_file())
        manifest: dict[str, dict[str, Any]] = {
            str(p.relative_to(work)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files
        }
        contents = "\n".join(
            f"- {name} ({m['bytes'] / 1e6:.2f} MB)"
            for name, m in manifest.items()
            if "/" not in name or name.startswith(("docs/", "notebooks/html/")) or name.endswith(".tar")
        )
        extra = f"[{','.join(extras)}]" if extras else ""
        platforms, pythons = wheel_targets(sorted((work / "wheelhouse").glob("*.whl")))
        where = _where(platforms, pythons)
        (work / "README.md").write_text(_README.format(version=__version__, where=where, contents=contents))
        install = work / "install.sh"
        install.write_text(
            _INSTALL.format(where=where, platforms=" ".join(platforms) or "*", pythons=" ".join(pythons), extras=extra)
        )
        install.chmod(0o755)
        (work / "manifest.json").write_text(json.dumps({"trustlab": __version__, "files": manifest}, indent=2) + "\n")
        if target.exists():
            target.rmdir()
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return BundleResult(target, parts, size / 1e6)
