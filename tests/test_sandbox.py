"""Hostile configs against the proxy sandbox (harness/runtimes/sandbox.py), on both runtimes.

Each payload is a real config that, run by a real proxy as root on the host, does harm: runs a
command, leaks a root-only file or an environment secret into trustlab's output, writes outside
its lab, or reaches a listener on a host unix socket or host loopback. The host side is real
too: a marker directory, a root-only (0600) secret file in it, a secret in trustlab's own
environment, a unix socket listener in the marker directory and a TCP listener on the host's
127.0.0.1. After a run nothing may have run, leaked, been written or been reached.

The tests can fail: ``test_payloads_do_harm_unconfined`` runs the same corpus with the sandbox
switched off (``LocalRuntime(sandbox=False)``, an opt-out only the tests and the benchmark use)
and shows the harm each payload does then.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.runtimes import sandbox
from harness.runtimes.contract import ProxyEvent
from harness.scenarios import Scenario
from harness.vocab import Outcome, ProxyKind

MODULES = "/usr/lib/apache2/modules"
TOKEN_VAR = "TRUSTLAB_TEST_TOKEN"


@dataclass
class Host:
    """What a payload would harm: all of it real, on the host, outside any lab."""

    dir: Path
    secret_file: Path
    secret: str
    token: str
    sock: Path
    port: int
    shadow: str
    unix_hits: list[bytes] = field(default_factory=list)
    tcp_hits: list[bytes] = field(default_factory=list)
    planted: set[str] = field(default_factory=set)

    def written(self) -> list[str]:
        """Files in the marker directory that the test did not put there."""
        return sorted(p.name for p in self.dir.iterdir() if p.name not in self.planted)

    def leaks(self, text: str) -> list[str]:
        found = [w for w, s in (("secret file", self.secret), ("environment token", self.token)) if s in text]
        if self.shadow and self.shadow in text:
            found.append("/etc/shadow")
        return found


def _listen(sock: socket.socket, hits: list[bytes]) -> None:
    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    hits.append(conn.recv(4096) or b"(connected)")
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npwnd")
                except OSError:
                    hits.append(b"(connected)")

    threading.Thread(target=serve, daemon=True).start()


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("the payload corpus shows what a payload does as root; run as root")
    # Short, under /tmp: HAProxy's stats socket path (plus its ".PID.tmp" while it binds) must fit
    # a unix socket's 108 bytes, and under xdist tmp_path is longer (.../popen-gw0/...): there the
    # unconfined control never wrote its socket.
    d = Path(tempfile.mkdtemp(prefix="tl-host-", dir="/tmp"))
    d.chmod(0o755)
    secret = f"trustlab-secret-{secrets.token_hex(8)}"
    secret_file = d / "secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    token = f"trustlab-token-{secrets.token_hex(8)}"
    monkeypatch.setenv(TOKEN_VAR, token)
    try:
        shadow = Path("/etc/shadow").read_text().splitlines()[0]
    except (OSError, IndexError):
        shadow = ""
    lua = d / "pwn.lua"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(d / "host.sock"))
    unix.listen(16)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    h = Host(d, secret_file, secret, token, d / "host.sock", tcp.getsockname()[1], shadow)
    lua.write_text(
        f'os.execute("touch {d}/ran-haproxy-lua")\n'
        f'local f = io.open("{secret_file}"); local s = f:read("*a"); f:close()\n'
        f'core.Alert("lua read: " .. s)\n'
    )
    h.planted = {"secret", "pwn.lua", "host.sock"}
    _listen(unix, h.unix_hits)
    _listen(tcp, h.tcp_hits)
    try:
        yield h
    finally:
        unix.close()
        tcp.close()
        shutil.rmtree(d, ignore_errors=True)


def _sc(proxy: str, case: str, config: str, config_http: str = "") -> Scenario:
    return Scenario(
        id=f"{proxy}/payload-{case}",
        proxy=ProxyKind(proxy),
        title=f"payload {case}",
        description="",
        control=None,
        sources=(),
        target="name",
        sni_routing=False,
        directives=(),
        expected={"legit": Outcome.SERVED},
        config=config,
        config_http=config_http,
    )


def corpus(h: Host) -> dict[str, tuple[Scenario, str]]:
    """Payload id -> (scenario with the raw config, the harm it does unconfined)."""
    d, s = h.dir, h.secret_file
    up = "{upstream}"
    cases = {
        # -- Apache ------------------------------------------------------------------------
        "apache-piped-log": (
            _sc(
                "apache",
                "piped-log",
                f"ProxyPass / {up}/\nErrorLog \"|/bin/sh -c 'touch {d}/ran-apache-pipe; exec cat >/dev/null'\"",
            ),
            "ran",
        ),
        "apache-define-piped-log": (
            _sc(
                "apache",
                "define-piped-log",
                f"ProxyPass / {up}/\nDefine TLX ErrorLog\n"
                f"${{TLX}} \"|/bin/sh -c 'touch {d}/ran-apache-define; exec cat >/dev/null'\"",
            ),
            "ran",
        ),
        "apache-loadmodule-rewritemap-prg": (
            _sc(
                "apache",
                "rewritemap-prg",
                f"ProxyPass / {up}/\n</VirtualHost>\n"
                f"LoadModule rewrite_module {MODULES}/mod_rewrite.so\nRewriteEngine On\n"
                f"RewriteMap pwn \"prg:/bin/sh -c 'touch {d}/ran-apache-prg; exec cat'\"\n"
                "<VirtualHost 127.0.0.1:1>",
            ),
            "ran",
        ),
        "apache-include-secret": (_sc("apache", "include-secret", f"ProxyPass / {up}/\nInclude {s}"), "leak"),
        "apache-env-secret": (_sc("apache", "env-secret", f'Error "token=${{{TOKEN_VAR}}}"'), "leak"),
        "apache-host-unix-socket": (
            _sc("apache", "unix-socket", f'ProxyPass / "unix:{h.sock}|http://localhost/"'),
            "unix",
        ),
        "apache-host-loopback": (_sc("apache", "loopback", f"ProxyPass / http://127.0.0.1:{h.port}/"), "tcp"),
        "apache-write-outside": (
            _sc("apache", "write-outside", f"ProxyPass / {up}/\nErrorLog {d}/written-apache.log"),
            "written",
        ),
        # -- HAProxy -----------------------------------------------------------------------
        "haproxy-lua-load-per-thread": (
            _sc(
                "haproxy",
                "lua",
                f"server be {{backend}}:{{port}} ssl verify none\nglobal\n    lua-load-per-thread {d}/pwn.lua",
            ),
            "ran",
        ),
        "haproxy-program": (
            _sc(
                "haproxy",
                "program",
                "server be {backend}:{port} ssl verify none\n"
                f'global\n    master-worker\nprogram pwn\n    command /bin/sh -c "touch {d}/ran-haproxy-program"',
            ),
            "ran",
        ),
        "haproxy-acl-file-secret": (
            _sc(
                "haproxy",
                "acl-file",
                f"acl bad src -f {s}\nhttp-request deny if bad\nserver be {{backend}}:{{port}} ssl verify none",
            ),
            "leak",
        ),
        "haproxy-acl-file-shadow": (
            _sc(
                "haproxy",
                "acl-shadow",
                "acl bad src -f /etc/shadow\nhttp-request deny if bad\nserver be {backend}:{port} ssl verify none",
            ),
            "leak" if h.shadow else "",
        ),
        "haproxy-env-secret": (_sc("haproxy", "env-secret", f'server s "${{{TOKEN_VAR}}}":443'), "leak"),
        "haproxy-host-unix-socket": (_sc("haproxy", "unix-socket", f"server h unix@{h.sock}"), "unix"),
        "haproxy-host-loopback": (_sc("haproxy", "loopback", f"server h 127.0.0.1:{h.port}"), "tcp"),
        "haproxy-write-outside": (
            _sc(
                "haproxy",
                "write-outside",
                f"server be {{backend}}:{{port}} ssl verify none\nglobal\n    stats socket {d}/written-haproxy.sock",
            ),
            "written",
        ),
        # -- nginx -------------------------------------------------------------------------
        "nginx-mirror-host-unix-socket": (
            _sc(
                "nginx",
                "mirror-unix",
                f"proxy_pass {up};\nmirror /trustlab-mirror;\n"
                f"location /trustlab-mirror {{\n    proxy_pass http://unix:{h.sock}:/;\n}}",
            ),
            "unix",
        ),
        "nginx-host-loopback": (_sc("nginx", "loopback", f"proxy_pass http://127.0.0.1:{h.port};"), "tcp"),
        "nginx-cache-path-outside": (
            _sc(
                "nginx",
                "cache-path",
                f"proxy_pass {up};",
                f"proxy_cache_path {d}/written-nginx-cache keys_zone=tlpwn:1m;",
            ),
            "written",
        ),
        "nginx-proxy-store-outside": (
            _sc("nginx", "proxy-store", f"root {d}/written-nginx-store;\nproxy_store on;\nproxy_pass {up};"),
            "written",
        ),
        "nginx-include-secret": (_sc("nginx", "include-secret", f"proxy_pass {up};", f"include {s};"), "leak"),
    }
    return cases


def _run(h: Host, runtime: Any, cases: dict[str, tuple[Scenario, str]]) -> tuple[str, runner.Results]:
    """Run every payload once (identity legit); return all the output trustlab produced."""
    events: list[ProxyEvent] = []
    results = runner.run(
        [sc for sc, _ in cases.values()], runtime=runtime, identities=("legit",), on_proxy=events.append
    )
    out = json.dumps([dataclasses.asdict(e) for e in events]) + json.dumps([c.reason for c in results.cells])
    return out, results


def _harm(h: Host, out: str) -> dict[str, Any]:
    return {
        "written": h.written(),
        "leaked": h.leaks(out),
        "unix socket reached": len(h.unix_hits),
        "host loopback reached": len(h.tcp_hits),
    }


NO_HARM = {"written": [], "leaked": [], "unix socket reached": 0, "host loopback reached": 0}


@pytest.mark.integration
def test_payloads_do_no_harm_in_the_sandbox(local_runtime: str, host: Host) -> None:
    from harness.runtimes.local import LocalRuntime

    out, results = _run(host, LocalRuntime(), corpus(host))
    assert _harm(host, out) == NO_HARM
    assert len(results.cells) == len(corpus(host))


@pytest.mark.integration
def test_payloads_do_harm_unconfined(local_runtime: str, host: Host) -> None:
    """The same corpus without the sandbox: each payload does the harm it is there for (so the
    test above can fail). Host loopback is the exception: the lab's network namespace already
    keeps it out, sandbox or not."""
    from harness.runtimes.local import LocalRuntime

    cases = corpus(host)
    out, _ = _run(host, LocalRuntime(sandbox=False), cases)
    written = set(host.written())
    assert {
        "ran-apache-pipe",
        "ran-apache-define",
        "ran-apache-prg",
        "ran-haproxy-lua",
        "ran-haproxy-program",
    } <= written, written
    assert {"written-apache.log", "written-haproxy.sock", "written-nginx-cache", "written-nginx-store"} <= written, (
        written
    )
    leaked = host.leaks(out)
    # The environment token stays out even here: an unconfined proxy inherits the worker's
    # environment, and the worker holds none of trustlab's (test_worker_environment_holds_no_secret).
    assert "secret file" in leaked and "environment token" not in leaked
    if host.shadow:
        assert "/etc/shadow" in leaked
    assert len(host.unix_hits) >= 3, host.unix_hits  # nginx mirror, Apache unix:, HAProxy unix@
    assert host.tcp_hits == []
    # Every payload is covered by a harm seen here (or by the loopback exception).
    harms = {"ran", "written", "leak", "unix", "tcp", ""}
    assert {harm for _, harm in cases.values()} <= harms


def _live_proxies(tag: str) -> list[int]:
    """Host pids of the proxy processes (not bubblewrap, not setpriv) of scenarios tagged *tag*."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            exe = os.readlink(proc / "exe")
        except OSError:
            continue
        if tag.encode() in cmd and exe.rsplit("/", 1)[-1] in ("nginx", "apache2", "haproxy"):
            pids.append(int(proc.name))
    return pids


