"""Request matchers, as every adapter declares them, and the one request that satisfies a route's.

A route's condition is written in disjunctive form: alternatives (``||`` / ``or``), each a list of
:class:`Term` (``&&`` / juxtaposition), a term possibly negated. :func:`request_for` builds, for the
first alternative it can, a request from its positive terms (a regex gets an example string from
its own syntax tree), then checks that request against *every* term of that alternative (negated
ones must not match): only a request that provably matches is returned, else the reason why not.
The real proxy then has the last word: a request that does not reach the upstream gets no marker,
and its cell says so.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

# The stdlib's own regex parser and its opcodes (importing sre_parse warns since 3.11).
sre_parse: Any = importlib.import_module("re._parser")
C: Any = importlib.import_module("re._constants")

#: What a term reads from the request.
KINDS = ("host", "path", "method", "header", "query", "client")
#: How it compares: exact, prefix, suffix, substring, regex (search), domain (HAProxy ``-m dom``),
#: path directory (HAProxy ``-m dir``), present at all.
OPS = ("eq", "beg", "end", "sub", "reg", "dom", "dir", "found")

_HOST_OK = re.compile(r"^[A-Za-z0-9._-]+$")
_HEADER_NAME_OK = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Term:
    """One matcher: *kind* (of :data:`KINDS`), *key* (a header or query parameter name), *op*
    (of :data:`OPS`), *value*; *icase*: compared case-insensitively."""

    kind: str
    op: str
    value: str = ""
    key: str = ""
    icase: bool = False
    negated: bool = False
    #: How the config wrote it, for reasons.
    text: str = ""


@dataclass
class Request:
    host: str | None = None
    path: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def target(self) -> str:
        path = self.path or "/"
        if self.query:
            path += ("&" if "?" in path else "?") + urlencode(self.query)
        return path


@dataclass(frozen=True)
class Built:
    """The request that matches a route: what :class:`~harness.configs.base.Route` carries."""

    host: str | None
    path: str
    method: str
    headers: tuple[tuple[str, str], ...]


def request_for(alternatives: list[list[Term]], *, default_host: str) -> Built | str:
    """The request matching the first satisfiable alternative, or the reason none can be built."""
    reasons: list[str] = []
    for terms in alternatives:
        got = _build(terms, default_host)
        if isinstance(got, str):
            reasons.append(got)
            continue
        return got
    return "; ".join(dict.fromkeys(reasons)) or "no condition"


def matches_any(alternatives: list[list[Term]], built: Built, *, default_host: str) -> bool:
    """Whether the request *built* matches one of *alternatives* (an earlier rule that would
    take it first)."""
    path, _, query = built.path.partition("?")
    req = Request(built.host or default_host, path, built.method, dict(built.headers), dict(parse_qsl(query)))
    return any(alt and all(matches(t, req) != t.negated for t in alt) for alt in alternatives)


def unshadowed_request(
    alternatives: list[list[Term]],
    earlier: Sequence[tuple[str, list[list[Term]] | str]],
    *,
    default_host: str,
    none: str,
) -> Built | str:
    """The request of the first of *alternatives* that can be built and that no *earlier* rule
    ((its label, its alternatives or why they cannot be read), tried first by the proxy) matches;
    or why none can (*none* when there is no alternative at all)."""
    reasons: list[str] = []
    for alt in alternatives:
        built = request_for([alt], default_host=default_host)
        if isinstance(built, str):
            reasons.append(built)
            continue
        taker = next(
            (
                label
                for label, other in earlier
                if not isinstance(other, str) and matches_any(other, built, default_host=default_host)
            ),
            None,
        )
        if taker:
            reasons.append(f"the request it needs ({built.method} {built.path}) is taken first by {taker}")
            continue
        return built
    return "; ".join(dict.fromkeys(reasons)) or none


def _build(terms: list[Term], default_host: str) -> Built | str:
    req = Request()
    for t in terms:
        if t.negated:
            continue
        why = _satisfy(t, req)
        if why:
            return why
    if req.host is None:
        req.host = default_host
    if req.path is None:
        req.path = "/"
    for t in terms:
        if matches(t, req) == t.negated:
            what = "is matched" if t.negated else "is not matched"
            return f"{t.text or t.kind}: {what} by the request the other matchers need"
    return Built(
        req.host if req.host != default_host else None, req.target(), req.method or "GET", tuple(req.headers.items())
    )


def _satisfy(t: Term, req: Request) -> str:
    """Make *req* match *t* (an empty string), or say why it cannot."""
    name = t.text or f"{t.kind} {t.op} {t.value!r}"
    if t.kind not in KINDS:
        return name  # the adapter's own reason
    if t.kind == "client":
        return "" if matches(t, req) else f"{name}: the lab's client is 127.0.0.1, outside it"
    value = t.value
    if t.op == "reg":
        ex = regex_example(value, start="/" if t.kind == "path" else "", icase=t.icase)
        if ex is None:
            return f"{name}: no request the lab can send matches this regular expression"
        value = ex
    elif t.op == "found":
        value = "1"
    elif t.op == "dom" and t.kind == "host":
        value = value.strip(".")
    elif t.op == "beg" and t.kind == "path":
        value = value.rstrip("/") + "/"  # a directory under the prefix (a prefix `/api` matches `/api/`)
    elif t.op == "end" and t.kind == "path" or t.op == "sub" and t.kind == "path":
        value = value if value.startswith("/") else "/" + value
    elif t.op == "dir" and t.kind == "path":
        value = "/" + value.strip("/") + "/"
    if t.kind == "host":
        if t.op in ("beg",):
            value = value.rstrip(".") + (".trustlab.test" if not value.endswith(".") else "trustlab.test")
        elif t.op in ("end",):
            value = "www" + value if value.startswith(".") else value
        value = value.split(":")[0] if not value.startswith("[") else value
        if value.startswith("*."):
            value = "www" + value[1:]
        if not _HOST_OK.match(value):
            return f"{name}: {value!r} is not a host name the lab can send"
        return _set(req, "host", value, name)
    if t.kind == "path":
        if not value.startswith("/"):
            return f"{name}: {value!r} is not a path a request can carry"
        return _set(req, "path", quote(value, safe="/%:@!$&'()*+,;=-._~"), name)
    if t.kind == "method":
        return _set(req, "method", value.upper(), name)
    if t.kind == "header":
        if not _HEADER_NAME_OK.match(t.key) or any(c in value for c in "\r\n\0"):
            return f"{name}: not a header the lab can send"
        if t.key.lower() == "host":
            return _set(req, "host", value, name)
        old = req.headers.get(t.key)
        if old is not None and old != value:
            return f"{name}: header {t.key} would need two values"
        req.headers[t.key] = value
        return ""
    if t.kind == "query":
        old = req.query.get(t.key)
        if old is not None and old != value:
            return f"{name}: query parameter {t.key} would need two values"
        req.query[t.key] = value
        return ""
    return f"{name}: a matcher the lab cannot build a request for"  # pragma: no cover (KINDS above)


def _set(req: Request, attr: str, value: str, name: str) -> str:
    old = getattr(req, attr)
    if old is not None and old != value:
        return f"{name}: the request would need {attr} {old!r} and {value!r} at once"
    setattr(req, attr, value)
    return ""


def matches(t: Term, req: Request) -> bool:
    """Whether *req* matches *t* (ignoring its negation)."""
    if t.kind == "client":
        try:
            return ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(t.value, strict=False)
        except ValueError:
            return False
    got: str | None
    if t.kind == "host":
        got = req.host
    elif t.kind == "path":
        got = req.path
    elif t.kind == "method":
        got = req.method or "GET"
    elif t.kind == "header":
        got = (
            req.host
            if t.key.lower() == "host"
            else next((v for k, v in req.headers.items() if k.lower() == t.key.lower()), None)
        )
    elif t.kind == "query":
        got = req.query.get(t.key)
    else:
        return False
    if got is None:
        return False
    if t.op == "found":
        return True
    want = t.value
    if t.kind in ("host", "method"):
        got, want = got.lower(), want.lower()  # host names and (here) methods compare by case
    elif t.icase:
        got, want = got.lower(), want.lower()
    if t.op == "eq":
        if t.kind == "host" and want.startswith("*."):
            return got.endswith(want[1:]) and got.count(".") == want.count(".")
        return got == want
    if t.op == "beg":
        return got.startswith(want)
    if t.op == "end":
        return got.endswith(want)
    if t.op == "sub":
        return want in got
    if t.op == "dom":
        w = want.strip(".")
        return got == w or got.endswith("." + w) or got.startswith(w + ".") or f".{w}." in got
    if t.op == "dir":
        w = want.strip("/")
        return f"/{w}/" in got + "/" if w else True
    if t.op == "reg":
        try:
            return re.search(t.value, got, re.IGNORECASE if t.icase else 0) is not None
        except re.error:
            return False
    return False


# -- an example string for a regular expression ---------------------------------------------
_PREFERRED = "a0/-._~A"


def regex_example(pattern: str, *, start: str = "", icase: bool = False) -> str | None:
    """A short string that *pattern* (searched, as nginx, HAProxy, Traefik and Envoy's regexes are
    applied) matches, starting with *start* when given, or None. Built from the pattern's own
    syntax tree (the shortest repetition, the first branch, a character its class allows) and
    checked with the pattern itself."""
    flags = re.IGNORECASE if icase else 0
    try:
        compiled = re.compile(pattern, flags)
        tree = sre_parse.parse(pattern, flags)
    except (re.error, OverflowError, RecursionError):
        return None
    groups: dict[int, str] = {}
    try:
        core = _gen(list(tree), groups)
    except _Impossible:
        return None
    for candidate in (core, start + core, start + core.lstrip("/"), start):
        if start and not candidate.startswith(start):
            continue
        if compiled.search(candidate) and "\n" not in candidate and "\0" not in candidate:
            return candidate
    return None


class _Impossible(Exception):
    pass


def _gen(items: list[tuple[Any, Any]], groups: dict[int, str]) -> str:
    out = []
    for op, av in items:
        out.append(_one(op, av, groups))
    return "".join(out)


def _one(op: Any, av: Any, groups: dict[int, str]) -> str:
    if op is C.LITERAL:
        return chr(av)
    if op is C.NOT_LITERAL:
        return next(c for c in _PREFERRED if ord(c) != av)
    if op is C.ANY:
        return "a"
    if op is C.IN:
        return _from_class(av)
    if op is C.AT:
        return ""
    if op is C.BRANCH:
        _, branches = av
        for b in branches:
            try:
                return _gen(list(b), groups)
            except _Impossible:
                continue
        raise _Impossible
    if op is C.SUBPATTERN:
        gid, _add, _del, sub = av
        text = _gen(list(sub), groups)
        if gid is not None:
            groups[gid] = text
        return text
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
        lo, _hi, sub = av
        if lo > 50:
            raise _Impossible
        return _gen(list(sub), groups) * lo if lo else ""
    if op is C.GROUPREF:
        return groups.get(av, "")
    if op in (C.ASSERT, C.ASSERT_NOT):
        return ""  # the final check decides
    if op is C.CATEGORY:
        return _from_class([(op, av)])
    raise _Impossible


def _from_class(items: list[tuple[Any, Any]]) -> str:
    negate = bool(items) and items[0][0] is C.NEGATE
    body = items[1:] if negate else items
    candidates = list(_PREFERRED)
    for op, av in body:
        if op is C.LITERAL:
            candidates.insert(0, chr(av))
        elif op is C.RANGE:
            candidates.insert(0, chr(av[0]))
    for ch in candidates:
        if _in(body, ch) != negate and ch not in "\n\0":
            return ch
    raise _Impossible


def _in(items: list[tuple[Any, Any]], ch: str) -> bool:
    o = ord(ch)
    for op, av in items:
        if op is C.LITERAL and av == o:
            return True
        if op is C.RANGE and av[0] <= o <= av[1]:
            return True
        if op is C.CATEGORY:
            name = str(av)
            hit = {
                "CATEGORY_DIGIT": ch.isdigit(),
                "CATEGORY_NOT_DIGIT": not ch.isdigit(),
                "CATEGORY_WORD": ch.isalnum() or ch == "_",
                "CATEGORY_NOT_WORD": not (ch.isalnum() or ch == "_"),
                "CATEGORY_SPACE": ch.isspace(),
                "CATEGORY_NOT_SPACE": not ch.isspace(),
            }.get(name, False)
            if hit:
                return True
    return False
