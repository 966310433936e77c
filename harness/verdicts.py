"""Verdicts on the circulating claims (docs/claims.md, with their sources), computed from a run's cells.

Each claim has one rule, written here in code and quoted in its result: the rule reads
outcomes (and the SNI the backend saw) from :class:`~harness.results.Results` and returns a
:class:`Verdict` with the finding that decided it. Nothing is typed in: when a scenario's
real outcome changes, the verdict changes with it (``tests/test_verdicts.py`` flips single
cells to prove it).

The run cannot measure how *common* a mistake is or whether advice is *wise*; a rule tests
the part of a claim a live proxy can show, and its ``rule`` text says which part.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from harness.errors import LabError
from harness.proxies import names as proxy_names
from harness.results import Cell, Results
from harness.vocab import BACKEND_NAME, IDENTITY_IDS, LEGITIMATE_IDS, OPTIONAL_IDENTITY_IDS, Outcome


class Verdict(enum.StrEnum):
    """What a run says about a claim."""

    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    PARTLY = "partly true"
    DEPENDS = "depends"


@dataclass(frozen=True)
class ClaimResult:
    """One claim, its rule, the verdict the run gave it and the finding behind the verdict."""

    number: int
    claim: str
    verdict: Verdict
    rule: str
    finding: str
    evidence: tuple[str, ...]


CLAIMS: dict[int, str] = {
    1: "nginx encrypts to an HTTPS backend but does not verify its certificate by default.",
    2: "nginx needs three lines (proxy_ssl_verify on, proxy_ssl_trusted_certificate, "
    "proxy_ssl_server_name on); missing any one of them weakens security.",
    3: "A CA file configured without proxy_ssl_verify on is a common nginx mistake "
    "(the run tests that it is a mistake, not how common it is).",
    4: "Apache is strict by design as a TLS client; its recommended block (SSLProxyEngine, "
    "SSLProxyVerify require, CheckPeerName, CheckPeerExpire, CACertificateFile, ProxyPreserveHost On) "
    "is the fix.",
    5: "Using an IP address instead of a host name as the backend target breaks SNI (and the name check).",
    6: "Trusting a full system CA bundle widens the attack surface; trust only the internal CA.",
    7: "Wildcard internal certificates should never be used.",
    8: "Apache verifies that the certificate is issued by the internal PKI, names the backend and is "
    "not expired; misconfiguration risk is low for Apache and high for nginx.",
}


# -- reading cells ---------------------------------------------------------------------------
class _View:
    """Lookups over one run, failing with a clear message when a needed scenario is absent."""

    def __init__(self, results: Results) -> None:
        self.by = {(c.scenario, c.identity): c for c in results.cells}
        self.scenarios = list(dict.fromkeys(c.scenario for c in results.cells))
        self.used: list[str] = []

    def cells(self, scenario: str) -> list[Cell]:
        found = [c for (s, _), c in self.by.items() if s == scenario]
        if not found:
            raise LabError(f"claims need scenario {scenario!r} in the run; run the full matrix (run_matrix())")
        return found

    def cell(self, scenario: str, identity: str) -> Cell:
        self.cells(scenario)
        try:
            c = self.by[(scenario, identity)]
        except KeyError:
            raise LabError(f"claims need identity {identity!r} of {scenario!r} in the run") from None
        self.used.append(f"{scenario} x {identity} = {c.outcome.value}")
        return c

    def impostors(self, scenario: str) -> list[Cell]:
        return [c for c in self.cells(scenario) if c.identity not in LEGITIMATE_IDS]

    def spoofed(self, scenario: str) -> list[str]:
        """Impostor ids whose response reached the client through *scenario*."""
        out = [c.identity for c in self.impostors(scenario) if c.outcome is Outcome.SPOOFED]
        self.used.append(f"{scenario}: {len(out)} of {len(self.impostors(scenario))} impostors spoofed")
        return out

    def served(self, scenario: str) -> bool:
        return self.cell(scenario, "legit").outcome is Outcome.SERVED

    def outcome(self, scenario: str) -> str:
        """A short summary: ``config-rejected`` when every cell agrees, else legit's outcome."""
        kinds = {c.outcome for c in self.cells(scenario)}
        if len(kinds) == 1:
            return f"every cell {next(iter(kinds)).value}"
        return f"legit {self.cell(scenario, 'legit').outcome.value}"

    def extra_spoofs(self, scenario: str, control: str) -> list[str]:
        """Impostors *scenario* lets through that its *control* blocks."""
        spoofed_by_control = set(self.spoofed(control))
        # Only identities the control ran: an optional one (revoked) it never saw proves nothing.
        return [i for i in self.spoofed(scenario) if i not in spoofed_by_control and (control, i) in self.by]

    def variants(self, proxy: str) -> list[str]:
        """The proxy's variants of the fresh-handshake kind: the built-in identities only, one policy.

        Scenarios that add identities (mTLS, revocation) or run two policies (reuse) test other
        classes; counting them would move claim 8's share with every scenario added."""
        from harness.scenarios import builtin

        known = builtin()
        plain = {s for s in self.scenarios if all(i in IDENTITY_IDS for (sc, i) in self.by if sc == s)}
        return [
            s
            for s in self.scenarios
            if s.startswith(f"{proxy}/")
            and s != f"{proxy}/good"
            and s in plain
            and not (s in known and known[s].multi_policy)
        ]


