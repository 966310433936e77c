"""The classroom's grader: a JupyterHub service that grades attempts, keeps the room's record and
alone issues flags. Started by the hub (``python -m harness.course.hub.grader``), reached by attendee
servers directly on the network's gateway and by browsers through the hub's proxy at
``/services/grader/``.

Routes (under ``/services/grader/``)::

    GET  health         {"ok": true}, no sign-in
    POST grade          {"id", "config"[, "files"]} -> the grade (harness.course.scoring's wire), flag when solved
    POST hint           {"id"} -> the next hint tier, recorded
    POST run            {"scenarios": [ids], "identities"?: [ids]} -> a run's results JSON (the
                        remote runtime, harness/runtimes/remote.py), on the docker runtime
    GET  runs           the caller's labs running now (docker label trustlab.attendee=<caller>)
    POST stop           {"lab": id} -> removes one of the caller's running labs, no one else's
    GET  me             the caller's own attempts and solves (JSON)
    GET  progress       the same as a page, with the badge of completion
    GET  scoreboard     attendees by challenges solved, for a projector (admin only)
    GET  ""             the instructor's page (admin only; the hub's OAuth)
    GET  api/room       the same as JSON (admin only)
    GET  room.csv       one row per attendee and challenge (admin only)

Why the lab service (``run``, ``runs``, ``stop``) lives in this service rather than beside it:
it needs exactly what the grader has -- the hub's OAuth and API token to learn who calls, a
process on the host that drives the docker daemon, a worker pool, the attendee network's gateway
address -- and nothing more. A second service would be a second OAuth client, port, process and
docker-holding process to secure, for the same callers. It accepts data only (built-in scenario
ids, identity ids), checked here before anything runs (:func:`lab_request`); a scenario file, a
path or code is refused, so an attendee's proxies run only as the built-in scenarios' configs,
inside the docker runtime's hardened lab containers (``harness/runtimes/docker.py``). Limits:
``MAX_RUNS_PER_ATTENDEE`` labs at once per attendee (429 beyond), ``MAX_CELLS`` cells per request
(:mod:`harness.runtimes.remote`), ``TRUSTLAB_LAB_WORKERS`` (default 3) labs at once on the host.

Who calls is the hub's answer for the token (an attendee server's ``JUPYTERHUB_API_TOKEN``, sent
as ``Authorization: Bearer``) or the OAuth cookie of a signed-in browser. The flag secret is
``grader-secret`` in the hub's state directory, which no attendee container mounts.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import os
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web
from tornado.log import app_log

from harness.course import hub
from harness.course.scoring import MAX_BODY, GradingService
from harness.errors import LabError
from harness.runtimes.remote import MAX_RUNS_PER_ATTENDEE

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, attendee TEXT NOT NULL, challenge TEXT NOT NULL, solved INTEGER NOT NULL,
    problems INTEGER NOT NULL, at REAL NOT NULL, duration_s REAL NOT NULL, flag TEXT
);
CREATE TABLE IF NOT EXISTS hints (
    attendee TEXT NOT NULL, challenge TEXT NOT NULL, tier INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (attendee, challenge)
);
"""


