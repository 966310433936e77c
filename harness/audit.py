"""``trustlab audit FILE``: static findings on backend trust, each linked to the scenario that shows
it live (``trustlab run <scenario>``), and with ``--prove`` confirmed by ``trustlab check``.

Severities: ``high`` lets an impostor through (or hands the name check to the client);
``medium`` breaks the legitimate backend or widens trust (the pressure that leads to turning
verification off); ``low`` matters only for some backends (SNI-routed ones, deep chains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.configs import guess_proxy
from harness.configs.base import is_ip, is_system_bundle, read_config
from harness.errors import ConfigError
from harness.vocab import ProxyKind

SEVERITIES = ("high", "medium", "low")

__all__ = ["SEVERITIES", "AuditReport", "Finding", "audit", "guess_proxy", "render"]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    message: str
    fix: str
    scenario: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AuditReport:
    proxy: str
    config: str
    findings: list[Finding] = field(default_factory=list)
    proof: Any = None  # a CheckResult with --prove

    @property
    def high(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "high"]

    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]


def audit(
    config: str | Path, *, proxy: str | None = None, prove: bool = False, runtime: str = "local"
) -> AuditReport:
    """Static findings on *config*; with *prove*, also the live ``check`` result (on *runtime*)."""
    path = Path(config)
    text = read_config(path)
    kind = ProxyKind(proxy) if proxy else guess_proxy(text)
    if proxy:
        try:
            looks = guess_proxy(text)
        except ConfigError:
            looks = kind
        if looks is not kind:
            # Auditing with another proxy's rules finds nothing and says "0 findings": wrong.
            raise ConfigError(
                f"{path}: --proxy {kind.value}, but this looks like a config for {looks.value}"
                f"; run: trustlab audit --proxy {looks.value} {path}"
            )
    rules = _rules_for(kind)
    report = AuditReport(kind.value, str(path), sorted(rules(path, text), key=lambda f: (f.line, f.rule)))
    if prove:
        from harness.check import check

        report.proof = check(kind.value, path, runtime=runtime)
    return report


def _rules_for(kind: ProxyKind) -> Any:
    """``rules(path, text) -> list[Finding]`` for *kind*: its config module's ``audit``."""
    import importlib

    from harness.proxies import driver

    builtin = {ProxyKind.NGINX: _nginx, ProxyKind.APACHE: _apache, ProxyKind.HAPROXY: _haproxy}
    if kind in builtin:
        return builtin[kind]
    return importlib.import_module(driver(kind).config_module).audit


