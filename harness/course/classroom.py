"""The classroom: JupyterLab with the notebooks and trustlab in one container, labs on docker.

For a room where laptops have Docker and nothing else. The image ``trustlab/classroom:current``
(``labs/classroom/Dockerfile``) is the lab image plus JupyterLab, nbclient, the docker SDK,
trustlab and the notebooks. Its wheels are downloaded on the build machine by the host's own pip
(from the host's configured index) and copied in, so the image build itself runs without a network,
and ``trustlab images save`` carries it to the laptops with the lab image.

How the container reaches its labs, and what that costs. The notebooks start labs on the docker
runtime: the classroom container creates sibling containers (seat, worker) on internal networks
of their own, exactly as ``trustlab`` on the host does, through the docker daemon's socket
mounted into it. Whoever holds that socket can start any container, so JupyterLab in this
container is as powerful as root on the docker host (on Docker Desktop: inside its VM). That is
why JupyterLab is reachable only from the laptop itself (published on ``127.0.0.1``) and only
with a fresh random token, why the container itself joins no lab network (labs stay internal:
no egress, nothing published), and why every lab it starts carries the usual ``trustlab.lab``
label, so stopping the classroom also removes the labs it left. The alternative, docker-in-docker,
needs a ``--privileged`` container, which is worse. Where neither is acceptable, run the
notebooks on the host (``jupyter lab notebooks/``) instead.

::

    trustlab classroom [--port 8888] [--detach]   build when needed, start, print the URL
    trustlab classroom build [--force]            the image only
    trustlab classroom stop                       stop it and remove the labs it started
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import lockfile
from harness.assets import asset_dir
from harness.errors import LabError, PrerequisiteError
from harness.runtimes import dockerhost, images

IMAGE = f"{images.CLASSROOM_REPO}:{images.ALIAS}"
CONTAINER = "trustlab-classroom"
LABEL_CLASSROOM = "trustlab.classroom"
IN_CONTAINER_PORT = 8888
DEFAULT_PORT = 8888
#: hub: jupyterhub-singleuser, which the classroom server (harness/course/hub) starts in each attendee server.
EXTRAS = "notebooks,docker,hub"
#: glibc of the lab image (Debian bookworm: 2.36): the newest manylinux tag its wheels may carry.
GLIBC = (2, 36)

Progress = Callable[[str], None]


@dataclass
class Started:
    """A running classroom: where to open it and how long it took to answer."""

    container: str
    url: str
    port: int
    token: str
    start_s: float


# -- the image ---------------------------------------------------------------------------------
def project_root() -> Path:
    """The checkout trustlab runs from (its wheel is built from it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise PrerequisiteError(
            "classroom build: needs a trustlab checkout (pyproject.toml next to harness/); "
            "or load a built image: trustlab images load FILE"
        )
    return root


def _image_python(c: Any, lab_image: str) -> tuple[str, str]:
    """The lab image's Python (``3.11.2``: the patch level decides Requires-Python) and machine
    (``x86_64``), asked inside it."""
    out = c.containers.run(
        lab_image,
        ["python3", "-c", "import platform, sys; print('%d.%d.%d' % sys.version_info[:3], platform.machine())"],
        remove=True,
        network_mode="none",
    ).decode()
    version, machine = out.split()
    return version, machine


def _platform_tags(machine: str) -> list[str]:
    """Every manylinux tag the lab image's glibc accepts, for ``pip download --platform``."""
    major, newest = GLIBC
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(newest, 16, -1)]
    return [*tags, f"manylinux2014_{machine}", f"manylinux1_{machine}"]


def wheelhouse(dest: Path, *, python: str, machine: str, say: Progress) -> list[Path]:
    """Download trustlab's wheel and its dependencies for the image's Python into *dest*.

    The host's pip does it, from the host's configured index (pip.conf, PIP_INDEX_URL ...), for
    the image's interpreter and platform, wheels only (the image has no compiler)."""
    root = project_root()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    say(f"trustlab wheel from {root}")
    _pip([*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), str(root)])
    (wheel,) = dest.glob("trustlab-*.whl")
    say(f"wheels for Python {python} on {machine} (host's pip index)")
    platforms = [arg for tag in _platform_tags(machine) for arg in ("--platform", tag)]
    _pip(
        [
            *pip,
            "download",
            "--dest",
            str(dest),
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *platforms,
            *lockfile.write_constraints(dest.parent),
            f"{wheel}[{EXTRAS}]",
            "pip",
        ]
    )
    return sorted(dest.glob("*.whl"))


