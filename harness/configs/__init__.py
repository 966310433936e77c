"""A user's own proxy config: parse it, adapt it to the lab (``check``), read its trust directives
(``audit``). One module per proxy kind; :func:`adapter` picks one, :func:`guess_proxy` tells
which kind a config is for."""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.vocab import ProxyKind


def adapter(kind: ProxyKind | str) -> Any:
    """The ``adapt(path, lab, *, ports, focus=None) -> Adapted`` function for *kind*."""
    import importlib

    from harness.proxies import driver

    return importlib.import_module(driver(kind).config_module).adapt


def guess_proxy(text: str) -> ProxyKind:
    """The proxy kind *text* is a config for, asking each registered driver (most specific first).

    ``check`` (a hint when a config looks like another kind's) and ``audit`` both ask."""
    from harness.proxies import driver, kinds, names

    for kind in sorted(kinds(), key=lambda k: driver(k).guess_order):
        if driver(kind).looks_like(text):
            return kind
    raise ConfigError(f"cannot tell which proxy this config is for; pass --proxy {'|'.join(names())}")