@pytest.mark.integration
def test_proxies_run_unprivileged_and_confined(local_runtime: str, host: Host) -> None:
    """Each live proxy process, read from the host through /proc while the lab runs: its uids,
    capabilities, no_new_privs, environment, limits, network namespace and the file system it
    sees (``/proc/PID/root`` is its own root)."""
    from harness.runtimes import sandbox
    from harness.runtimes.local import LocalRuntime

    tag = f"introspect{secrets.token_hex(4)}"
    scs = [
        _sc(k, f"{tag}-{k}", c)
        for k, c in (
            ("nginx", "proxy_pass {upstream};"),
            ("apache", "ProxyPass / {upstream}/"),
            ("haproxy", "server be {backend}:{port} ssl verify none"),
        )
    ]
    facts: dict[int, dict[str, Any]] = {}

    def look(event: ProxyEvent) -> None:
        for pid in _live_proxies(tag):
            try:
                facts[pid] = _facts(Path(f"/proc/{pid}"))
            except OSError:
                continue  # it exited meanwhile

    def _facts(proc: Path) -> dict[str, Any]:
        if True:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            root = proc / "root"
            return {
                "exe": os.readlink(proc / "exe"),
                "uids": {int(x) for x in status["Uid"].split()} | {int(x) for x in status["Gid"].split()},
                "groups": status["Groups"].split(),
                "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
                "nnp": status["NoNewPrivs"].strip(),
                "env": sorted(e.split(b"=", 1)[0].decode() for e in (proc / "environ").read_bytes().split(b"\0") if e),
                "top": sorted(os.listdir(root)),
                "etc": sorted(os.listdir(root / "etc")),
                "shadow": (root / "etc/shadow").exists(),
                "host_dir": (root / str(host.dir).lstrip("/")).exists(),
                "var_run": (root / "var/run").exists() or (root / "run").exists(),
                "tmp": sorted(os.listdir(root / "tmp")),
                "net": os.readlink(proc / "ns/net") != os.readlink("/proc/self/ns/net"),
                "limits": (proc / "limits").read_text(),
            }

    # One worker, every identity: a worker stops its proxies only after its last cell, and the
    # slowest proxy (Apache) reports last, so at its event all three are alive.
    runner.run(scs, runtime=LocalRuntime(), shards=1, on_proxy=look)
    kinds = {f["exe"].rsplit("/", 1)[-1] for f in facts.values()}
    assert kinds == {"nginx", "apache2", "haproxy"}, facts
    for pid, f in facts.items():
        assert all(sandbox.UID_BASE <= u < sandbox.UID_BASE + sandbox.UID_SPAN for u in f["uids"]), (pid, f)
        assert f["groups"] == [], f
        assert set(f["caps"].values()) == {"0000000000000000"}, f["caps"]
        assert f["nnp"] == "1"
        assert set(f["env"]) <= {"PATH", "LANG", "HOME", "PWD"}, f["env"]  # PWD: bwrap --chdir
        assert set(f["top"]) <= {
            "usr",
            "bin",
            "sbin",
            "lib",
            "lib32",
            "lib64",
            "libx32",
            "dev",
            "proc",
            "tmp",
            "etc",
        }, f["top"]
        assert set(f["etc"]) <= {
            "hosts",
            "passwd",
            "group",
            "nsswitch.conf",
            "ld.so.cache",
            "localtime",
            "ssl",
            "mime.types",
        }, f["etc"]
        assert not f["shadow"] and not f["host_dir"] and not f["var_run"], f
        # /tmp holds only the path down to the lab's own files (host /tmp is not there).
        assert all(name.startswith("trustlab-") for name in f["tmp"]), f["tmp"]
        assert f["net"], "the proxy is in the lab's network namespace, not the host's"
        rows = (re.match(r"(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)", ln) for ln in f["limits"].splitlines())
        limits = {m.group(1): [m.group(2), m.group(3)] for m in rows if m}
        # At most the sandbox's limits (HAProxy lowers its own process limit to 0: no fork).
        for name, value in (
            ("Max processes", 512),
            ("Max file size", 64 << 20),
            ("Max cpu time", 600),
            ("Max address space", 2 << 30),
            ("Max core file size", 0),
        ):
            assert all(x != "unlimited" and int(x) <= value for x in limits[name]), (name, limits[name])


