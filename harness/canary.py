"""``make canary``: does the newest allowed dependency set still mint the lab and run it?

Run in a throwaway virtualenv holding the newest versions ``pyproject.toml`` allows (not the lock).
A smoke, outside the test suite: every identity minted (built-in and optional) and read back, then
each proxy kind's ``good`` scenario on the local runtime, judged against its expectations. What
breaks here is what the next ``make lock`` must fix first. Exit 0 when all held, else 1.
"""

from __future__ import annotations

import sys
import tempfile
from importlib import metadata
from pathlib import Path

from harness import lockfile


def main() -> int:
    from harness import runner, scenarios
    from harness.errors import LabError
    from harness.pki import LabPKI
    from harness.proxies import kinds
    from harness.vocab import OPTIONAL_IDENTITIES

    lock = lockfile.lock_path()
    locked = lockfile.pins(lock.read_text()) if lock else {}
    newer = [
        f"{name} {metadata.version(name)} (locked {version})"
        for name, version in sorted(locked.items())
        if _installed(name) not in (None, version)
    ]
    print(f"canary: {len(newer)} packages newer than {lockfile.LOCK_NAME}: " + (", ".join(newer) or "none"))
    problems: list[str] = []
    try:
        optional = tuple(s.id for s in OPTIONAL_IDENTITIES)
        pki = LabPKI.mint(optional=optional, backends=("api.svc.internal",))
        with tempfile.TemporaryDirectory() as tmp:
            pki.write_to(Path(tmp))
        count = len(pki.identities) + len(pki.optional or {})
        print(f"canary: PKI ok ({count} identities minted and written)")
    except Exception as exc:  # noqa: BLE001 - the canary reports what broke, whatever it is
        problems.append(f"PKI: {type(exc).__name__}: {exc}")
    for kind in kinds():
        ref = f"{kind.value}/good"
        try:
            results = runner.run(scenarios.select([ref]), runtime="local")
        except (LabError, Exception) as exc:  # noqa: BLE001
            problems.append(f"{ref}: {type(exc).__name__}: {exc}")
            continue
        wrong = results.mismatches
        print(f"canary: {ref}: {len(results.cells)} cells, {len(wrong)} unexpected")
        problems += [
            f"{ref} {c.identity}: {c.outcome.value}, expected {c.expected.value if c.expected else '-'}" for c in wrong
        ]
    for line in problems:
        print(f"canary: BROKEN {line}")
    print(f"canary: {'OK' if not problems else f'{len(problems)} problems'} with the newest allowed versions")
    return 1 if problems else 0


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
