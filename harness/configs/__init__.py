"""A user's own proxy config: parse it, adapt it to the lab (``check``), read its trust directives
(``audit``). One module per proxy kind; :func:`adapter` picks one."""

from __future__ import annotations

import re
from typing import Any

from harness.errors import ConfigError
from harness.vocab import ProxyKind


def adapter(kind: ProxyKind | str) -> Any:
    """The ``adapt(path, lab, *, ports, focus=None) -> Adapted`` function for *kind*."""
    kind = ProxyKind(kind)
    if kind is ProxyKind.NGINX:
        from harness.configs.nginx import adapt
    elif kind is ProxyKind.APACHE:
        from harness.configs.apache import adapt
    else:
        from harness.configs.haproxy import adapt
    return adapt


def guess_proxy(text: str) -> ProxyKind:
    """The proxy kind a config's text looks like (``check`` and ``audit`` both ask)."""
    if re.search(r"^\s*<VirtualHost|^\s*ProxyPass\b|^\s*SSLProxy", text, re.M | re.I):
        return ProxyKind.APACHE
    if re.search(r"proxy_pass\s|server\s*\{|http\s*\{", text) and re.search(r";\s*$", text, re.M):
        return ProxyKind.NGINX
    if re.search(r"^\s*(backend|frontend|listen)\s+\S+\s*$", text, re.M):
        return ProxyKind.HAPROXY
    raise ConfigError("cannot tell which proxy this config is for; pass --proxy nginx|apache|haproxy")
