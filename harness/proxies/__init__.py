"""The proxy kinds: one module per kind, found through :class:`~harness.vocab.ProxyKind`.

``harness/proxies/<kind>.py`` (the enum's value) defines ``DRIVER``, a
:class:`~harness.proxies.base.Driver` holding every fact about that kind. A kind whose module is
not there (or not yet written) is simply not registered: :func:`kinds` lists the ones that are.
"""

from __future__ import annotations

import importlib
from functools import cache

from harness.proxies.base import Driver, Installation, RenderContext
from harness.vocab import ProxyKind


@cache
def _registry() -> dict[ProxyKind, Driver]:
    found: dict[ProxyKind, Driver] = {}
    for kind in ProxyKind:
        try:
            module = importlib.import_module(f"harness.proxies.{kind.value}")
        except ModuleNotFoundError as exc:
            if exc.name != f"harness.proxies.{kind.value}":
                raise
            continue
        found[kind] = module.DRIVER
    return found


def kinds() -> tuple[ProxyKind, ...]:
    """Every registered proxy kind, in the enum's order."""
    return tuple(_registry())


def names() -> tuple[str, ...]:
    """``("nginx", "apache", ...)``: the registered kinds' names (CLI choices, tables)."""
    return tuple(k.value for k in kinds())


def driver(kind: ProxyKind | str) -> Driver:
    """The driver for one proxy kind."""
    try:
        return _registry()[ProxyKind(kind)]
    except (KeyError, ValueError):
        raise KeyError(f"proxy {kind!r} is not registered; known: {', '.join(names())}") from None


__all__ = ["Driver", "Installation", "RenderContext", "driver", "kinds", "names"]
