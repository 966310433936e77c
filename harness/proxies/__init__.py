"""One driver per proxy kind: ``driver(ProxyKind.NGINX).render(scenario, ctx)``."""

from __future__ import annotations

from harness.proxies.apache import ApacheDriver
from harness.proxies.base import Driver, RenderContext
from harness.proxies.haproxy import HAProxyDriver
from harness.proxies.nginx import NginxDriver
from harness.vocab import ProxyKind

_DRIVERS: dict[ProxyKind, Driver] = {
    ProxyKind.NGINX: NginxDriver(),
    ProxyKind.APACHE: ApacheDriver(),
    ProxyKind.HAPROXY: HAProxyDriver(),
}


def driver(kind: ProxyKind | str) -> Driver:
    """The driver for one proxy kind."""
    return _DRIVERS[ProxyKind(kind)]


__all__ = ["Driver", "RenderContext", "driver"]
