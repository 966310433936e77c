"""A pytest plugin: guard your own proxy config in CI, in the style of pytest-httpserver.

Registered through the ``pytest11`` entry point, so installing trustlab is enough::

    def test_proxy(trustlab_check):
        result = trustlab_check("nginx", "deploy/nginx.conf")
        assert result.ok, result.summary()

Fixtures:

* ``trustlab_config`` (session): a dict of options for every check (``accept``: impostor
  identities your PKI policy rules out, e.g. ``("wildcard",)``; ``identities``; ``keep``).
  Override it in your ``conftest.py``.
* ``trustlab_lab`` (session): the factory. It checks the prerequisites once (a missing proxy or
  namespace support is a skip with the reason, or a failure when ``TRUSTLAB_REQUIRE=1``) and
  memoises results per (proxy, file content, options), so many tests can ask about one config.
* ``trustlab_check`` (function): ``trustlab_check(proxy, path, **overrides) -> CheckResult``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the plugin loads in every pytest session: import the lab only when used
    from harness.check import CheckResult


class TrustLab:
    """Runs ``trustlab check`` for tests; one per session."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self._cache: dict[tuple[str, str, str], CheckResult] = {}
        self._ready: dict[str, str | None] = {}

    def require(self, proxy: str) -> None:
        if proxy not in self._ready:
            from harness.errors import PrerequisiteError
            from harness.runtimes.local import LocalRuntime

            try:
                LocalRuntime().preflight({proxy})
                self._ready[proxy] = None
            except PrerequisiteError as exc:
                self._ready[proxy] = str(exc)
        reason = self._ready[proxy]
        if reason:
            if os.environ.get("TRUSTLAB_REQUIRE") == "1":
                pytest.fail(f"trustlab: {reason}")
            pytest.skip(f"trustlab: {reason}")

    def check(self, proxy: str, path: str | Path, **overrides: Any) -> CheckResult:
        from harness.check import check

        self.require(proxy)
        opts = {**self.config, **overrides}
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        key = (proxy, f"{Path(path).resolve()}:{digest}", repr(sorted(opts.items())))
        if key not in self._cache:
            self._cache[key] = check(proxy, path, **opts)
        return self._cache[key]


@pytest.fixture(scope="session")
def trustlab_config() -> dict[str, Any]:
    """Options for every check; override in your conftest.py (e.g. ``{"accept": ("wildcard",)}``)."""
    return {}


@pytest.fixture(scope="session")
def trustlab_lab(trustlab_config: dict[str, Any]) -> TrustLab:
    """The session's lab factory (prerequisites checked once, results memoised)."""
    return TrustLab(trustlab_config)


@pytest.fixture
def trustlab_check(trustlab_lab: TrustLab) -> Callable[..., CheckResult]:
    """``trustlab_check(proxy, path, **overrides)``: run your config against every identity."""
    return trustlab_lab.check