def _names(ids: Iterable[str]) -> str:
    ids = list(ids)
    return ", ".join(ids) if ids else "none"


def _by_count(hits: int, total: int) -> Verdict:
    if total and hits == total:
        return Verdict.CONFIRMED
    return Verdict.REFUTED if hits == 0 else Verdict.PARTLY


# -- the rules -------------------------------------------------------------------------------
def _claim1(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "nginx/verify-off (no proxy_ssl_* line): confirmed if legit is served over TLS and every "
        "impostor is spoofed; refuted if no impostor is spoofed; else partly true."
    )
    legit = v.cell("nginx/verify-off", "legit")
    spoofed = v.spoofed("nginx/verify-off")
    total = len(v.impostors("nginx/verify-off"))
    encrypted = legit.outcome is Outcome.SERVED and bool(legit.tls)
    if not spoofed:
        verdict = Verdict.REFUTED
    elif encrypted and len(spoofed) == total:
        verdict = Verdict.CONFIRMED
    else:
        verdict = Verdict.PARTLY
    finding = (
        f"legit {legit.outcome.value} over {legit.tls or 'no TLS'}; {len(spoofed)} of {total} impostors "
        f"spoofed ({_names(spoofed)})"
    )
    return verdict, rule, finding


def _claim2(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "nginx/good must serve legit and block every built-in impostor; each line's absence weakens security "
        "if its scenario spoofs an impostor nginx/good blocks (no verify: nginx/ca-without-verify, "
        "no CA: nginx/verify-no-ca, no SNI: nginx/no-sni). confirmed if all three weaken; partly true "
        "if one or two do; refuted if none does or nginx/good fails."
    )
    # The claim is about three lines; none of them decides how a name is matched (a CN-only
    # certificate, a CN beside a sibling's SAN): judged on the built-in impostors, and the optional
    # ones good still lets through are named in the finding (issue 21: no hidden holes in good).
    through = v.spoofed("nginx/good")
    beyond = [i for i in through if i in OPTIONAL_IDENTITY_IDS]
    good_ok = v.served("nginx/good") and not [i for i in through if i not in OPTIONAL_IDENTITY_IDS]
    missing = {
        "proxy_ssl_verify": "nginx/ca-without-verify",
        "proxy_ssl_trusted_certificate": "nginx/verify-no-ca",
        "proxy_ssl_server_name": "nginx/no-sni",
    }
    parts, weakened = [], 0
    for line, sid in missing.items():
        extra = v.extra_spoofs(sid, "nginx/good")
        weakened += bool(extra)
        if extra:
            parts.append(f"without {line}: {len(extra)} impostors spoofed")
        else:
            parts.append(f"without {line}: no impostor spoofed ({v.outcome(sid)})")
    if "nginx/no-sni-routed" in v.scenarios:
        parts.append(
            "without SNI to an SNI-routed backend: legit " + v.cell("nginx/no-sni-routed", "legit").outcome.value
        )
    if not good_ok or weakened == 0:
        verdict = Verdict.REFUTED
    else:
        verdict = Verdict.CONFIRMED if weakened == len(missing) else Verdict.PARTLY
    finding = f"nginx/good {'serves legit and blocks every impostor' if good_ok else 'fails'}; " + "; ".join(parts)
    if beyond:
        finding += f"; none of the three lines stops {_names(beyond)}, which nginx/good lets through"
    return verdict, rule, finding