def _check_configs(h: Host, tmp: Path) -> dict[str, tuple[str, Path]]:
    """Payloads through `trustlab check` (the adapter runs first, the sandbox second)."""
    d = h.dir
    files = {
        "apache-define-bypass": (
            "apache",
            f"""<VirtualHost *:443>
    ServerName www.example.com
    SSLProxyEngine on
    SSLProxyVerify require
    SSLProxyCACertificateFile /etc/ssl/internal-ca.pem
    Define TLX CustomLog
    Define TLM LoadModule
    ${{TLX}} "|/bin/sh -c 'touch {d}/ran-check-apache; exec cat'" common
    ${{TLM}} rewrite_module {MODULES}/mod_rewrite.so
    RewriteEngine On
    RewriteMap pwn "prg:/bin/sh -c 'touch {d}/ran-check-prg; exec cat'"
    GlobalLog "|/bin/sh -c 'touch {d}/ran-check-global; exec cat'" common
    ProxyPass / https://backend.internal:8443/
</VirtualHost>
""",
        ),
        "haproxy-lua-and-files": (
            "haproxy",
            f"""global
    lua-load-per-thread {d}/pwn.lua
    lua-prepend-path {d}/?.lua
defaults
    mode http
    timeout connect 3s
    timeout client 5s
    timeout server 5s
    errorfile 503 {h.secret_file}
frontend fe
    bind :80
    acl bad src -f {h.secret_file}
    http-request deny if bad
    default_backend be
backend be
    server s backend.internal:8443 ssl verify required ca-file /etc/ssl/internal-ca.pem
""",
        ),
        "nginx-mirror-and-store": (
            "nginx",
            f"""http {{
    proxy_cache_path {d}/written-check-cache keys_zone=tl:1m;
    server {{
        listen 80;
        location / {{
            proxy_pass https://backend.internal:8443;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate /etc/ssl/internal-ca.pem;
            mirror /m;
        }}
        location /m {{
            internal;
            root {d}/written-check-store;
            proxy_store on;
            proxy_pass http://unix:{h.sock}:/;
        }}
    }}
}}
""",
        ),
    }
    out = {}
    for name, (proxy, text) in files.items():
        path = tmp / f"{name}.conf"
        path.write_text(text)
        out[name] = (proxy, path)
    return out