class Store:
    """Attempts and hints per attendee (``grader.sqlite``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.executescript(SCHEMA)
        os.chmod(path, 0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def attempt(self, attendee: str, challenge: str, grade: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO attempts (attendee, challenge, solved, problems, at, duration_s, flag) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attendee,
                    challenge,
                    int(bool(grade.get("solved"))),
                    len(grade.get("failures") or []),
                    time.time(),
                    float(grade.get("duration_s") or 0),
                    grade.get("flag"),
                ),
            )

    def hint(self, attendee: str, challenge: str, tiers: int) -> int:
        """One more hint tier for *attendee* on *challenge* (at most *tiers*); the tier now shown."""
        with self._db() as db:
            row = db.execute(
                "SELECT tier FROM hints WHERE attendee=? AND challenge=?", (attendee, challenge)
            ).fetchone()
            tier = min((row[0] if row else 0) + 1, tiers)
            db.execute(
                "INSERT OR REPLACE INTO hints (attendee, challenge, tier, at) VALUES (?, ?, ?, ?)",
                (attendee, challenge, tier, time.time()),
            )
        return tier

    def rows(self, attendee: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE attendee=?", (attendee,)) if attendee else ("", ())
        with self._db() as db:
            cur = db.execute(
                f"SELECT attendee, challenge, solved, problems, at, duration_s FROM attempts {where} ORDER BY id", args
            )
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def hint_rows(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [
                {"attendee": a, "challenge": c, "tier": t}
                for a, c, t in db.execute("SELECT attendee, challenge, tier FROM hints").fetchall()
            ]


def room(store: Store, users: list[dict[str, Any]]) -> dict[str, Any]:
    """The room: attendees (signed in or not), per challenge attempts/solves, where it is stuck."""
    attempts, hints = store.rows(), store.hint_rows()
    names = sorted({u["name"] for u in users} | {a["attendee"] for a in attempts})
    by_user = {u["name"]: u for u in users}
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for a in attempts:
        cell = per.setdefault(
            (a["attendee"], a["challenge"]), {"attempts": 0, "failed": 0, "solved": False, "hints": 0}
        )
        cell["attempts"] += 1
        cell["failed"] += 0 if a["solved"] else 1
        cell["solved"] = cell["solved"] or bool(a["solved"])
    for h in hints:
        per.setdefault((h["attendee"], h["challenge"]), {"attempts": 0, "failed": 0, "solved": False, "hints": 0})[
            "hints"
        ] = h["tier"]
    challenges: dict[str, dict[str, Any]] = {}
    for (_, ch), cell in per.items():
        c = challenges.setdefault(ch, {"id": ch, "attempts": 0, "failed": 0, "solved_by": 0, "hints": 0})
        c["attempts"] += cell["attempts"]
        c["failed"] += cell["failed"]
        c["solved_by"] += int(cell["solved"])
        c["hints"] += cell["hints"]
    stuck = max(challenges.values(), key=lambda c: (c["failed"], c["id"]), default=None)
    attendees = []
    for name in names:
        u = by_user.get(name, {})
        servers = u.get("servers") or {}
        mine = {ch: cell for (who, ch), cell in per.items() if who == name}
        attendees.append(
            {
                "name": name,
                "admin": bool(u.get("admin")),
                "signed_in": bool(servers) or bool(u.get("last_activity")),
                "server": any(sv.get("ready") for sv in servers.values()),
                "last_activity": u.get("last_activity"),
                "attempts": sum(c["attempts"] for c in mine.values()),
                "solved": sorted(ch for ch, c in mine.items() if c["solved"]),
                "challenges": mine,
            }
        )
    return {
        "attendees": attendees,
        "challenges": sorted(challenges.values(), key=lambda c: c["id"]),
        "stuck": stuck if stuck and stuck["failed"] else None,
        "attempts": len(attempts),
    }


def room_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["attendee", "challenge", "attempts", "failed", "solved", "hints"])
    for a in data["attendees"]:
        for ch, c in sorted(a["challenges"].items()):
            w.writerow([a["name"], ch, c["attempts"], c["failed"], int(c["solved"]), c["hints"]])
    return buf.getvalue()


def room_html(data: dict[str, Any], *, prefix: str) -> str:
    e = html.escape
    ids = [c["id"] for c in data["challenges"]]
    head = "".join(f"<th>{e(i)}</th>" for i in ids)
    rows = []
    for a in data["attendees"]:
        cells = []
        for i in ids:
            c = a["challenges"].get(i)
            if not c:
                cells.append("<td></td>")
            else:
                mark = "solved" if c["solved"] else "trying"
                cells.append(
                    f'<td class="{mark}">{"&#10003; " if c["solved"] else ""}{c["attempts"]} tries'
                    f"{', ' + str(c['failed']) + ' failed' if c['failed'] else ''}"
                    f"{', hint ' + str(c['hints']) if c['hints'] else ''}</td>"
                )
        status = "server up" if a["server"] else ("signed in" if a["signed_in"] else "not yet")
        rows.append(f"<tr><th>{e(a['name'])}</th><td>{status}</td><td>{len(a['solved'])}</td>{''.join(cells)}</tr>")
    stuck = data["stuck"]
    stuck_line = (
        f"<p>Most failed attempts: <b>{e(stuck['id'])}</b> "
        f"({stuck['failed']} failed, solved by {stuck['solved_by']})</p>"
        if stuck
        else "<p>No failed attempt yet.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>trustlab classroom: the room</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.solved{{background:#d9f2d9}}
.trying{{background:#fbe9d0}}</style></head>
<body><h1>The room</h1>
<p>{len(data["attendees"])} people, {data["attempts"]} attempts graded on the server.
<a href="{e(prefix)}room.csv">CSV</a> &middot; <a href="{e(prefix)}api/room">JSON</a> &middot;
<a href="{e(prefix)}scoreboard">scoreboard (projector)</a></p>
{stuck_line}
<table id="room"><thead><tr><th>who</th><th>status</th><th>solved</th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></body></html>
"""