def _claim3(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "That it is a mistake: nginx/ca-without-verify (CA file and SNI, no proxy_ssl_verify) must spoof "
        "every impostor nginx/good blocks: confirmed if all, refuted if none, else partly true. How "
        "common it is, a run cannot show (see the reports cited in the scenario file)."
    )
    # Like with like: the impostors both scenarios run (good also runs the optional identities).
    blocked_by_good = [
        c.identity
        for c in v.impostors("nginx/good")
        if c.outcome is Outcome.BLOCKED and ("nginx/ca-without-verify", c.identity) in v.by
    ]
    extra = v.extra_spoofs("nginx/ca-without-verify", "nginx/good")
    verdict = _by_count(len([i for i in blocked_by_good if i in extra]), len(blocked_by_good))
    same = all(
        v.by[("nginx/ca-without-verify", c.identity)].outcome is c.outcome
        for c in v.cells("nginx/verify-off")
        if ("nginx/ca-without-verify", c.identity) in v.by
    )
    finding = (
        f"{len(extra)} of the {len(blocked_by_good)} impostors nginx/good blocks are spoofed; outcomes "
        f"{'identical to' if same else 'differ from'} nginx/verify-off (no proxy_ssl_* line at all)"
    )
    return verdict, rule, finding


def _claim4(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "Two parts: strict by design = apache/defaults (only SSLProxyEngine on) spoofs no impostor; the "
        "published block works = apache/seed-recipe serves legit and spoofs no impostor. confirmed if "
        "both hold, refuted if neither, else partly true."
    )
    default_spoofs = v.spoofed("apache/defaults")
    recipe_legit = v.cell("apache/seed-recipe", "legit")
    recipe_spoofs = v.spoofed("apache/seed-recipe")
    strict = not default_spoofs
    works = recipe_legit.outcome is Outcome.SERVED and not recipe_spoofs
    verdict = {2: Verdict.CONFIRMED, 1: Verdict.PARTLY, 0: Verdict.REFUTED}[strict + works]
    finding = (
        f"apache/defaults spoofs {len(default_spoofs)} impostors ({_names(default_spoofs)}); "
        f"apache/seed-recipe: legit {recipe_legit.outcome.value} ({recipe_legit.reason}), "
        f"{len(recipe_spoofs)} impostors spoofed"
    )
    return verdict, rule, finding


def _claim5(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "IP targets nginx/ip-target and apache/ip-target. SNI broken = the backend saw no SNI in any "
        "of their cells; name check broken = an impostor is spoofed. confirmed if both break; depends "
        "if SNI breaks, no impostor gets through, legit is refused and nginx/ip-target-with-name "
        "(proxy_ssl_name) serves legit with SNI and spoofs nothing (it fails closed, and one line "
        "fixes it); refuted if SNI is sent; else partly true."
    )
    targets = ["nginx/ip-target", "apache/ip-target"]
    no_sni = all(c.sni is None for t in targets for c in v.cells(t))
    spoofs = {t: v.spoofed(t) for t in targets}
    any_spoof = any(spoofs.values())
    legit = {t: v.cell(t, "legit").outcome for t in targets}
    fix = v.cell("nginx/ip-target-with-name", "legit")
    fix_works = fix.outcome is Outcome.SERVED and fix.sni == BACKEND_NAME and not v.spoofed("nginx/ip-target-with-name")
    if not no_sni:
        verdict = Verdict.REFUTED
    elif any_spoof:
        verdict = Verdict.CONFIRMED
    elif all(o is not Outcome.SERVED for o in legit.values()) and fix_works:
        verdict = Verdict.DEPENDS
    else:
        verdict = Verdict.PARTLY
    finding = (
        f"SNI seen by the backend: {'none' if no_sni else 'some'}; "
        + "; ".join(f"{t}: legit {legit[t].value}, {len(spoofs[t])} impostors spoofed" for t in targets)
        + f" (name checked against the IP: {v.cell('nginx/ip-target', 'legit').reason}); "
        f"nginx/ip-target-with-name: legit {fix.outcome.value}, SNI {fix.sni or 'none'}"
    )
    return verdict, rule, finding


def _claim6(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "For each proxy with a <proxy>/system-bundle scenario: widened if it spoofs an impostor that "
        "<proxy>/good blocks (public-ca: a certificate for the backend's name from a public CA). "
        "confirmed if widened for every such proxy, refuted if for none, else partly true."
    )
    proxies = [p for p in proxy_names() if f"{p}/system-bundle" in v.scenarios]
    if not proxies:
        raise LabError("claim 6 needs a <proxy>/system-bundle scenario in the run")
    widened = {p: v.extra_spoofs(f"{p}/system-bundle", f"{p}/good") for p in proxies}
    verdict = _by_count(sum(bool(w) for w in widened.values()), len(proxies))
    finding = "; ".join(f"{p}/system-bundle spoofs {_names(w)} beyond {p}/good" for p, w in widened.items())
    return verdict, rule, finding