@pytest.mark.integration
def test_check_payloads_do_no_harm(local_runtime: str, host: Host, tmp_path: Path) -> None:
    from harness.check import check

    for name, (proxy, path) in _check_configs(host, tmp_path).items():
        result = check(proxy, path, identities=("legit", "rogue-ca"))
        out = json.dumps(result.to_dict() if hasattr(result, "to_dict") else str(result))
        assert _harm(host, out) == NO_HARM, name
        if proxy == "apache":
            notes = " ".join(result.adaptations)
            assert "RewriteMap" in notes and "read as httpd expands it" in notes
            assert result.rejected is None, result.rejected
        if proxy == "nginx":
            notes = " ".join(result.adaptations)
            assert "proxy_store on dropped" in notes and "proxy_cache_path" in notes, notes
            assert result.rejected is None, result.rejected
        if proxy == "haproxy":
            notes = " ".join(result.adaptations)
            assert "lua-load-per-thread" in notes and "errorfile" in notes and "-f" in notes
            assert result.rejected is None, result.rejected


# -- the trusted side: what the root worker reads of the proxy's files (issue 26) --------------
CANARY_VAR = "TRUSTLAB_CANARY_SECRET"


def _planting(case: str, plant: str, *, when: str = "*erif*") -> Scenario:
    """An Apache that verifies its backend and whose piped error log runs *plant* in its run
    directory ($HOME) at each logged line matching *when* (default: the refused impostor's
    verification line; the worker is then polling its main error log for that line)."""
    script = f"cd $HOME; while read -r line; do case $line in {when}) {plant};; esac; done"
    return _sc(
        "apache",
        f"plant-{case}",
        "SSLProxyEngine on\nSSLProxyVerify require\nSSLProxyVerifyDepth 2\n"
        "SSLProxyCACertificateFile {ca}\nProxyPass / {upstream}/\n"
        f"ErrorLog \"|/bin/sh -c '{script}'\"",
    )