# -- nginx ------------------------------------------------------------------------------------
def _nginx(path: Path, text: str) -> list[Finding]:
    from harness.configs import nginx as ng

    tree = ng.parse(path)
    http = ng.wrap_http(tree)
    pools = {d["args"][0] for d in http["block"] if d["directive"] == "upstream" and d.get("args")}
    out: list[Finding] = []
    f = str(path)

    def visit(block: dict[str, Any], stack: list[dict[str, Any]]) -> None:
        for d in block.get("block", []):
            if "block" in d:
                visit(d, [*stack, d])
            if d["directive"] != "proxy_pass" or not d["args"]:
                continue
            url = d["args"][0]
            scheme, host, _, _ = ng.split_url(ng.resolve_var(url, stack) or url)
            if scheme != "https":
                continue
            here = [*stack]

            def eff(n: str, here: list[dict[str, Any]] = here) -> dict[str, Any] | None:
                return ng.effective(n, here)

            verify, ca, name, sni = (
                eff("proxy_ssl_verify"),
                eff("proxy_ssl_trusted_certificate"),
                eff("proxy_ssl_name"),
                eff("proxy_ssl_server_name"),
            )
            line = d["line"]
            verify_on = bool(verify and verify["args"] == ["on"])
            if not verify_on:
                at = verify["line"] if verify else line
                if ca:
                    out.append(
                        Finding(
                            "nginx-ca-without-verify",
                            "high",
                            f,
                            at,
                            f"proxy_ssl_trusted_certificate is set (line {ca['line']}) but proxy_ssl_verify "
                            "is "
                            "off: the CA file is never used, any certificate is accepted",
                            "add `proxy_ssl_verify on;`",
                            "nginx/ca-without-verify",
                        )
                    )
                else:
                    out.append(
                        Finding(
                            "nginx-verify-off",
                            "high",
                            f,
                            at,
                            f"proxy_pass {url}: proxy_ssl_verify is off (nginx's default): any certificate "
                            "is accepted",
                            "proxy_ssl_verify on; proxy_ssl_trusted_certificate <internal root>; "
                            "proxy_ssl_server_name on;",
                            "nginx/verify-off",
                        )
                    )
            elif not ca:
                out.append(
                    Finding(
                        "nginx-verify-no-ca",
                        "high",
                        f,
                        verify["line"] if verify else line,
                        "proxy_ssl_verify on without proxy_ssl_trusted_certificate: nginx refuses to start",
                        "add `proxy_ssl_trusted_certificate <internal root only>;`",
                        "nginx/verify-no-ca",
                    )
                )
            if ca and is_system_bundle(ca["args"][0]):
                out.append(
                    Finding(
                        "nginx-system-bundle",
                        "medium" if verify_on else "low",
                        f,
                        ca["line"],
                        f"{ca['args'][0]} is a system bundle: any public CA can issue a certificate for the "
                        "backend",
                        "trust the internal root only",
                        "nginx/system-bundle",
                    )
                )
            if name and any(
                v in name["args"][0] for v in ("$host", "$http_host", "$ssl_server_name", "$server_name")
            ):
                out.append(
                    Finding(
                        "nginx-client-controlled-name",
                        "high",
                        f,
                        name["line"],
                        f"proxy_ssl_name {name['args'][0]}: the client chooses the name the backend "
                        "certificate "
                        "is checked against (and the SNI sent)",
                        "set proxy_ssl_name to the backend's literal name",
                        "reported/nginx-gist-ip-host-sni",
                    )
                )
            if is_ip(host) and not name:
                out.append(
                    Finding(
                        "nginx-ip-target-no-name",
                        "medium",
                        f,
                        line,
                        f"proxy_pass to the IP {host} without proxy_ssl_name: nginx checks the IP, so a "
                        "certificate "
                        "naming the backend fails (and even an IP-SAN one, on 1.22); the pressure is to turn "
                        "verification off",
                        "add `proxy_ssl_name <backend name>;`",
                        "nginx/ip-target",
                    )
                )
            if host in pools and not name and verify_on:
                out.append(
                    Finding(
                        "nginx-upstream-block-name",
                        "medium",
                        f,
                        line,
                        f"proxy_pass https://{host} names an upstream block: nginx checks the certificate "
                        "against "
                        f"'{host}', not the servers' names",
                        "add `proxy_ssl_name <backend name>;`",
                        "reported/ingress-nginx-4928",
                    )
                )
            depth = eff("proxy_ssl_verify_depth")
            if verify_on and (not depth or depth["args"][0].isdigit() and int(depth["args"][0]) < 2):
                out.append(
                    Finding(
                        "nginx-verify-depth",
                        "low",
                        f,
                        depth["line"] if depth else line,
                        f"proxy_ssl_verify_depth {depth['args'][0] if depth else 'unset (default 1)'}: a "
                        "backend "
                        "whose certificate chains through two intermediates is refused",
                        "proxy_ssl_verify_depth 2 (or the depth of your PKI)",
                        "reported/nginx-1409",
                    )
                )
            if verify_on and not (sni and sni["args"] == ["on"]):
                out.append(
                    Finding(
                        "nginx-no-sni",
                        "low",
                        f,
                        sni["line"] if sni else line,
                        "proxy_ssl_server_name is off: no SNI is sent; an SNI-routed backend answers with "
                        "its "
                        "default certificate",
                        "add `proxy_ssl_server_name on;`",
                        "nginx/no-sni-routed",
                    )
                )

    visit(http, [http])
    return out


