"""``trustlab doctor``: what is installed, what runs, and what to do about each gap."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from harness import lockfile
from harness import processes as _process
from harness.proxies import Installation, driver, kinds
from harness.proxies import install as installs
from harness.runner import stale_labs
from harness.runtimes import limits
from harness.runtimes.local import check_namespaces, namespace_mode


def diagnose(say: Callable[[str], None]) -> int:
    """Print a report; return 0 when at least one runtime can run every proxy, else 1."""
    ok_local = True
    say("trustlab doctor")
    lock = lockfile.digest()
    drifted = lockfile.drift()
    say(
        f"python dependencies: {lockfile.LOCK_NAME} {lock or 'absent'}"
        + (f", {len(drifted)} installed at another version (make venv reinstalls the lock)" if drifted else "")
    )
    for line in drifted[:10]:
        say(f"  --    {line}")
    say("")
    say("local runtime (the host's own proxies in private namespaces)")
    strict = os.environ.get("TRUSTLAB_REQUIRE_PROXIES") == "1" or os.environ.get("CI", "").lower() in ("1", "true")
    host: list[Installation] = []
    for kind in kinds():
        drv = driver(kind)
        found = drv.installations()
        host += found
        for inst in found:
            where = f"{inst.binary} in {inst.root}" if inst.root else inst.binary
            say(f"  ok    {kind.value:<13} {inst.version:<9} {inst.tls or '-':<24} {inst.source:<6} {where}")
        if not found:
            ok_local = False
            say(f"  MISSING {kind.value:<11} install it: {drv.install_hint()}")
        for what, fix in installs.gaps(drv, found) if found else ():
            # In CI every declared version must be there (TRUSTLAB_REQUIRE_PROXIES=1): a failure.
            ok_local = ok_local and not strict
            say(f"  {'MISSING' if strict else '--   '} {what}: {fix}")
    for tool, pkg in (
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
        ("bwrap", "bubblewrap"),
        ("setpriv", "util-linux"),
        ("openssl", "openssl"),
    ):
        if shutil.which(tool):
            say(f"  ok    {tool}")
        else:
            ok_local = ok_local and tool == "openssl"
            say(f"  MISSING {tool}: sudo apt-get install {pkg}")
    _, mode = namespace_mode()
    problem = check_namespaces() if shutil.which("unshare") else "unshare missing"
    if problem:
        ok_local = False
        say(f"  NO    namespaces ({mode}): {problem}")
    else:
        say(f"  ok    namespaces ({mode})")
    # Not a failure: a lab still runs without its cgroup, with its proxies' rlimits only.
    version, where = limits.support()
    if version:
        say(f"  ok    lab limits: a cgroup per lab ({where})")
    else:
        say(f"  --    lab limits: none ({where}); {limits.OPEN_WITHOUT}")

    say("")
    say("docker runtime")
    ok_docker = False
    try:
        from harness.runtimes import images  # type: ignore[attr-defined]
    except ImportError:
        say("  --    not part of this build")
    else:
        try:
            for line in images.doctor_lines():
                say(f"  {line}")
            ok_docker, why = images.docker_ready()
            if ok_docker:
                records = images.image_proxies()
                defaults = {(r["kind"], r["version"]) for r in records}
                extra = images.image_proxies(ref=images.versions_image())
                for r in [*records, *(r for r in extra if (r["kind"], r["version"]) not in defaults)]:
                    tls = r["tls"] or "-"
                    where = "image " if (r["kind"], r["version"]) in defaults else "image+"
                    say(f"  ok    {r['kind']:<13} {r['version']:<9} {tls:<24} {where} {r['binary']} ({r['from']})")
                carried = defaults | {(r["kind"], r["version"]) for r in extra}
                lacking = [i for i in host if (i.kind.value, i.version) not in carried]
                for inst in lacking:
                    mark = "NO   " if strict else "--   "
                    lacks = f"{images.versions_image()} lacks {inst.label} ({inst.source})"
                    say(f"  {mark} {lacks}: {images.VERSIONS_BUILD}")
                ok_docker = ok_docker and not (strict and lacking)
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            say(f"  NO    docker: {exc}")

    ok_remote = False
    if os.environ.get("TRUSTLAB_RUNTIME", "").strip().lower() == "remote":
        from harness.errors import LabError
        from harness.runtimes import remote

        say("")
        say("remote runtime (TRUSTLAB_RUNTIME=remote: the classroom's lab service)")
        try:
            remote.RemoteRuntime().health()
            ok_remote = True
            say(f"  ok    lab service at {remote.endpoint()[0]}")
        except LabError as exc:
            say(f"  NO    {exc}")

    stale = stale_labs()
    say("")
    if stale:
        say(f"stale labs left by a killed run: {len(stale)} ({', '.join(str(p) for p in stale[:3])})")
        say("  remove them: trustlab down --all")
    else:
        say("no stale labs")
    say("")
    if ok_local or ok_docker or ok_remote:
        which = " and ".join(n for n, ok in (("local", ok_local), ("docker", ok_docker), ("remote", ok_remote)) if ok)
        say(f"ready: the {which} runtime can run every proxy. Next: trustlab matrix")
        return 0
    who = "root" if _process.is_root() else "this user"
    say(f"not ready: no runtime can run every proxy for {who}; fix the lines marked above")
    return 1