def _pip(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise LabError(f"classroom build: pip failed (exit {proc.returncode}): {' | '.join(tail)}")


def inputs(lab_id: str) -> str:
    """What the classroom image is made of: the lab image, the sources, the notebooks."""
    root = project_root()
    parts: list[str | bytes] = ["classroom-v1", lab_id, platform.machine()]
    parts.append((asset_dir("labs") / "classroom" / "Dockerfile").read_bytes())
    parts.append((root / "pyproject.toml").read_bytes())
    for base in (root / "harness", root / "labs", root / "scenarios", root / "notebooks"):
        for path in sorted(base.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and "_build" not in path.parts:
                parts += [str(path.relative_to(root)), path.read_bytes()]
    return images.digest(*parts)


def build(*, progress: Progress | None = None, force: bool = False) -> images.BuildResult:
    """Build ``trustlab/classroom:current`` on the lab image (a no-op when its inputs are unchanged)."""
    say = progress or images.stderr_progress()
    t0 = time.perf_counter()
    c = images.client(timeout=900)
    lab = images.get(c, images.lab_image())
    if lab is None:
        raise PrerequisiteError(
            f"classroom: {images.lab_image()} is missing; run: trustlab images build (or images load FILE)"
        )
    digest = inputs(lab.id)
    versions = images.image_versions_of(c, lab)
    if not force:
        for img in c.images.list(
            filters={"label": [f"{images.LABEL_KIND}=classroom", f"{images.LABEL_INPUTS}={digest}"]}
        ):
            _tag(img, versions)
            say(f"up to date: {IMAGE} (inputs {digest[:12]})")
            return images.BuildResult(IMAGE, [IMAGE], versions, True, time.perf_counter() - t0)
    steps: dict[str, float] = {}
    python, machine = _image_python(c, images.lab_image())
    with tempfile.TemporaryDirectory(prefix="trustlab-classroom-") as tmp:
        t = time.perf_counter()
        wheels = wheelhouse(Path(tmp), python=python, machine=machine, say=say)
        steps["wheels_s"] = time.perf_counter() - t
        say(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.0f} MB")
        context = _context(wheels)
    t = time.perf_counter()
    say(f"docker build {IMAGE} on {images.lab_image()} (no network)")
    try:
        img, _ = c.images.build(
            fileobj=context,
            custom_context=True,
            buildargs={"LAB_IMAGE": lab.id},
            labels={
                images.LABEL_KIND: "classroom",
                images.LABEL_INPUTS: digest,
                images.LABEL_VERSIONS: json.dumps(versions, sort_keys=True),
            },
            network_mode="none",
            rm=True,
            forcerm=True,
        )
    except Exception as exc:  # BuildError carries the log; APIError a one-liner
        log = getattr(exc, "build_log", None) or []
        lines = [str(x.get("stream") or x.get("error") or "").strip() for x in log]
        raise LabError(f"classroom build failed: {exc}; {' | '.join(ln for ln in lines if ln)[-600:]}") from None
    steps["docker_build_s"] = time.perf_counter() - t
    _tag(img, versions)
    with contextlib.suppress(Exception):
        c.images.prune(filters={"dangling": True, "label": f"{images.LABEL_KIND}=classroom"})
    duration = time.perf_counter() - t0
    say(f"built {IMAGE} in {duration:.1f}s ({img.attrs['Size'] / 1e6:.0f} MB)")
    return images.BuildResult(IMAGE, [IMAGE], versions, False, duration, steps)


def _tag(img: Any, versions: dict[str, str]) -> None:
    for tag in (images.ALIAS, images.version_tag(versions)):
        if f"{images.CLASSROOM_REPO}:{tag}" not in img.tags:
            img.tag(images.CLASSROOM_REPO, tag)


def _context(wheels: list[Path]) -> io.BytesIO:
    """The build context: the Dockerfile, wheels/, notebooks/ (committed notebooks only)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(asset_dir("labs") / "classroom" / "Dockerfile", arcname="Dockerfile")
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}")
        nb = asset_dir("notebooks")
        for path in sorted(nb.iterdir()):
            if path.suffix == ".ipynb" or path.name == "README.md":
                tar.add(path, arcname=f"notebooks/{path.name}")
    buf.seek(0)
    return buf


# -- running it -----------------------------------------------------------------------------------
def start(
    *, port: int = DEFAULT_PORT, progress: Progress | None = None, timeout: float = 120, name: str = CONTAINER
) -> Started:
    """Start the classroom container; return once JupyterLab answers on 127.0.0.1.

    Args:
        port: the host port on 127.0.0.1 (0: any free one).
        name: the container's name (tests use their own).
    """
    say = progress or images.stderr_progress()
    c = images.client()
    if images.get(c, IMAGE) is None:
        raise PrerequisiteError(f"classroom: {IMAGE} is missing; run: trustlab classroom build (or images load FILE)")
    daemon = dockerhost.find()
    if daemon.url.startswith("tcp://"):
        raise PrerequisiteError(
            f"classroom: the daemon is at {daemon.url}; the classroom container drives it through its socket, "
            "so it needs a local daemon (unix socket or Docker Desktop)"
        )
    import docker.errors

    try:
        old = c.containers.get(name)
    except docker.errors.NotFound:
        pass
    else:
        if old.status == "running":
            raise LabError(f"classroom: {name} is already running; stop it first: trustlab classroom stop")
        old.remove(force=True)
    token = secrets.token_urlsafe(24)
    sock = dockerhost.mount_source(daemon)
    t0 = time.perf_counter()
    ct = c.containers.run(
        IMAGE,
        name=name,
        detach=True,
        init=True,
        labels={LABEL_CLASSROOM: name},
        environment={"JUPYTER_TOKEN": token},
        ports={f"{IN_CONTAINER_PORT}/tcp": ("127.0.0.1", port or None)},
        volumes={sock: {"bind": "/var/run/docker.sock", "mode": "rw"}},
    )
    try:
        ct.reload()
        bound = int(ct.attrs["NetworkSettings"]["Ports"][f"{IN_CONTAINER_PORT}/tcp"][0]["HostPort"])
        _wait_ready(ct, bound, token, timeout)
    except BaseException:
        stop(name=name)
        raise
    start_s = time.perf_counter() - t0
    url = f"http://127.0.0.1:{bound}/lab?token={token}"
    say(f"JupyterLab answers after {start_s:.1f}s")
    return Started(name, url, bound, token, start_s)


def _wait_ready(ct: Any, port: int, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/status"
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        ct.reload()
        if ct.status not in ("created", "running"):
            break
        time.sleep(0.2)
    tail = ct.logs(tail=5).decode(errors="replace").strip().splitlines()
    raise LabError(f"classroom: JupyterLab did not answer on 127.0.0.1:{port} ({ct.status}): {' | '.join(tail)}")


def stop(*, name: str = CONTAINER) -> list[str]:
    """Stop and remove the classroom container and every lab it started; return what went."""
    from harness.runtimes import docker as dockerrt

    c = images.client()
    import docker.errors

    try:
        ct = c.containers.get(name)
    except docker.errors.NotFound:
        return []
    hostname = str(ct.attrs.get("Config", {}).get("Hostname") or ct.id[:12])
    ct.remove(force=True)
    return [name, *dockerrt.down_owned_by(hostname, client=c)]


def run(*, port: int = DEFAULT_PORT, detach: bool = False, say: Callable[[str], None] = print) -> int:
    """``trustlab classroom``: build when needed, start, print the URL; stay until Ctrl-C unless *detach*."""
    try:
        project_root()
    except PrerequisiteError:
        if images.get(images.client(), IMAGE) is None:
            raise
        say(f"  using {IMAGE} as it is (no checkout here to build it from)")
    else:
        build(progress=lambda line: say(f"  {line}"))
    started = start(port=port, progress=lambda line: say(f"  {line}"))
    say(f"classroom up: open {started.url}")
    say("  (listening on 127.0.0.1 only; the labs of its notebooks run on this docker daemon)")
    if detach:
        say("  stop it: trustlab classroom stop")
        return 0
    say("  Ctrl-C stops it and removes the labs it started")
    try:
        while images.client().containers.get(started.container).status == "running":
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(name=started.container)
    return 0