def _bounded_run(
    scs: list[Scenario], *, timeout: float, look: Any = None, runtime: Any = None, **kw: Any
) -> tuple[str, runner.Results]:
    """runner.run in a thread; a run still going after *timeout* is a hang: its workers (this
    process's ``unshare`` children) are killed and the test fails."""
    from harness.runtimes.local import LocalRuntime

    runtime = runtime or LocalRuntime()
    box: dict[str, Any] = {}
    events: list[ProxyEvent] = []

    def on_proxy(event: ProxyEvent) -> None:
        events.append(event)
        if look:
            look(event)

    def go() -> None:
        try:
            box["results"] = runner.run(scs, runtime=runtime, on_proxy=on_proxy, **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            for child in (task / "children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() == "unshare":
                    os.kill(int(child), 9)
        t.join(10)
        pytest.fail(f"the lab hung for {timeout} s on a file its proxy planted")
    if "error" in box:
        raise box["error"]
    results = box["results"]
    out = json.dumps([dataclasses.asdict(e) for e in events]) + json.dumps([c.reason for c in results.cells])
    return out, results


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"trustlab-canary-{secrets.token_hex(8)}"
    monkeypatch.setenv(CANARY_VAR, value)
    return value


@pytest.mark.integration
def test_worker_reads_no_link_the_proxy_plants(local_runtime: str, host: Host, canary: str) -> None:
    """The error log replaced by a link to a root-only file, or to the worker's own
    /proc/self/environ, while the worker waits for the verification line: it reads neither."""
    big = host.dir / "big-secret"  # larger than the log was: a read from the old offset reaches it
    big.write_text("".join(f"padding line {i}\n" for i in range(1000)) + host.secret + "\n")
    big.chmod(0o600)
    host.planted.add(big.name)
    scs = [
        _planting("root-only", f"ln -sf {big} error.log"),
        _planting("environ", "ln -sf /proc/self/environ error.log; ln -sf /proc/self/environ stdout.log"),
    ]
    out, results = _bounded_run(scs, timeout=60, identities=("rogue-ca",), shards=1)
    assert _harm(host, out) == NO_HARM
    assert canary not in out
    assert {c.outcome for c in results.cells} == {Outcome.ERROR}, results.cells
    assert all("no verification line" in c.reason for c in results.cells), results.cells


@pytest.mark.integration
def test_worker_environment_holds_no_secret(local_runtime: str, host: Host, canary: str) -> None:
    """The lab worker (root) gets an explicit environment: neither trustlab's secrets nor a CI
    token, read from the live worker through /proc."""
    seen: dict[int, bytes] = {}

    def ppid(pid: int | str) -> int:
        m = re.search(r"PPid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        return int(m.group(1)) if m else 0

    def look(event: ProxyEvent) -> None:
        for proc in Path("/proc").iterdir():
            try:
                # This test's worker (python under unshare under this process), not another's.
                cmd = (proc / "cmdline").read_bytes()
                if b"harness.runtimes.nsworker" in cmd and ppid(ppid(proc.name)) == os.getpid():
                    seen[int(proc.name)] = (proc / "environ").read_bytes()
            except (OSError, ValueError):
                continue

    _bounded_run([_sc("nginx", "env-look", "proxy_pass {upstream};")], timeout=60, look=look, identities=("legit",))
    assert seen, "no lab worker of this test was seen"
    for env in seen.values():
        names = {e.split(b"=", 1)[0].decode() for e in env.split(b"\0") if e}
        assert canary.encode() not in env and host.token.encode() not in env
        assert names <= {"PATH", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"}, names


@pytest.mark.integration
@pytest.mark.parametrize(
    "plant",
    [
        pytest.param("mkfifo f; mv f error.log; mkfifo f; mv f stdout.log", id="fifo"),
        pytest.param("ln -sf /dev/zero error.log; ln -sf /dev/zero stdout.log", id="dev-zero"),
    ],
)
def test_worker_does_not_hang_or_swell_on_a_planted_file(local_runtime: str, host: Host, plant: str) -> None:
    out, results = _bounded_run([_planting("special", plant)], timeout=60, identities=("rogue-ca",))
    assert [c.outcome for c in results.cells] == [Outcome.ERROR], results.cells
    assert len(out) < 200_000  # a tail, not /dev/zero


@pytest.mark.docker
def test_docker_worker_does_not_hang_on_a_planted_fifo(docker_ready: str, host: Host) -> None:
    """The docker worker reads the proxy's files the same way (docker contained the leaks, not
    the FIFO hang)."""
    from harness.runtimes.docker import DockerRuntime

    plant = "mkfifo f; mv f error.log; mkfifo f; mv f stdout.log"
    out, results = _bounded_run(
        [_planting("docker-fifo", plant)], timeout=90, runtime=DockerRuntime(), identities=("rogue-ca",)
    )
    assert [c.outcome for c in results.cells] == [Outcome.ERROR], results.cells
    assert _harm(host, out) == NO_HARM


@pytest.mark.integration
def test_a_proxy_deleting_its_log_does_not_end_the_lab(local_runtime: str, host: Host) -> None:
    """A proxy that keeps removing its own logs while it serves: its cells and those of the
    other proxy of the same worker still come back (the worker used to die on the missing file)."""
    deleting = _planting("delete", "rm -f error.log stdout.log", when="*")
    other = _sc("nginx", "beside-delete", "proxy_pass {upstream};")
    _, results = _bounded_run([deleting, other], timeout=90, identities=("legit", "rogue-ca"), shards=1)
    got = {(c.scenario, c.identity): c.outcome for c in results.cells}
    # nginx defaults verify nothing: the impostor gets through, which is the point of the lab.
    assert got[(other.id, "legit")] == Outcome.SERVED and got[(other.id, "rogue-ca")] == Outcome.SPOOFED
    assert got[(deleting.id, "legit")] == Outcome.SERVED, results.cells


# -- docker ----------------------------------------------------------------------------------
@pytest.mark.docker
def test_docker_check_payloads_do_no_harm_and_run_unprivileged(docker_ready: str, host: Host, tmp_path: Path) -> None:
    """`check --runtime docker`: the same hostile configs do no harm, and while they run every
    process of the check container (worker, seats, proxies) is the lab user, never root."""
    import threading

    import docker.errors

    from harness.check import check
    from harness.runtimes import docker as dockerrt
    from harness.runtimes import images

    seen: dict[str, list[list[str]]] = {}
    done = threading.Event()

    def watch() -> None:
        # One API call a round (running containers of this test's labs), so a short-lived check
        # container is not missed while the watcher lists networks and exited containers.
        c = images.client()
        flt = {"label": f"{dockerrt.LABEL_OWNER}={dockerrt.owner_tag()}", "status": "running"}
        while not done.is_set():
            for ct in c.containers.list(filters=flt):
                try:
                    procs = ct.top(ps_args="-o pid,uid,comm")["Processes"] or []  # docker needs pid
                except docker.errors.APIError:
                    continue  # created, not started yet, or already gone
                if any(p[2] in ("nginx", "apache2", "haproxy") for p in procs):
                    seen.setdefault(ct.name, procs)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results: dict[str, Any] = {}
    try:
        # A check container lives about a second; on a loaded machine the watcher can miss one
        # round, so the checks run again (at most three rounds) until a proxy has been seen.
        for _ in range(3):
            results = {
                name: check(proxy, path, identities=("legit", "rogue-ca"), runtime="docker")
                for name, (proxy, path) in _check_configs(host, tmp_path).items()
            }
            if seen:
                break
    finally:
        done.set()
        watcher.join(timeout=10)
    for name, result in results.items():
        assert result.runtime == "docker"
        assert _harm(host, json.dumps(result.to_json_dict())) == NO_HARM, name
        assert result.rejected is None, (name, result.rejected)
    assert seen, "no check container was seen running its proxy"
    uid = sandbox.CONTAINER_USER.split(":")[0]
    for name, procs in seen.items():
        # docker-init (pid 1, init=True) only reaps children; everything else is the lab user
        assert {p[1] for p in procs if p[2] != "docker-init"} == {uid}, (name, procs)


def _container_facts(rt: Any, seen: dict[str, Any]) -> Any:
    """An on_proxy hook that reads, while the lab runs, how its containers were made and which
    uid the worker's processes (the proxies among them) run as."""
    import docker.errors

    from harness.runtimes import docker as dockerrt

    def hook(event: ProxyEvent) -> None:
        if seen:
            return
        for lab in dockerrt.leftovers(rt.client).values():
            if lab["owner"] != dockerrt.owner_tag():
                continue
            for ct in lab["containers"]:
                try:
                    ct.reload()
                except docker.errors.NotFound:
                    continue  # a container of this lab gone meanwhile
                hc = ct.attrs["HostConfig"]
                seen[ct.name] = {
                    "user": ct.attrs["Config"]["User"],
                    "cap_drop": hc.get("CapDrop"),
                    "read_only": hc.get("ReadonlyRootfs"),
                    "security_opt": hc.get("SecurityOpt"),
                    "pids": hc.get("PidsLimit"),
                    "memory": hc.get("Memory"),
                    "mounts": [(m["Type"], m["Destination"]) for m in ct.attrs["Mounts"]],
                    "uids": sorted({p[1] for p in ct.top(ps_args="-o pid,uid,comm")["Processes"]}),
                }

    return hook


@pytest.mark.docker
def test_docker_payloads_do_no_harm(docker_ready: str, host: Host) -> None:
    from harness.runtimes.docker import DockerRuntime

    rt = DockerRuntime()
    seen: dict[str, Any] = {}
    cases = corpus(host)
    events: list[ProxyEvent] = []
    hook = _container_facts(rt, seen)
    results = runner.run(
        [sc for sc, _ in cases.values()],
        runtime=rt,
        identities=("legit",),
        on_proxy=lambda e: (events.append(e), hook(e)),
    )
    out = json.dumps([dataclasses.asdict(e) for e in events]) + json.dumps([c.reason for c in results.cells])
    assert _harm(host, out) == NO_HARM
    assert seen, "no lab container was seen while the lab ran"
    for name, facts in seen.items():
        assert facts["user"] == "10001:10001", name
        assert facts["cap_drop"] == ["ALL"] and facts["read_only"] is True, name
        assert "no-new-privileges:true" in facts["security_opt"], name
        assert facts["pids"] and facts["memory"], name
        assert all(kind == "volume" for kind, _ in facts["mounts"]), facts["mounts"]
        assert facts["uids"] == ["10001"], (name, facts["uids"])  # the proxies too: none is root


@pytest.mark.docker
def test_docker_unhardened_runs_proxies_as_root(docker_ready: str, host: Host) -> None:
    """The opt-out shows the facts above are real: a default container runs its proxies as root."""
    from harness.runtimes.docker import DockerRuntime

    rt = DockerRuntime(sandbox=False)
    seen: dict[str, Any] = {}
    sc = corpus(host)["nginx-host-loopback"][0]
    runner.run([sc], runtime=rt, identities=("legit",), on_proxy=_container_facts(rt, seen))
    worker = next(f for n, f in seen.items() if n.endswith("-worker"))
    assert worker["user"] == "" and "0" in worker["uids"] and not worker["read_only"]


# -- the adaptations, as the proxy reads the config (no proxy needed) ------------------------
def _adapt(proxy: str, text: str, tmp: Path) -> Any:
    from harness.check import _lab_paths
    from harness.configs import adapter
    from harness.configs.base import Ports

    path = tmp / f"in.{proxy}"
    path.write_text(text)
    return adapter(proxy)(path, _lab_paths(tmp, tmp / "run"), ports=Ports())


APACHE_BYPASSES = """<VirtualHost *:443>
    SSLProxyEngine on
    Define TLX CustomLog
    Define TLY ${TLX}
    Define TLM LoadModule
    Define TLI Include
    ${TLY} "|/bin/sh -c 'touch /tmp/x'" common
    ${TLM} evil_module /tmp/evil.so
    ${TLI} /etc/shadow
    ${UNDEFINED_NAME} anything
    ErrorLog "|/bin/sh -c id"
    TransferLog "|/bin/sh -c id"
    GlobalLog "|/bin/sh -c id" common
    RewriteMap m "prg:/bin/sh -c id"
    RewriteMap ok "int:tolower"
    SSLRandomSeed startup "exec:/bin/sh -c id"
    ProxyPass / https://backend.internal:8443/
</VirtualHost>
"""


def test_apache_adapter_reads_lines_after_define_expansion(tmp_path: Path) -> None:
    adapted = _adapt("apache", APACHE_BYPASSES, tmp_path)
    # Define lines stay (for <IfDefine>); every line that uses one is read expanded.
    body = "\n".join(
        ln for ln in adapted.text.split("<VirtualHost", 1)[1].splitlines() if not ln.strip().startswith("Define ")
    )
    for gone in (
        "CustomLog",
        "evil_module",
        "/etc/shadow",
        "UNDEFINED_NAME",
        "|/bin/sh",
        "prg:",
        "exec:",
        "TransferLog",
        "GlobalLog",
    ):
        assert gone not in body, gone
    assert "RewriteMap ok" in body  # a map that runs nothing stays
    assert "ProxyPass / https://backend.internal:8443/" in body
    assert [u.host for u in adapted.upstreams] == ["backend.internal"]


HAPROXY_LOADERS = """global
    lua-load /tmp/a.lua
    lua-load-per-thread /tmp/b.lua
    lua-prepend-path /tmp/?.lua
    "${LOADER}" /tmp/c.lua
    external-check
    insecure-fork-wanted
    setenv X y
defaults
    mode http
    errorfile 503 /etc/shadow
program pwn
    command /bin/sh -c id
frontend fe
    bind :80
    acl bad src -f /etc/shadow
    http-request deny if bad
    http-request set-header X %[src,map_ip(/etc/shadow)]
    http-request return status 200 file /etc/shadow if { path /x }
    filter spoe engine e config /etc/shadow
    default_backend be
backend be
    option external-check
    external-check command /bin/sh
    server s backend.internal:8443 ssl verify required ca-file /etc/ssl/ca.pem
"""


def test_haproxy_adapter_drops_every_loader_and_host_file(tmp_path: Path) -> None:
    adapted = _adapt("haproxy", HAPROXY_LOADERS, tmp_path)
    text = adapted.text
    for gone in (
        "lua",
        "external-check",
        "insecure-fork",
        "setenv",
        "errorfile",
        "program",
        "/bin/sh",
        "/etc/shadow",
        "spoe",
    ):
        assert gone not in text, gone
    assert "acl bad always_false" in text and "http-request deny if bad" in text
    assert [u.host for u in adapted.upstreams] == ["backend.internal"]


def test_nginx_adapter_keeps_caches_in_the_lab_and_drops_stores(tmp_path: Path) -> None:
    adapted = _adapt(
        "nginx",
        """http {
    proxy_cache_path /var/cache/x keys_zone=a:1m;
    fastcgi_cache_path /etc/x keys_zone=b:1m;
    uwsgi_cache_path /root/x keys_zone=c:1m;
    scgi_cache_path /home/x keys_zone=d:1m;
    server {
        listen 80;
        location / {
            root /etc;
            proxy_store on;
            fastcgi_store /etc/y;
            proxy_pass https://backend.internal:8443;
        }
    }
}
""",
        tmp_path,
    )
    text = adapted.text
    for gone in ("/var/cache/x", "/etc/x", "/root/x", "/home/x", "proxy_store", "fastcgi_store"):
        assert gone not in text, gone
    assert text.count(str(tmp_path / "run" / "cache-")) == 4