class _Base(HubOAuthenticated, web.RequestHandler):
    @property
    def app(self) -> GraderApp:
        return self.settings["grader"]  # type: ignore[no-any-return]

    def send(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def who(self) -> str | None:
        user = self.current_user
        if not user or user.get("kind", "user") != "user":
            return None
        return str(user["name"])

    def is_admin(self) -> bool:
        user = self.current_user
        if not user:
            return False
        if user.get("kind") == "service":
            return bool(user.get("name") == hub.ADMIN_SERVICE)
        return bool(user.get("admin"))

    def body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"the body must be at most {MAX_BODY} bytes")
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise web.HTTPError(400, f"the body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return data

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        why = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": why}))


class Health(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": True}))


class Grade(_Base):
    async def post(self) -> None:
        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first (this server's hub token is not known)"})
            return
        data = self.body()
        cid, text, files = data.get("id"), data.get("config"), data.get("files", {})
        if not isinstance(cid, str) or not isinstance(text, str) or not text.strip():
            self.send(400, {"error": 'the body must be {"id": ..., "config": ...} with non-empty strings'})
            return
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            self.send(400, {"error": 'files: give {"<name>": "<text>"} for the challenge\'s further files'})
            return
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.app.pool, self.app.service.grade, who, cid, text, files)
        except LabError as exc:
            self.send(400, {"error": str(exc)})
            return
        self.app.store.attempt(who, cid, result)
        self.send(200, result)


def lab_request(data: dict[str, Any]) -> tuple[list[Any], tuple[str, ...] | None]:
    """The scenarios and identities of a ``POST run`` body, validated as the CLI does; a
    :class:`LabError` (one line) for anything else. Only built-in scenario ids: an id is looked
    up, never opened as a path on this host."""
    from harness import scenarios as S
    from harness.runtimes.remote import MAX_CELLS
    from harness.vocab import ALL_IDENTITY_IDS, IDENTITY_IDS

    refs, idents = data.get("scenarios"), data.get("identities")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise LabError('the body must be {"scenarios": ["nginx/good", ...]} with at least one scenario id')
    if idents is not None and (
        not isinstance(idents, list) or not idents or not all(isinstance(i, str) for i in idents)
    ):
        raise LabError("identities: give a non-empty list of identity ids, or leave it out for all")
    known = S.builtin()
    for ref in refs:
        if ref not in known:
            close = [k for k in known if ref.split("/")[-1] and ref.split("/")[-1] in k][:6] or list(known)[:6]
            raise LabError(
                f"{ref[:80]!r} is not a built-in scenario id; try one of: {', '.join(close)} "
                "(trustlab matrix --list shows all)"
            )
    if len(set(refs)) != len(refs):
        raise LabError("a scenario id is given twice")
    for ident in idents or ():
        if ident not in ALL_IDENTITY_IDS:
            raise LabError(f"identity {ident[:40]!r} is unknown; known: {', '.join(ALL_IDENTITY_IDS)}")
    chosen = [known[r] for r in refs]
    cells = sum(len(idents) if idents else len(IDENTITY_IDS) + len(sc.optional_identities) for sc in chosen)
    if cells > MAX_CELLS:
        raise LabError(
            f"{cells} cells asked, the lab service runs at most {MAX_CELLS} per request; "
            "run fewer scenarios at a time (e.g. one proxy kind)"
        )
    return chosen, tuple(idents) if idents else None


_BUSY = f"you already have {MAX_RUNS_PER_ATTENDEE} lab running on the lab service; wait for it to finish"


class Run(_Base):
    async def post(self) -> None:
        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first (this server's hub token is not known)"})
            return
        try:
            chosen, idents = lab_request(self.body())
        except LabError as exc:
            self.send(400, {"error": str(exc)})
            return
        if not self.app.claim(who):
            self.send(429, {"error": _BUSY})
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.app.lab_pool, self.app.run_lab, who, chosen, idents)
        except LabError as exc:
            self.send(400, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - the attendee gets one line, the log the traceback
            app_log.exception("lab run for %s failed", who)
            self.send(500, {"error": f"the lab failed on the service ({type(exc).__name__}); tell your instructor"})
            return
        finally:
            self.app.release(who)
        self.send(200, results.to_json_dict())


class Runs(_Base):
    def get(self) -> None:
        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first"})
            return
        self.send(200, {"attendee": who, "labs": self.app.labs_of(who)})


class Stop(_Base):
    def post(self) -> None:
        from harness.runtimes import docker as D

        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first"})
            return
        lab = self.body().get("lab")
        if not isinstance(lab, str) or lab not in {x["lab"] for x in self.app.labs_of(who)}:
            self.send(404, {"error": f"no running lab {str(lab)[:40]!r} of yours (GET runs lists yours)"})
            return
        D.remove_by_label(self.app.docker(), lab)
        self.send(200, {"stopped": lab})


class Hint(_Base):
    def post(self) -> None:
        from harness.course import challenges as C

        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first"})
            return
        cid = self.body().get("id")
        try:
            ch = C.get(str(cid))
        except LabError as exc:
            self.send(400, {"error": str(exc)})
            return
        tier = self.app.store.hint(who, ch.id, len(ch.hints))
        self.send(200, {"id": ch.id, "tier": tier, "of": len(ch.hints), "hint": ch.hints[tier - 1]})


class Me(_Base):
    def get(self) -> None:
        who = self.who()
        if who is None:
            self.send(401, {"error": "sign in to the classroom first"})
            return
        rows = self.app.store.rows(who)
        solved = sorted({r["challenge"] for r in rows if r["solved"]})
        self.send(200, {"attendee": who, "attempts": rows, "solved": solved})


def _page(title: str, body: str, *, refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.big{font-size:2em}"
        f"</style></head><body>{body}</body></html>\n"
    )


def scoreboard_html(data: dict[str, Any], *, total: int) -> str:
    """The projector's view: attendees by challenges solved (ties: fewer attempts first)."""
    people = [a for a in data["attendees"] if not a["admin"]]
    people.sort(key=lambda a: (-len(a["solved"]), a["attempts"], a["name"]))
    rows = "".join(
        f"<tr><td>{n}</td><th>{html.escape(a['name'])}</th><td>{len(a['solved'])} / {total}</td></tr>"
        for n, a in enumerate(people, 1)
    )
    body = f'<h1>Scoreboard</h1><table id="scoreboard" class="big"><tbody>{rows}</tbody></table>'
    return _page("trustlab classroom: scoreboard", body, refresh=10)


def progress_html(attendee: str, solved: list[str], *, total: int, attempts: int) -> str:
    """An attendee's own page: what they solved, and their badge when every challenge is."""
    done = len(solved) == total and total > 0
    badge = (
        f'<p id="badge" class="big">&#127942; {html.escape(attendee)} completed every challenge</p>'
        if done
        else f'<p id="badge">{len(solved)} of {total} solved; the badge comes with the last one</p>'
    )
    items = "".join(f"<li>{html.escape(c)}</li>" for c in solved)
    body = f"<h1>{html.escape(attendee)}</h1>{badge}<p>{attempts} attempts graded.</p><ul id='solved'>{items}</ul>"
    return _page(f"trustlab classroom: {attendee}", body)


class Progress(_Base):
    @web.authenticated
    def get(self) -> None:
        from harness.course.challenges import load_all

        who = self.who()
        if who is None:
            raise web.HTTPError(403, "attendees only")
        rows = self.app.store.rows(who)
        solved = sorted({r["challenge"] for r in rows if r["solved"]})
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(progress_html(who, solved, total=len(load_all()), attempts=len(rows)))


class _Admin(_Base):
    def room(self) -> dict[str, Any] | None:
        if not self.is_admin():
            return None
        return room(self.app.store, self.app.users())


class Page(_Admin):
    @web.authenticated
    def get(self) -> None:
        data = self.room()
        if data is None:
            raise web.HTTPError(403, "the room is the instructor's page")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(room_html(data, prefix=self.app.prefix))


class Scoreboard(_Admin):
    @web.authenticated
    def get(self) -> None:
        from harness.course.challenges import load_all

        data = self.room()
        if data is None:
            raise web.HTTPError(403, "the scoreboard is shown by the instructor")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(scoreboard_html(data, total=len(load_all())))


class RoomApi(_Admin):
    def get(self) -> None:
        data = self.room()
        if data is None:
            self.send(403 if self.current_user else 401, {"error": "the room is the instructor's (admin only)"})
            return
        self.send(200, data)


class RoomCsv(_Admin):
    def get(self) -> None:
        data = self.room()
        if data is None:
            self.send(403 if self.current_user else 401, {"error": "the room is the instructor's (admin only)"})
            return
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="trustlab-room.csv"')
        self.finish(room_csv(data))


class GraderApp:
    """The service's state: settings, the record, the grading pool, the hub's API."""

    def __init__(self, directory: Path) -> None:
        settings = hub.load_settings(directory)
        secret = (directory / "grader-secret").read_text().strip()
        self.service = GradingService(secret=secret, tokens={}, runtime=settings.grade_runtime)
        self.store = Store(directory / "grader.sqlite")
        self.pool = ThreadPoolExecutor(max_workers=int(os.environ.get("TRUSTLAB_GRADER_WORKERS", "2")))
        self.lab_pool = ThreadPoolExecutor(max_workers=int(os.environ.get("TRUSTLAB_LAB_WORKERS", "3")))
        self.lab_runtime = settings.grade_runtime
        #: Labs running now per attendee (the event loop's thread alone changes it).
        self.running: dict[str, int] = {}
        self._docker: Any = None
        self.prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{hub.SERVICE}/")
        self.api_url = os.environ.get("JUPYTERHUB_API_URL", "")
        self.api_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def claim(self, who: str) -> bool:
        if self.running.get(who, 0) >= MAX_RUNS_PER_ATTENDEE:
            return False
        self.running[who] = self.running.get(who, 0) + 1
        return True

    def release(self, who: str) -> None:
        self.running[who] = max(0, self.running.get(who, 0) - 1)

    def docker(self) -> Any:
        if self._docker is None:
            from harness.runtimes import images

            self._docker = images.client()
        return self._docker

    def run_lab(self, who: str, chosen: list[Any], identities: tuple[str, ...] | None) -> Any:
        """One attendee's run, on the docker runtime, every lab object labelled with *who*."""
        from harness import runner
        from harness.runtimes.docker import LABEL_ATTENDEE, DockerRuntime

        rt = DockerRuntime(labels={LABEL_ATTENDEE: who}) if self.lab_runtime == "docker" else self.lab_runtime
        # One lab per request (no shards): an attendee's quota is one lab, and the room shares the cores.
        return runner.run(chosen, runtime=rt, identities=identities, shards=1)

    def labs_of(self, who: str) -> list[dict[str, Any]]:
        """*who*'s labs running now: their ids and containers (by the docker label, so only theirs)."""
        from harness.runtimes.docker import LABEL_ATTENDEE, LABEL_LAB

        labs: dict[str, list[str]] = {}
        # The low-level list: one call, no inspect of a container that ends meanwhile (a 404).
        for ct in self.docker().api.containers(filters={"label": f"{LABEL_ATTENDEE}={who}"}):
            labs.setdefault((ct.get("Labels") or {}).get(LABEL_LAB, ""), []).append(ct["Names"][0].lstrip("/"))
        return [{"lab": lab, "containers": sorted(names)} for lab, names in sorted(labs.items()) if lab]

    def users(self) -> list[dict[str, Any]]:
        req = urllib.request.Request(
            url_path_join(self.api_url, "users"), headers={"Authorization": f"token {self.api_token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = json.loads(resp.read())
        return list(data.get("items", data) if isinstance(data, dict) else data)


def make_app(directory: Path) -> web.Application:
    g = GraderApp(directory)
    p = g.prefix
    return web.Application(
        [
            (p + "health", Health),
            (p + "grade", Grade),
            (p + "hint", Hint),
            (p + "run", Run),
            (p + "runs", Runs),
            (p + "stop", Stop),
            (p + "me", Me),
            (p + "api/room", RoomApi),
            (p + "room.csv", RoomCsv),
            (p + "scoreboard", Scoreboard),
            (p + "progress", Progress),
            (p + "oauth_callback", HubOAuthCallbackHandler),
            (p.rstrip("/") + "/?", Page),
        ],
        cookie_secret=os.urandom(32),
        grader=g,
    )


def main() -> None:
    directory = Path(os.environ["TRUSTLAB_HUB_DIR"])
    app = make_app(directory)
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port or 80, url.hostname or "127.0.0.1", max_body_size=MAX_BODY + 1024)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
