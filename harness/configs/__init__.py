"""A user's own proxy config: parse it, adapt it to the lab (``check``), read its trust directives
(``audit``). One module per proxy kind; :func:`adapter` picks one."""

from __future__ import annotations

from typing import Any

from harness.vocab import ProxyKind


def adapter(kind: ProxyKind | str) -> Any:
    """The ``adapt(path, lab, *, ports, focus=None) -> Adapted`` function for *kind*."""
    import importlib

    from harness.proxies import driver

    return importlib.import_module(driver(kind).config_module).adapt