# -- Apache -----------------------------------------------------------------------------------
def _apache(path: Path, text: str) -> list[Finding]:
    from harness.configs.apache import lines
    from harness.configs.nginx import split_url

    f = str(path)
    out: list[Finding] = []
    scopes: list[dict[str, Any]] = [{"line": 1, "d": {}, "passes": []}]
    glob = scopes[0]
    cur = glob
    for ln in lines(text):
        n = ln.name
        if n == "<virtualhost":
            cur = {"line": ln.no, "d": {}, "passes": []}
            scopes.append(cur)
            continue
        if n == "</virtualhost>":
            cur = glob
            continue
        if n.startswith("ssl") or n == "proxypreservehost":
            cur["d"][n] = (ln.words[1] if len(ln.words) > 1 else "", ln.no)
        if n in ("proxypass", "proxypassmatch", "balancermember"):
            url = next((w for w in ln.words[1:] if "://" in w), "")
            if url:
                cur["passes"].append((url, ln.no))
    for sc in scopes:
        d = {**glob["d"], **sc["d"]} if sc is not glob else glob["d"]
        https = [(u, no) for u, no in sc["passes"] if split_url(u)[0] in ("https", "h2", "wss")]
        if not https:
            continue
        first = https[0][1]

        def get(k: str, d: dict[str, Any] = d, first: int = first) -> tuple[str | None, int]:
            return d.get(k, (None, first))

        verify, vline = get("sslproxyverify")
        if (verify or "none").lower() in ("none", "optional_no_ca"):
            rule = "apache-verify-none" if verify else "apache-verify-default"
            out.append(
                Finding(
                    rule,
                    "high",
                    f,
                    vline,
                    f"SSLProxyVerify {verify or 'unset (default none)'}: the chain is not checked; any CA's "
                    "certificate for the backend name is accepted",
                    "SSLProxyVerify require + SSLProxyCACertificateFile <internal root>",
                    "apache/verify-none" if verify else "apache/defaults",
                )
            )
        peer, pline = get("sslproxycheckpeername")
        cn, cline = get("sslproxycheckpeercn")
        if peer and peer.lower() == "off":
            out.append(
                Finding(
                    "apache-name-check-off",
                    "high",
                    f,
                    pline,
                    "SSLProxyCheckPeerName off: any certificate from a trusted CA is accepted for any name",
                    "SSLProxyCheckPeerName on",
                    "apache/name-check-off",
                )
            )
        elif cn and cn.lower() == "off" and not peer:
            out.append(
                Finding(
                    "apache-cn-off-peername-unset",
                    "high",
                    f,
                    cline,
                    "SSLProxyCheckPeerCN off with SSLProxyCheckPeerName unset: the name check is disabled "
                    "(the two directives are linked)",
                    "add `SSLProxyCheckPeerName on` (or drop SSLProxyCheckPeerCN)",
                    "apache/cn-check-off",
                )
            )
        exp, eline = get("sslproxycheckpeerexpire")
        if exp and exp.lower() == "off":
            out.append(
                Finding(
                    "apache-expire-check-off",
                    "high",
                    f,
                    eline,
                    "SSLProxyCheckPeerExpire off: expired and not-yet-valid certificates are accepted",
                    "SSLProxyCheckPeerExpire on",
                    "apache/expire-check-off",
                )
            )
        depth, dline = get("sslproxyverifydepth")
        if (verify or "").lower() == "require" and (not depth or depth.isdigit() and int(depth) < 2):
            out.append(
                Finding(
                    "apache-verify-depth",
                    "medium",
                    f,
                    dline,
                    f"SSLProxyVerifyDepth {depth or 'unset (default 1)'}: a root -> intermediate -> leaf "
                    "chain is "
                    "refused, so the legitimate backend is blocked",
                    "SSLProxyVerifyDepth 2 (or the depth of your PKI)",
                    "apache/seed-recipe",
                )
            )
        ca, caline = get("sslproxycacertificatefile")
        if not ca:
            ca, caline = get("sslproxycacertificatepath")
        if ca and is_system_bundle(ca):
            out.append(
                Finding(
                    "apache-system-bundle",
                    "medium",
                    f,
                    caline,
                    f"{ca} is a system bundle: any public CA can issue a certificate for the backend",
                    "trust the internal root only",
                    "apache/system-bundle",
                )
            )
        ph, phline = get("proxypreservehost")
        if ph and ph.lower() == "on":
            out.append(
                Finding(
                    "apache-preserve-host",
                    "medium",
                    f,
                    phline,
                    "ProxyPreserveHost On: Apache checks the backend certificate against the client's Host, "
                    "not the ProxyPass host",
                    "ProxyPreserveHost Off for HTTPS backends (or a certificate for the public name)",
                    "apache/preserve-host",
                )
            )
        for url, no in https:
            host = split_url(url)[1]
            if is_ip(host):
                out.append(
                    Finding(
                        "apache-ip-target",
                        "medium",
                        f,
                        no,
                        f"ProxyPass to the IP {host}: no SNI and the name check uses the IP; a certificate "
                        "naming "
                        "the backend is refused",
                        "proxy to the backend's name",
                        "apache/ip-target",
                    )
                )
    return out