def _one_label_finding(v: _View, one_label: dict[str, bool]) -> str:
    """Which <proxy>/good accept *.internal as backend-api.internal, and the first refusal's reason."""
    accepted = [f"{p}/good" for p, ok in one_label.items() if ok]
    refused = [f"{p}/good" for p, ok in one_label.items() if not ok]
    finding = f"*.internal accepted as backend-api.internal by {_names(accepted)}; refused by {_names(refused)}"
    if refused:
        finding += f" ({v.cell(refused[0], 'wildcard').reason})"
    return finding


def _claim7(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "The danger a run can show: a wildcard issued by the internal CA impersonates the backend "
        "through <proxy>/good. Two names: *.internal for backend-api.internal (one label after the "
        "star: the wildcard identity) and, where the run has <proxy>/subdomain-backend, *.svc.internal "
        "for api.svc.internal (wildcard-parent). A proxy is exposed if either gets through. confirmed "
        "if every proxy is exposed, refuted if none is, depends (on the proxy and the name) otherwise."
    )
    proxies = [p for p in proxy_names() if f"{p}/good" in v.scenarios]
    one_label = {p: v.cell(f"{p}/good", "wildcard").outcome is Outcome.SPOOFED for p in proxies}
    parent = {
        p: v.cell(f"{p}/subdomain-backend", "wildcard-parent").outcome is Outcome.SPOOFED
        for p in proxies
        if f"{p}/subdomain-backend" in v.scenarios
    }
    exposed = [p for p in proxies if one_label[p] or parent.get(p, False)]
    verdict = _by_count(len(exposed), len(proxies))
    if verdict is Verdict.PARTLY:
        verdict = Verdict.DEPENDS
    finding = _one_label_finding(v, one_label)
    if parent:
        finding += (
            "; *.svc.internal accepted as api.svc.internal by "
            + _names(f"{p}/subdomain-backend" for p, ok in parent.items() if ok)
            + ", refused by "
            + _names(f"{p}/subdomain-backend" for p, ok in parent.items() if not ok)
        )
    return verdict, rule, finding


def _claim8(v: _View) -> tuple[Verdict, str, str]:
    rule = (
        "Four parts, read from apache/defaults (what Apache does unless told): issuer checked = "
        "rogue-ca, self-signed and public-ca not spoofed; name checked = wrong-name not spoofed; expiry "
        "checked = expired and not-yet-valid not spoofed. confirmed if all three hold, refuted if none, "
        "else partly true. 'Risk is low for Apache and high for nginx' is not decided by the run: the "
        "share of variants that let an impostor in depends on which variants the lab carries (the "
        "finding reports it as a count, not a ranking)."
    )
    sp = set(v.spoofed("apache/defaults"))
    parts = {
        "issuer checked": not sp & {"rogue-ca", "self-signed", "public-ca"},
        "name checked": "wrong-name" not in sp,
        "expiry checked": not sp & {"expired", "not-yet-valid"},
    }
    share: dict[str, tuple[int, int]] = {}
    for proxy in ("apache", "nginx"):
        variants = v.variants(proxy)
        weak = [s for s in variants if v.extra_spoofs(s, f"{proxy}/good")]
        share[proxy] = (len(weak), len(variants))
    a, n = share["apache"], share["nginx"]
    verdict = _by_count(sum(parts.values()), len(parts))
    finding = (
        ", ".join(f"{k}: {'yes' if ok else 'no'}" for k, ok in parts.items())
        + f" (apache/defaults spoofs {_names(sorted(sp))}); not ranked: of the variants this lab carries, "
        f"apache {a[0]} of {a[1]} and nginx {n[0]} of {n[1]} let in an impostor their good control blocks"
    )
    return verdict, rule, finding


RULES: dict[int, Callable[[_View], tuple[Verdict, str, str]]] = {
    1: _claim1,
    2: _claim2,
    3: _claim3,
    4: _claim4,
    5: _claim5,
    6: _claim6,
    7: _claim7,
    8: _claim8,
}


def evaluate(results: Results) -> list[ClaimResult]:
    """Every claim's verdict, computed from *results* (the full matrix)."""
    out = []
    for number, rule_fn in RULES.items():
        view = _View(results)
        verdict, rule, finding = rule_fn(view)
        out.append(ClaimResult(number, CLAIMS[number], verdict, rule, finding, tuple(dict.fromkeys(view.used))))
    return out
