"""Break-and-fix challenges: a broken proxy config, a goal, tiered hints, graded on the real server.

A challenge lives at ``labs/challenges/<id>/`` (shipped as package data with the rest of
``labs/``)::

    labs/challenges/nginx-ca-without-verify/
        challenge.toml        title, proxy, story, goal, hints, lesson, what the grader requires
        nginx.conf            the broken starting config (a real config file for that proxy)
        solution/nginx.conf   the reference solution (same file name)

``challenge.toml``::

    title = "The CA file is there, so it verifies... right?"
    proxy = "nginx"
    config = "nginx.conf"            # the starting file; the solution has the same name
    files = []                       # further files the config reads, beside it (Traffic Server's
                                     # remap.config): shipped with the start and in solution/,
                                     # copied by start, read by the grader beside the attempt
    difficulty = "warm-up"           # warm-up, easy, medium, puzzle
    level = "warm-up"                # the path: warm-up -> practitioner -> expert (its track: the proxy)
    minutes = 5
    story = "..."
    goal = "..."
    hints = ["tier 1 (a nudge)", "tier 2 (where to look)", "tier 3 (nearly the answer)"]
    explanation = "..."              # why the reference solution works (shown with it)

    [lesson]
    text = "..."
    sources = ["https://nginx.org/..."]

    [backend]                        # the backend the grader pins (check(..., pinned=...))
    name = "backend-api.internal"    # the only name the legitimate certificate carries
    port = 8443
    address = "10.203.0.10"          # where the lab puts it (an IP target must use this)
    ca_file = "/etc/nginx/tls/internal-pki.pem"  # the internal root: the one CA file on the host

    [request]                        # the request the grade is about
    host = "portal.example.com"
    path = "/"

    [grader]
    served = ["legit"]               # identities that must be served (legit-deep may be added)
    accept = []                      # impostors the stated PKI policy rules out
    policy = ""                      # required when accept is not empty: that policy, in words
    sni_routing = false              # the legitimate backend routes by SNI (multi-site)

Grading runs the file on the real proxy (:func:`harness.check.check`) against every identity
with the declared backend pinned: the attempt cannot choose what "legitimate" means. The
challenge is solved when every upstream goes to that backend expecting its name, the declared
request reaches it and is served, and at every upstream each identity in ``served`` was served
and every impostor not in ``accept`` was blocked by the proxy's own verification. A failure
says which upstream (file and line), what the impostor is (:data:`harness.vocab.IDENTITIES`)
and which check was missing (the ``trustlab audit`` rules that fire on the attempt).

Progress (solves, hint tiers shown, solutions viewed) lives in one JSON file in the user's state
directory: ``$TRUSTLAB_STATE_DIR``, else ``$XDG_STATE_HOME/trustlab``, else
``~/.local/state/trustlab``. CTF mode: with ``TRUSTLAB_WORKSHOP_SECRET`` set, a solve yields the
flag ``trustlab{<32 hex digits of HMAC-SHA256(secret, challenge id)>}``; with
``TRUSTLAB_WORKSHOP_HINTS=off`` hints and solutions are switched off.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import re
import tempfile
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.assets import asset_dir
from harness.errors import LabError, ScenarioError, read_input
from harness.vocab import IDENTITY_IDS, LEGITIMATE_IDS, OPTIONAL_IDENTITY_IDS, Outcome, ProxyKind, identity_spec

if TYPE_CHECKING:
    from harness.runtimes.base import Runtime


class ChallengeError(ScenarioError):
    """A challenge file, field or id is invalid (a kind of scenario error: same exit code 2)."""


DIFFICULTIES = ("warm-up", "easy", "medium", "puzzle")
#: The path through the course, per track (one track per proxy family).
LEVELS = ("warm-up", "practitioner", "expert")


#: The file name each proxy's starting config has (what the learner edits).
def _proxy_names() -> tuple[str, ...]:
    from harness.proxies import names

    return names()


def _driver_config_name(proxy: ProxyKind) -> str:
    from harness.proxies import driver

    return driver(proxy).config_name


#: A challenge's config file name, where it differs from the driver's own.
CONFIG_NAMES = {ProxyKind.NGINX: "nginx.conf", ProxyKind.APACHE: "site.conf", ProxyKind.HAPROXY: "haproxy.cfg"}
IMPOSTORS = tuple(i for i in IDENTITY_IDS if i not in LEGITIMATE_IDS)
# The name-matching identities (scenario backends, issue 12) are no challenge's "served" set.
_NAME_CASES = ("wildcard-parent", "cn-only", "san-other-cn-backend")
SERVABLE = ("legit", "legit-no-chain", *(i for i in OPTIONAL_IDENTITY_IDS if i not in _NAME_CASES))
FLAG_RE = re.compile(r"^trustlab\{[0-9a-f]{32}\}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TOP_KEYS = (
    "title",
    "proxy",
    "config",
    "files",
    "difficulty",
    "level",
    "minutes",
    "story",
    "goal",
    "hints",
    "explanation",
    "lesson",
    "backend",
    "request",
    "grader",
)
_REQUIRED = tuple(k for k in _TOP_KEYS if k not in ("config", "files", "grader"))
_LESSON_KEYS = ("text", "sources")
_BACKEND_KEYS = ("name", "port", "address", "ca_file")
_REQUEST_KEYS = ("host", "path")
_GRADER_KEYS = ("served", "accept", "policy", "sni_routing")


#: Set (to 1) where the solutions are hidden on purpose: an attendee server of the classroom server.
SCORED_ENV = "TRUSTLAB_SCORED"


@dataclass(frozen=True)
class Grader:
    """What the grader requires (see the module doc)."""

    served: tuple[str, ...] = ("legit",)
    accept: tuple[str, ...] = ()
    policy: str = ""
    sni_routing: bool = False

    @property
    def identities(self) -> tuple[str, ...]:
        return IDENTITY_IDS + tuple(i for i in self.served if i in OPTIONAL_IDENTITY_IDS)


@dataclass(frozen=True)
class Challenge:
    """One validated challenge."""

    id: str
    title: str
    proxy: ProxyKind
    config: str
    difficulty: str
    level: str
    minutes: int
    story: str
    goal: str
    hints: tuple[str, ...]
    explanation: str
    lesson: str
    sources: tuple[str, ...]
    grader: Grader
    path: Path
    #: The pinned backend and graded request (a :class:`harness.check.Backend`).
    backend: Any = None
    #: Further files the config reads beside it (``remap.config`` beside ``records.config``).
    files: tuple[str, ...] = ()

    @property
    def track(self) -> str:
        """The track it belongs to: its proxy family."""
        return self.proxy.value

    @property
    def start_file(self) -> Path:
        return self.path / self.config

    @property
    def solution_file(self) -> Path:
        return self.path / "solution" / self.config

    def readme(self) -> str:
        """The README.md ``start`` writes next to the starting config."""
        policy = f"\n\nPKI policy this challenge grades: {self.grader.policy}" if self.grader.policy else ""
        return (
            f"# {self.title}\n\n`{self.id}` - {self.proxy.value}, {self.difficulty}, about {self.minutes} minutes\n\n"
            f"## Story\n\n{self.story.strip()}\n\n## Goal\n\n{self.goal.strip()}{policy}\n\n"
            f"## On this host\n\nThe internal root CA is `{self.backend.ca_file}`; the system's CA bundle is "
            "where the OS keeps it. No other CA file exists here: a config that names one fails as it would "
            "on the real host.\n\n"
            f"## What to do\n\nEdit `{self.config}`"
            + (f" (it reads {', '.join(f'`{f}`' for f in self.files)} beside it)" if self.files else "")
            + ", then run:\n\n"
            f"    trustlab challenge check {self.id}\n\n"
            "The grader runs your file on the real proxy against the legitimate backend and every "
            "impostor; it never reads your config's text.\n"
            f"Stuck? `trustlab challenge hint {self.id}` (one tier at a time).\n"
        )


def challenges_root() -> Path:
    """The built-in challenge directory (in the checkout, or shipped inside the package)."""
    return asset_dir("labs") / "challenges"


def _fail(where: str, fld: str, msg: str) -> ChallengeError:
    return ChallengeError(f"{where}: {fld}: {msg}")


def load_dir(directory: Path) -> Challenge:
    """Load and validate one challenge directory (its id is the directory name)."""
    directory = Path(directory)
    toml_path = directory / "challenge.toml"
    where = str(toml_path)
    raw = read_input(
        toml_path,
        error=ChallengeError,
        kind="a challenge file",
        limit=1_000_000,
        directory_hint="a challenge directory holds challenge.toml",
    )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ChallengeError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ChallengeError(f"{where}: invalid TOML: {exc}") from None
    return parse(data, challenge_id=directory.name, where=where, path=directory)


def parse(data: dict[str, Any], *, challenge_id: str, where: str, path: Path) -> Challenge:
    """Validate a decoded ``challenge.toml`` mapping; files it names must exist under *path*."""
    if not _ID_RE.match(challenge_id):
        raise _fail(where, "id", f"directory name {challenge_id!r} must be lower-case letters, digits and '-'")
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(where, key, f"unknown key; allowed: {', '.join(_TOP_KEYS)}")
    for key in _REQUIRED:
        if key not in data:
            raise _fail(
                where,
                key,
                "missing; every challenge needs title, proxy, difficulty, level, minutes, story, "
                "goal, hints, explanation, [lesson], [backend] and [request]",
            )

    def text(key: str, value: Any = None) -> str:
        value = data.get(key) if value is None else value
        if not isinstance(value, str) or not value.strip():
            raise _fail(where, key, "must be a non-empty string")
        return value

    from harness.proxies import names

    proxies = list(names())
    if data["proxy"] not in proxies:
        raise _fail(where, "proxy", f"{data['proxy']!r} is unknown; known: {', '.join(proxies)}")
    proxy = ProxyKind(data["proxy"])
    config = data.get("config", CONFIG_NAMES.get(proxy) or _driver_config_name(proxy))
    if not isinstance(config, str) or "/" in config or not config or config.startswith("."):
        raise _fail(where, "config", "must be a plain file name such as nginx.conf")
    files = data.get("files", [])
    if (
        not isinstance(files, list)
        or len(set(files)) != len(files)
        or any(not isinstance(f, str) or not f or "/" in f or f.startswith(".") or f == config for f in files)
    ):
        raise _fail(where, "files", "must list plain file names such as remap.config, each once, not the config")
    if data["difficulty"] not in DIFFICULTIES:
        raise _fail(where, "difficulty", f"{data['difficulty']!r} is unknown; allowed: {', '.join(DIFFICULTIES)}")
    if data["level"] not in LEVELS:
        raise _fail(where, "level", f"{data['level']!r} is unknown; allowed: {', '.join(LEVELS)}")
    minutes = data["minutes"]
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 60:
        raise _fail(where, "minutes", "must be a whole number of minutes from 1 to 60")
    hints = data["hints"]
    if not isinstance(hints, list) or not hints or not all(isinstance(h, str) and h.strip() for h in hints):
        raise _fail(where, "hints", "must be a non-empty list of strings, from a nudge to nearly the answer")

    lesson = data["lesson"]
    if not isinstance(lesson, dict):
        raise _fail(where, "lesson", "must be a table with text and sources")
    for key in lesson:
        if key not in _LESSON_KEYS:
            raise _fail(where, f"lesson.{key}", f"unknown key; allowed: {', '.join(_LESSON_KEYS)}")
    lesson_text = text("lesson.text", lesson.get("text", ""))
    sources = lesson.get("sources")
    if (
        not isinstance(sources, list)
        or not sources
        or not all(isinstance(s, str) and s.startswith("https://") for s in sources)
    ):
        raise _fail(where, "lesson.sources", "must be a non-empty list of https:// URLs (documentation, threads)")

    grader_raw = data.get("grader", {})
    if not isinstance(grader_raw, dict):
        raise _fail(where, "grader", 'must be a table, e.g. [grader] served = ["legit"]')
    for key in grader_raw:
        if key not in _GRADER_KEYS:
            raise _fail(where, f"grader.{key}", f"unknown key; allowed: {', '.join(_GRADER_KEYS)}")
    served = grader_raw.get("served", ["legit"])
    if not isinstance(served, list) or "legit" not in served or any(s not in SERVABLE for s in served):
        raise _fail(where, "grader.served", f"must list legit and may add: {', '.join(SERVABLE[1:])}")
    accept = grader_raw.get("accept", [])
    if not isinstance(accept, list) or any(a not in IMPOSTORS for a in accept):
        raise _fail(where, "grader.accept", f"must list impostors only; choose from {', '.join(IMPOSTORS)}")
    policy = grader_raw.get("policy", "")
    if not isinstance(policy, str) or (accept and not policy.strip()):
        raise _fail(where, "grader.policy", "must say, in words, the PKI policy that rules out the accepted impostors")
    sni_routing = grader_raw.get("sni_routing", False)
    if not isinstance(sni_routing, bool):
        raise _fail(where, "grader.sni_routing", "must be true or false")

    backend = _backend(where, data["backend"], data["request"])

    # A scored workshop's kit ships no solutions (harness.course.workshop.strip_solutions marks it so);
    # nor does a classroom server's attendee server (harness.course.hub hides them and sets SCORED_ENV).
    scored_kit = (path.parent / "SCORED").is_file() or os.environ.get(SCORED_ENV) == "1"
    for name in (config, *files):
        for label, file in (("config", path / name), ("solution", path / "solution" / name)):
            if label == "solution" and scored_kit:
                continue
            if not file.is_file():
                raise _fail(
                    where, label, f"{file} is missing; a challenge ships its starting config and solution/{name}"
                )
    return Challenge(
        id=challenge_id,
        title=text("title"),
        proxy=proxy,
        config=config,
        difficulty=data["difficulty"],
        level=data["level"],
        minutes=minutes,
        story=text("story"),
        goal=text("goal"),
        hints=tuple(hints),
        explanation=text("explanation"),
        lesson=lesson_text,
        sources=tuple(sources),
        grader=Grader(tuple(served), tuple(accept), policy, sni_routing),
        path=path,
        backend=backend,
        files=tuple(files),
    )


def _backend(where: str, backend: Any, request: Any) -> Any:
    """The ``[backend]`` and ``[request]`` tables as the :class:`harness.check.Backend` to pin."""
    from harness.check import Backend, dns_name_problem
    from harness.configs.base import is_ip

    for table, value, keys in (("backend", backend, _BACKEND_KEYS), ("request", request, _REQUEST_KEYS)):
        if not isinstance(value, dict):
            raise _fail(where, table, f"must be a table with {', '.join(keys)}")
        for key in value:
            if key not in keys:
                raise _fail(where, f"{table}.{key}", f"unknown key; allowed: {', '.join(keys)}")
        for key in keys:
            if key not in value:
                raise _fail(where, f"{table}.{key}", f"missing; [{table}] needs {', '.join(keys)}")
    name, port, address = backend["name"], backend["port"], backend["address"]
    if not isinstance(name, str) or is_ip(name) or dns_name_problem(name):
        raise _fail(where, "backend.name", f"{name!r} must be a DNS name, e.g. backend-api.internal")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise _fail(where, "backend.port", f"{port!r} must be a port number, e.g. 8443")
    if not isinstance(address, str) or not is_ip(address) or not address.startswith("10.203.0."):
        raise _fail(where, "backend.address", f"{address!r} must be a lab address (10.203.0.x), e.g. 10.203.0.10")
    ca_file = backend["ca_file"]
    if not isinstance(ca_file, str) or not ca_file.startswith("/") or any(c.isspace() for c in ca_file):
        raise _fail(
            where,
            "backend.ca_file",
            f"{ca_file!r} must be the internal root's absolute path on the "
            "proxy's host, e.g. /etc/nginx/tls/internal-pki.pem",
        )
    host, rpath = request["host"], request["path"]
    if not isinstance(host, str) or not host or dns_name_problem(host):
        raise _fail(where, "request.host", f"{host!r} must be the host name a client sends, e.g. portal.example.com")
    if not isinstance(rpath, str) or not rpath.startswith("/") or " " in rpath:
        raise _fail(where, "request.path", f"{rpath!r} must be a path starting with '/', e.g. /")
    return Backend(name=name, port=port, address=address, host=host, path=rpath, ca_file=ca_file)


@cache
def load_all() -> tuple[Challenge, ...]:
    """Every built-in challenge, in the order of the course (difficulty, minutes, then id)."""
    root = challenges_root()
    found = [load_dir(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))]
    return tuple(sorted(found, key=lambda c: (DIFFICULTIES.index(c.difficulty), c.minutes, c.id)))


def get(challenge_id: str) -> Challenge:
    """A challenge by id, or a one-line error listing the known ids."""
    for ch in load_all():
        if ch.id == challenge_id:
            return ch
    known = ", ".join(c.id for c in load_all())
    raise ChallengeError(f"challenge {challenge_id!r} is unknown; known: {known} (see trustlab challenge list)")


# -- grading ----------------------------------------------------------------------------------
@dataclass
class Grade:
    """The grader's verdict on one config: ``solved``, the cells, and the failures that say why not.

    A failure is a dict: ``upstream`` (its label), ``line`` (in the learner's file, or ``None``),
    ``identity``/``outcome``/``want`` (``None`` for a problem found before any request: the
    attempt proxies elsewhere or expects another name), ``reason`` (the proxy's evidence) and
    ``impostor`` (what that identity is, one sentence). ``checks`` are the ``trustlab audit``
    findings on the attempt: the checks that are missing, with their documentation.
    """

    challenge: Challenge
    config: str
    solved: bool
    cells: list[Any]
    failures: list[dict[str, Any]]
    rejected: str | None = None
    duration_s: float = 0.0
    flag: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.challenge.id,
            "solved": self.solved,
            "cells": [c.to_dict() for c in self.cells],
            "failures": self.failures,
            "checks": self.checks,
            "config": self.config,
            "rejected": self.rejected,
            "duration_s": round(self.duration_s, 3),
        }
        if self.flag:
            data["flag"] = self.flag
        return data


def _want(grader: Grader, identity: str) -> Outcome | None:
    if identity in grader.served:
        return Outcome.SERVED
    if identity in IMPOSTORS and identity not in grader.accept:
        return Outcome.BLOCKED
    return None  # legit-no-chain (unless required) and accepted impostors: either way is fine


def grade(challenge: Challenge | str, config: str | Path, *, runtime: str | Runtime = "local") -> Grade:
    """Run *config* on the real proxy with the challenge's backend pinned; solved when its goal holds."""
    return grade_many(challenge, [config], runtime=runtime)[0]


def grade_many(
    challenge: Challenge | str, configs: list[str | Path], *, runtime: str | Runtime = "local"
) -> list[Grade]:
    """:func:`grade` for several attempts at once: their proxies run side by side in one lab."""
    from harness.check import check_many

    ch = get(challenge) if isinstance(challenge, str) else challenge
    # local, docker or auto: check gives the same cells on both runtimes (tests/test_check_runtimes.py).
    results = check_many(
        ch.proxy.value,
        list(configs),
        identities=ch.grader.identities,
        sni_routing=ch.grader.sni_routing,
        runtime=runtime,
        pinned=ch.backend,
    )
    return [_graded(ch, config, result) for config, result in zip(configs, results, strict=True)]


def _graded(ch: Challenge, config: str | Path, result: Any) -> Grade:
    """The grade of one :class:`harness.check.CheckResult`: its failures, and the checks it lacks."""
    from harness.configs.base import ABSENT_CA

    failures: list[dict[str, Any]] = [
        {
            "upstream": p.upstream,
            "line": p.line or None,
            "identity": None,
            "outcome": None,
            "want": None,
            "reason": p.text,
            "impostor": None,
        }
        for p in result.problems
    ]
    # A CA file the challenge's host does not have (a typo): the proxy's refusal or its failed
    # verification follows from it, and this says why in the learner's own path.
    failures += [
        {
            "upstream": "your config",
            "line": None,
            "identity": None,
            "outcome": None,
            "want": None,
            "reason": note,
            "impostor": None,
        }
        for note in result.adaptations
        if ABSENT_CA in note
    ]
    for c in result.cells:
        want = _want(ch.grader, c.identity)
        if want is not None and c.outcome is not want:
            failures.append(
                {
                    "upstream": c.upstream,
                    "line": c.line,
                    "identity": c.identity,
                    "outcome": c.outcome.value,
                    "want": want.value,
                    "reason": c.reason,
                    "impostor": identity_spec(c.identity).story if c.identity in IMPOSTORS else None,
                }
            )
    solved = bool(result.cells) and not result.rejected and not failures
    checks = [] if solved else _missing_checks(ch, Path(config))
    return Grade(
        ch, str(config), solved, list(result.cells), failures, result.rejected, result.duration_s, checks=checks
    )


def _missing_checks(ch: Challenge, path: Path) -> list[dict[str, Any]]:
    """The ``trustlab audit`` findings (high and medium) on the attempt: the checks it lacks."""
    from harness.audit import audit

    try:
        report = audit(path, proxy=ch.proxy.value)
    except LabError:
        return []  # an unreadable or foreign config: the grade already says why
    return [
        {"rule": f.rule, "line": f.line, "severity": f.severity, "message": f.message, "fix": f.fix, "help": f.help}
        for f in report.findings
        if f.severity in ("high", "medium")
    ]


def render_grade(g: Grade, *, hints_left: bool) -> str:
    """What ``trustlab challenge check`` prints: the cells per upstream, then why not (or the lesson)."""
    ch = g.challenge
    name = Path(g.config).name
    lines = [f"trustlab challenge check {ch.id}: {g.config} on the real {ch.proxy.value}", ""]
    for up in dict.fromkeys(c.upstream for c in g.cells):
        cells = [c for c in g.cells if c.upstream == up]
        where = f"{name}:{cells[0].line}: " if cells[0].line else ""
        lines.append(f"{where}{up}")
        for c in cells:
            mark = "  " if _want(ch.grader, c.identity) in (None, c.outcome) else "x "
            lines.append(f"  {mark}{c.identity:<15} {c.outcome.value:<16} {c.reason}")
    lines.append("")
    if g.solved:
        lines.append(f"SOLVED {ch.id}: {ch.title} ({g.duration_s:.2f} s)")
        if g.flag:
            lines.append(f"flag: {g.flag}")
        lines += ["", "Lesson: " + " ".join(ch.lesson.split())]
        lines += [f"  {s}" for s in ch.sources]
        return "\n".join(lines)

    def wrapped(text: str, indent: str) -> list[str]:
        return textwrap.wrap(text, 80, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)

    if g.rejected:
        lines += wrapped(f"{ch.proxy.value} refused the config: {g.rejected}", "")
    for f in (f for f in g.failures if f["identity"] is None):
        lines += wrapped(f["reason"], "  ")
    cell_failures = [] if g.rejected else [f for f in g.failures if f["identity"] is not None]
    for up in dict.fromkeys(f["upstream"] for f in cell_failures):
        fails = [f for f in cell_failures if f["upstream"] == up]
        where = f"{name}:{fails[0]['line']}" if fails[0]["line"] else "your config"
        lines += wrapped(f"{where}: {up}", "  ")
        for f in fails:
            what = (
                "should be served"
                if f["want"] == "served"
                else "an impostor got through"
                if f["outcome"] in ("spoofed", "served")
                else "should be blocked by the proxy's own verification"
            )
            evidence = "" if f["reason"].startswith("response from impostor") else f": {f['reason']}"
            lines += wrapped(f"{f['identity']} -> {f['outcome']} ({what}){evidence}", "    ")
            if f["impostor"]:
                lines += wrapped(f"who: {f['impostor']}", "      ")
    if g.checks:
        lines.append("  the checks your config lacks (trustlab audit):")
        for c in g.checks:
            lines += wrapped(f"{name}:{c['line']}: {c['rule']}: {c['message']}", "    ")
            lines += wrapped(f"fix: {c['fix']}", "      ")
            if c["help"]:
                lines.append(f"      read: {c['help']}")
    left = f"{ch.proxy.value} refused the config" if g.rejected else f"{len(g.failures)} problem(s) left"
    lines.append(f"NOT YET {ch.id}: {left} ({g.duration_s:.2f} s)")
    if hints_left:
        lines.append(f"a hint exists: trustlab challenge hint {ch.id}")
    return "\n".join(lines)


# -- CTF mode --------------------------------------------------------------------------------
SECRET_ENV = "TRUSTLAB_WORKSHOP_SECRET"
HINTS_ENV = "TRUSTLAB_WORKSHOP_HINTS"


def workshop_secret() -> str | None:
    return os.environ.get(SECRET_ENV) or None


def hints_enabled() -> bool:
    return os.environ.get(HINTS_ENV, "on").strip().lower() not in ("off", "0", "no", "false")


def flag(challenge_id: str, secret: str) -> str:
    """The CTF flag for *challenge_id*: ``trustlab{`` + 32 hex digits of HMAC-SHA256(secret, id) + ``}``."""
    digest = hmac.new(secret.encode(), challenge_id.encode(), hashlib.sha256).hexdigest()
    return f"trustlab{{{digest[:32]}}}"


def export_ctfd(path: Path, *, secret: str, with_hints: bool = True) -> int:
    """Write the challenges as a CTFd challenges CSV (Admin > Config > Backup > Import CSV).

    Columns as CTFd's ``load_challenges_csv`` reads them (CTFd/utils/csv/__init__.py): name,
    description, category, value, type, state, max_attempts, flags (a JSON list of static
    flags), tags and hints (a JSON list of ``{content, cost}``). Returns the number written.
    """
    value = {"warm-up": 100, "easy": 200, "medium": 300, "puzzle": 500}
    buf = io.StringIO()
    cols = ["name", "description", "category", "value", "type", "state", "max_attempts", "flags", "tags", "hints"]
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for ch in load_all():
        hints = [{"content": h, "cost": value[ch.difficulty] // 10 * (n + 1)} for n, h in enumerate(ch.hints)]
        writer.writerow(
            {
                "name": f"{ch.id}: {ch.title}",
                "description": f"{ch.story.strip()}\n\nGoal: {ch.goal.strip()}\n\n"
                f"Start: `trustlab challenge start {ch.id}`; check: `trustlab challenge check {ch.id}`; "
                "the flag is printed when the real server says SOLVED.",
                "category": ch.proxy.value,
                "value": value[ch.difficulty],
                "type": "standard",
                "state": "visible",
                "max_attempts": 0,
                "flags": json.dumps([{"type": "static", "content": flag(ch.id, secret), "data": ""}]),
                "tags": ",".join((ch.proxy.value, ch.difficulty)),
                "hints": json.dumps(hints if with_hints else []),
            }
        )
    _atomic_write(Path(path), buf.getvalue())
    return len(load_all())


# -- progress --------------------------------------------------------------------------------
def state_dir() -> Path:
    """``$TRUSTLAB_STATE_DIR``, else ``$XDG_STATE_HOME/trustlab``, else ``~/.local/state/trustlab``."""
    if os.environ.get("TRUSTLAB_STATE_DIR"):
        return Path(os.environ["TRUSTLAB_STATE_DIR"])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "trustlab"
    return Path.home() / ".local" / "state" / "trustlab"


def _atomic_write(path: Path, text: str) -> None:
    """Write *text* to *path* through a temp file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(path: Path, text: str) -> None:
    """Write a file the learner will edit, atomically (an interrupt never leaves half a config)."""
    _atomic_write(path, text)
    os.chmod(path, 0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class Progress:
    """The learner's progress: solves, hint tiers shown, solutions viewed, and the notebooks'
    scored predictions (one JSON file)."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def solved(self) -> dict[str, Any]:
        return self.data.setdefault("solved", {})

    @property
    def hints(self) -> dict[str, int]:
        return self.data.setdefault("hints", {})

    @property
    def solutions(self) -> list[str]:
        return self.data.setdefault("solutions", [])

    @property
    def predictions(self) -> dict[str, Any]:
        """scenario id -> the last scored prediction of it in a notebook (right, total, when)."""
        return self.data.setdefault("predictions", {})

    def to_json_dict(self) -> dict[str, Any]:
        known = [c.id for c in load_all()]
        return {
            "solved": [i for i in known if i in self.solved],
            "hints": {i: self.hints[i] for i in known if i in self.hints},
            "solutions": [i for i in known if i in self.solutions],
            "predictions": {
                sid: {"right": int(p.get("right", 0)), "total": int(p.get("total", 0))}
                for sid, p in sorted(self.predictions.items())
                if isinstance(p, dict)
            },
            "total": len(known),
            "state_file": str(self.path),
        }


def _read_state(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise LabError(f"{path}: cannot read the challenge progress ({exc.strerror})") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        for key, kind in (("solved", dict), ("hints", dict), ("solutions", list), ("predictions", dict)):
            if not isinstance(data.get(key, kind()), kind):
                raise ValueError(f"{key} is not a JSON {kind.__name__}")
    except ValueError as exc:
        raise LabError(
            f"{path}: the challenge progress file is corrupt ({exc}); it was left as it is: repair it, "
            "or move it aside to start over (trustlab challenge reset --all replaces it)"
        ) from None
    return data


@contextlib.contextmanager
def progress(*, write: bool = False, force: bool = False) -> Iterator[Progress]:
    """The progress file, locked for the block; with *write*, saved atomically at its end.

    A corrupt file is a one-line :class:`LabError` and is never overwritten, except with
    *force* (``reset --all``), so no entry is ever lost silently.
    """
    import fcntl

    directory = state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LabError(
            f"{directory}: cannot create the state directory ({exc.strerror}); set TRUSTLAB_STATE_DIR"
        ) from None
    path = directory / "challenges.json"
    with open(directory / ".challenges.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = _read_state(path)
        except LabError:
            if not force:
                raise
            data = {}
        state = Progress(path, data)
        yield state
        if write:
            state.data["version"] = 1
            _atomic_write(path, json.dumps(state.data, indent=2, sort_keys=True) + "\n")


def record_solve(g: Grade) -> None:
    with progress(write=True) as p:
        first = p.solved.get(g.challenge.id)
        p.solved[g.challenge.id] = {
            "first": first["first"] if isinstance(first, dict) and "first" in first else _now(),
            "last": _now(),
            "hints": p.hints.get(g.challenge.id, 0),
            "solution_viewed": g.challenge.id in p.solutions,
        }


def record_prediction(scenario_id: str, right: int, total: int) -> None:
    """Keep a notebook prediction's score (``harness.predict``) in the learner's one progress record."""
    with progress(write=True) as p:
        first = p.predictions.get(scenario_id)
        p.predictions[scenario_id] = {
            "right": right,
            "total": total,
            "first": first["first"] if isinstance(first, dict) and "first" in first else _now(),
            "last": _now(),
        }


def next_hint(ch: Challenge, *, all_tiers: bool = False) -> list[tuple[int, str]]:
    """The next hint tier (or every tier), recorded; returns ``(tier, text)`` pairs."""
    if not hints_enabled():
        raise LabError(f"hints are switched off for this workshop ({HINTS_ENV}=off)")
    with progress(write=True) as p:
        shown = p.hints.get(ch.id, 0)
        upto = len(ch.hints) if all_tiers else min(shown + 1, len(ch.hints))
        p.hints[ch.id] = max(shown, upto)
    start = 0 if all_tiers else upto - 1
    return [(n + 1, ch.hints[n]) for n in range(start, upto)]


def record_solution(ch: Challenge) -> None:
    if not hints_enabled():
        raise LabError(f"solutions are switched off for this workshop ({HINTS_ENV}=off)")
    if not ch.solution_file.is_file():
        raise LabError(f"{ch.id}: this kit ships no solutions (a scored workshop); ask your instructor afterwards")
    with progress(write=True) as p:
        if ch.id not in p.solutions:
            p.solutions.append(ch.id)


def reset(challenge_id: str | None) -> None:
    """Forget one challenge's progress, or (``None``) everything."""
    if challenge_id is None:
        with progress(write=True, force=True) as p:
            p.data.clear()
        return
    get(challenge_id)
    with progress(write=True) as p:
        p.solved.pop(challenge_id, None)
        p.hints.pop(challenge_id, None)
        if challenge_id in p.solutions:
            p.solutions.remove(challenge_id)


def restore_start(ch: Challenge, folder: Path) -> Path | None:
    """Put *ch*'s starting config back in *folder* (and its ``files``); each attempt it replaces
    is kept as ``<file>.<UTC time>.bak``. Returns the config's backup, else a file's (``None``
    when everything already was the start)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backups = []
    for name in (ch.config, *ch.files):
        target = folder / name
        start = (ch.path / name).read_text()
        if name != ch.config and not target.exists():
            write_file(target, start)
            continue
        try:
            attempt = target.read_text()
        except OSError as exc:
            raise LabError(f"{target}: cannot read the attempt ({exc.strerror})") from None
        if attempt == start:
            continue
        backup = folder / f"{name}.{stamp}.bak"
        n = 1
        while backup.exists():  # two resets in one second keep both attempts
            backup = folder / f"{name}.{stamp}-{n}.bak"
            n += 1
        write_file(backup, attempt)
        write_file(target, start)
        backups.append(backup)
    return backups[0] if backups else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the schema --------------------------------------------------------------------------------
def json_schema() -> dict[str, Any]:
    """A JSON Schema of ``challenge.toml`` (labs/challenges/challenge.schema.json).

    Generated from the validator's constants; a test fails when the committed file drifts. The
    validator stays the authority (it also checks that the files exist and policy when accept).
    """
    text = {"type": "string", "minLength": 1}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "trustlab challenge",
        "type": "object",
        "additionalProperties": False,
        "required": list(_REQUIRED),
        "properties": {
            "title": text,
            "proxy": {"enum": list(_proxy_names())},
            "config": {"type": "string", "pattern": "^[^./][^/]*$"},
            "files": {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": "^[^./][^/]*$"}},
            "difficulty": {"enum": list(DIFFICULTIES)},
            "level": {"enum": list(LEVELS)},
            "minutes": {"type": "integer", "minimum": 1, "maximum": 60},
            "story": text,
            "goal": text,
            "hints": {"type": "array", "minItems": 1, "items": text},
            "explanation": text,
            "lesson": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "sources"],
                "properties": {
                    "text": text,
                    "sources": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^https://"}},
                },
            },
            "backend": {
                "type": "object",
                "additionalProperties": False,
                "required": list(_BACKEND_KEYS),
                "properties": {
                    "name": text,
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "address": {"type": "string", "pattern": "^10\\.203\\.0\\.[0-9]{1,3}$"},
                    "ca_file": {"type": "string", "pattern": "^/[^\\s]+$"},
                },
            },
            "request": {
                "type": "object",
                "additionalProperties": False,
                "required": list(_REQUEST_KEYS),
                "properties": {"host": text, "path": {"type": "string", "pattern": "^/[^ ]*$"}},
            },
            "grader": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "served": {"type": "array", "items": {"enum": list(SERVABLE)}, "contains": {"const": "legit"}},
                    "accept": {"type": "array", "items": {"enum": list(IMPOSTORS)}},
                    "policy": {"type": "string"},
                    "sni_routing": {"type": "boolean"},
                },
            },
        },
    }