# -- HAProxy ----------------------------------------------------------------------------------
def _haproxy(path: Path, text: str) -> list[Finding]:
    from harness.configs.haproxy import parse, server_options

    f = str(path)
    out: list[Finding] = []
    glob_verify = "required"
    glob_line = 0
    defaults: dict[str, Any] = {}
    for sec in parse(text):
        local: dict[str, Any] = {}
        for no, _, w in sec.body:
            if sec.kind == "global" and w[0] == "ssl-server-verify" and len(w) > 1:
                glob_verify, glob_line = w[1], no
            if w[0] == "default-server":
                (defaults if sec.kind == "defaults" else local).update(server_options(w))
            if w[0] != "server" or len(w) < 3:
                continue
            o = {**defaults, **local, **server_options(w)}
            if o.get("ssl") is not True or "no-ssl" in server_options(w):
                continue
            verify = o.get("verify", glob_verify)
            if verify == "none":
                out.append(
                    Finding(
                        "haproxy-verify-none",
                        "high",
                        f,
                        no if "verify" in o else glob_line,
                        f"server {w[1]}: verify none: any certificate is accepted",
                        "verify required ca-file <internal root> verifyhost <backend name>",
                        "haproxy/verify-none",
                    )
                )
                continue
            if "ca-file" not in o:
                out.append(
                    Finding(
                        "haproxy-no-ca-file",
                        "medium",
                        f,
                        no,
                        f"server {w[1]}: ssl with verification required but no ca-file: HAProxy refuses to "
                        "start "
                        "(and suggests `verify none`)",
                        "add ca-file <internal root>",
                        "haproxy/defaults",
                    )
                )
            elif is_system_bundle(str(o["ca-file"])):
                out.append(
                    Finding(
                        "haproxy-system-bundle",
                        "medium",
                        f,
                        no,
                        f"server {w[1]}: ca-file {o['ca-file']} is a system bundle: any public CA can issue "
                        "a "
                        "certificate for the backend",
                        "trust the internal root only",
                        "nginx/system-bundle",
                    )
                )
            sni = o.get("sni")
            if "verifyhost" not in o and not isinstance(sni, str):
                out.append(
                    Finding(
                        "haproxy-no-name-check",
                        "high",
                        f,
                        no,
                        f"server {w[1]}: neither verifyhost nor sni: the certificate's name is never "
                        "checked, so any "
                        "certificate from the trusted CA (a sibling service's) is accepted",
                        "add verifyhost <backend name> (and sni str(<backend name>))",
                        "haproxy/ca-only",
                    )
                )
            elif "verifyhost" not in o and isinstance(sni, str) and not sni.startswith("str("):
                out.append(
                    Finding(
                        "haproxy-client-controlled-sni",
                        "high",
                        f,
                        no,
                        f"server {w[1]}: sni {sni} without verifyhost: the name checked is the one the "
                        "request "
                        "carries",
                        "add verifyhost <backend name>",
                        "haproxy/ca-sni",
                    )
                )
            if "no-verifyhost" in o:
                out.append(
                    Finding(
                        "haproxy-no-verifyhost",
                        "high",
                        f,
                        no,
                        f"server {w[1]}: no-verifyhost disables the name check",
                        "remove no-verifyhost",
                        "haproxy/ca-only",
                    )
                )
    return out


def render(report: AuditReport) -> str:
    lines = [f"trustlab audit ({report.proxy}) {report.config}: {len(report.findings)} finding(s)"]
    for fnd in report.findings:
        lines.append(f"{fnd.file}:{fnd.line}: {fnd.severity.upper()} {fnd.rule}: {fnd.message}")
        lines.append(f"    fix: {fnd.fix}")
        lines.append(f"    see it live: trustlab run {fnd.scenario}")
    if report.proof is not None:
        from harness.check import render as render_check

        lines += ["", "--prove: trustlab check", render_check(report.proof)]
    if not report.findings:
        lines.append("no findings (static rules only; `trustlab check` runs it live)")
    return "\n".join(lines)
