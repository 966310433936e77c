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

    return importlib.import_module(config_module(kind, "check")).adapt


def config_module(kind: ProxyKind | str, command: str) -> str:
    """*kind*'s config module, or a :class:`~harness.errors.ConfigError` naming the kinds that have one."""
    from harness.proxies import driver, kinds

    module = driver(kind).config_module
    if not module:
        have = ", ".join(k.value for k in kinds() if driver(k).config_module)
        raise ConfigError(f"{command}: {ProxyKind(kind).value} configs are not supported yet; supported: {have}")
    return module


def guess_proxy(text: str) -> ProxyKind:
    """The proxy kind *text* is a config for, asking each registered driver (most specific first).

    ``check`` (a hint when a config looks like another kind's) and ``audit`` both ask."""
    from harness.proxies import driver, kinds, names

    for kind in sorted(kinds(), key=lambda k: driver(k).guess_order):
        if driver(kind).looks_like(text):
            return kind
    raise ConfigError(f"cannot tell which proxy this config is for; pass --proxy {'|'.join(names())}")
