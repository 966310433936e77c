"""A pytest plugin: guard your own proxy config in CI, in the style of pytest-httpserver.

Registered through the ``pytest11`` entry point, so installing trustlab is enough::

    def test_proxy(trustlab_check):
        result = trustlab_check("nginx", "deploy/nginx.conf")
        assert result.ok, result.summary()

Fixtures:

* ``trustlab_config`` (session): a dict of options for every check (``accept``: impostor
  identities your PKI policy rules out, e.g. ``("wildcard",)``; ``identities``; ``keep``;
  ``runtime``). Override it in your ``conftest.py``.
* ``trustlab_lab`` (session): the factory. It checks the prerequisites once (a missing proxy or
  namespace support is a skip with the reason, or a failure when ``TRUSTLAB_REQUIRE=1``) and
  memoises results per (proxy, file content, options), so many tests can ask about one config.
* ``trustlab_check`` (function): ``trustlab_check(proxy, path, **overrides) -> CheckResult``.

Where the proxy runs, first found wins: ``runtime`` in ``trustlab_config`` (or a per-call
override), the ``TRUSTLAB_RUNTIME`` environment variable, the ``trustlab_runtime`` ini option,
else ``auto`` (docker when its daemon and the lab image are there, else local, as the CLI does).
Each result says where it ran (``result.runtime``).
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


RUNTIMES = ("auto", "local", "docker", "remote")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trustlab_runtime",
        "where trustlab_check runs the proxy: auto (docker when ready, else local), local or docker",
        default="",
    )


def configured_runtime(pytestconfig: pytest.Config | None = None) -> str:
    """``TRUSTLAB_RUNTIME``, else the ``trustlab_runtime`` ini option, else ``auto``."""
    value = os.environ.get("TRUSTLAB_RUNTIME", "").strip()
    if not value and pytestconfig is not None:
        value = str(pytestconfig.getini("trustlab_runtime") or "").strip()
    return value or "auto"


class TrustLab:
    """Runs ``trustlab check`` for tests; one per session."""

    def __init__(self, config: dict[str, Any], *, runtime: str = "auto") -> None:
        self.config = dict(config)
        self.config.setdefault("runtime", runtime)
        self._cache: dict[tuple[str, str, str], CheckResult] = {}
        self._ready: dict[tuple[str, str], str | None] = {}
        self._chosen: dict[str, str] = {}

    def runtime(self, name: str | None = None) -> str:
        """The runtime a check runs on: *name* (default: the configured one), ``auto`` resolved once."""
        name = name or self.config["runtime"]
        if name not in RUNTIMES:
            pytest.fail(
                f"trustlab: runtime {name!r} is unknown; set trustlab_config['runtime'], TRUSTLAB_RUNTIME "
                f"or the trustlab_runtime ini option to {', '.join(RUNTIMES)}"
            )
        if name not in self._chosen:
            if name == "auto":
                from harness.runner import resolve_auto

                self._chosen[name] = resolve_auto()[0]
            else:
                self._chosen[name] = name
        return self._chosen[name]

    def require(self, proxy: str, runtime: str | None = None) -> None:
        chosen = self.runtime(runtime)
        if chosen == "remote":
            # The classroom's lab service runs built-in scenarios only, never a config file.
            self._ready[proxy, chosen] = (
                "trustlab_check runs your config file, which the remote runtime (a classroom server's lab "
                "service) does not run; set TRUSTLAB_RUNTIME=local or docker"
            )
        if (proxy, chosen) not in self._ready:
            from harness.errors import PrerequisiteError
            from harness.runner import get_runtime

            try:
                get_runtime(chosen).preflight({proxy})
                self._ready[proxy, chosen] = None
            except PrerequisiteError as exc:  # a proxy, namespaces, the docker daemon or image
                self._ready[proxy, chosen] = str(exc)
        reason = self._ready[proxy, chosen]
        if reason:
            if os.environ.get("TRUSTLAB_REQUIRE") == "1":
                pytest.fail(f"trustlab: {reason}")
            pytest.skip(f"trustlab: {reason}")

    def check(self, proxy: str, path: str | Path, **overrides: Any) -> CheckResult:
        from harness.check import check

        opts = {**self.config, **overrides}
        opts["runtime"] = self.runtime(opts.get("runtime"))
        self.require(proxy, opts["runtime"])
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
def trustlab_lab(trustlab_config: dict[str, Any], pytestconfig: pytest.Config) -> TrustLab:
    """The session's lab factory (prerequisites checked once, results memoised)."""
    return TrustLab(trustlab_config, runtime=configured_runtime(pytestconfig))


@pytest.fixture
def trustlab_check(trustlab_lab: TrustLab) -> Callable[..., CheckResult]:
    """``trustlab_check(proxy, path, **overrides)``: run your config against every identity."""
    return trustlab_lab.check
