"""A user's own proxy config: parse it, adapt it to the lab (``check``), read its trust directives
(``audit``). One module per proxy kind; :func:`adapter` picks one."""

from __future__ import annotations

from typing import Any

from harness.vocab import ProxyKind


def adapter(kind: ProxyKind | str) -> Any:
    """The ``adapt(path, lab, *, ports, focus=None) -> Adapted`` function for *kind*."""
    import importlib

    return importlib.import_module(config_module(kind, "check")).adapt


def config_module(kind: ProxyKind | str, command: str) -> str:
    """*kind*'s config module, or a :class:`~harness.errors.ConfigError` naming the kinds that have one."""
    from harness.errors import ConfigError
    from harness.proxies import driver, kinds

    module = driver(kind).config_module
    if not module:
        have = ", ".join(k.value for k in kinds() if driver(k).config_module)
        raise ConfigError(f"{command}: {ProxyKind(kind).value} configs are not supported yet; supported: {have}")
    return module
