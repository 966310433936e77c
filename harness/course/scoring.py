"""Scored mode: ``trustlab challenge serve``, the grader a workshop instructor runs, and its client.

In practice mode a laptop grades itself and no flag exists. In scored mode the grading happens
where the attendee cannot read the secret (nor, with a kit built without them, the solutions):
the instructor's machine runs :func:`serve`, each attendee holds a token, and ``trustlab
challenge check ID`` with ``TRUSTLAB_GRADER_URL`` and ``TRUSTLAB_GRADER_TOKEN`` set sends the
attempt there. The service grades it itself, on its own proxies, with the same grader
(:func:`harness.course.challenges.grade`), and only then issues a flag: ``trustlab{`` + 32 hex digits
of HMAC-SHA256(secret, ``<challenge id>:<attendee>``) + ``}``, so a flag names its attendee and
none can be computed without the secret.

The wire: ``POST /grade`` with ``Authorization: Bearer <token>`` and the JSON body ``{"id":
"...", "config": "<the file's text>"}`` (and ``"files": {"<name>": "<text>"}`` for a challenge whose
config reads further files beside it, its ``files``; one not sent is the challenge's own); the
answer is the grade's JSON (``--json`` of ``challenge check``) plus ``text`` (what ``check``
prints) and, when solved, ``flag`` and ``attendee``.
``GET /health`` answers ``{"ok": true}``. Errors are ``{"error": "..."}`` with 400 (bad input),
401 (unknown token) or 413 (too large).

Tokens: ``trustlab challenge tokens NAMES... --out FILE`` writes ``{"<token>": "<attendee>"}``
(0600); ``serve --tokens FILE`` reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.errors import LabError

URL_ENV = "TRUSTLAB_GRADER_URL"
TOKEN_ENV = "TRUSTLAB_GRADER_TOKEN"
#: The largest attempt the service reads (a config, not an upload service).
MAX_BODY = 1_000_000


def attendee_flag(challenge_id: str, attendee: str, secret: str) -> str:
    """The scored-mode flag of *attendee* for *challenge_id* (see the module doc)."""
    digest = hmac.new(secret.encode(), f"{challenge_id}:{attendee}".encode(), hashlib.sha256).hexdigest()
    return f"trustlab{{{digest[:32]}}}"


def new_tokens(attendees: list[str]) -> dict[str, str]:
    """One random token per attendee name (names must be unique and non-empty)."""
    names = [a.strip() for a in attendees]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise LabError("tokens: give each attendee a unique, non-empty name")
    return {secrets.token_urlsafe(24): n for n in names}


def write_tokens(path: Path, tokens: dict[str, str]) -> None:
    """The tokens file, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(tokens, f, indent=2, sort_keys=True)
        f.write("\n")


def read_tokens(path: Path) -> dict[str, str]:
    """The ``{token: attendee}`` file :func:`write_tokens` wrote, or a one-line error."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LabError(f"--tokens: cannot read {path} ({exc.strerror})") from None
    except ValueError as exc:
        raise LabError(f"--tokens: {path} is not JSON ({exc}); write it with trustlab challenge tokens") from None
    pairs = data.items() if isinstance(data, dict) else []
    if not pairs or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise LabError(f"--tokens: {path} must map tokens to attendee names; write it with trustlab challenge tokens")
    return data


class GradingService:
    """Grades attempts it receives, with its own proxies, and issues flags for its own solves."""

    def __init__(self, *, secret: str, tokens: dict[str, str], runtime: str = "local") -> None:
        if not secret:
            raise LabError("serve: the workshop secret is empty; set TRUSTLAB_WORKSHOP_SECRET on the grading machine")
        self.secret, self.tokens, self.runtime = secret, dict(tokens), runtime

    def attendee(self, token: str) -> str | None:
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return name
        return None

    def grade(
        self, attendee: str, challenge_id: str, config_text: str, files: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Grade *config_text* (and *files*, the challenge's further files as the attendee has
        them) for *challenge_id*; the flag when solved (see the module doc)."""
        from harness.course import challenges as C

        ch = C.get(challenge_id)
        extra = dict(files or {})
        unknown = sorted(set(extra) - set(ch.files))
        if unknown:
            raise LabError(
                f"files: {', '.join(unknown)} is not a file of {ch.id} (its files: {', '.join(ch.files) or 'none'})"
            )
        with tempfile.TemporaryDirectory(prefix="trustlab-graded-") as tmp:
            path = Path(tmp) / ch.config
            path.write_text(config_text)
            for name in ch.files:
                (Path(tmp) / name).write_text(extra[name] if name in extra else (ch.path / name).read_text())
            g = C.grade(ch, path, runtime=self.runtime)
        g.config = ch.config  # the attendee's file name, not the service's temp path
        if g.solved:
            g.flag = attendee_flag(ch.id, attendee, self.secret)
        data = g.to_json_dict()
        data["text"] = C.render_grade(g, hints_left=False)
        data["attendee"] = attendee
        return data


def serve(service: GradingService, *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for *service* (started by the caller: ``serve_forever``); port 0 picks one."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "trustlab-grader"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the instructor sees one line per grade
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"ok": True})
            else:
                self._send(404, {"error": f"{self.path}: not found; POST /grade"})

        def do_POST(self) -> None:
            if self.path != "/grade":
                self._send(404, {"error": f"{self.path}: not found; POST /grade"})
                return
            auth = self.headers.get("Authorization", "")
            who = service.attendee(auth[7:]) if auth.startswith("Bearer ") else None
            if who is None:
                self._send(401, {"error": "unknown token; ask the instructor for yours (TRUSTLAB_GRADER_TOKEN)"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self._send(413 if length > MAX_BODY else 400, {"error": f"the body must be 1 to {MAX_BODY} bytes"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                cid, text, files = body["id"], body["config"], body.get("files", {})
                if not isinstance(cid, str) or not isinstance(text, str) or not text.strip():
                    raise ValueError("id and config must be non-empty strings")
                if not isinstance(files, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in files.items()
                ):
                    raise ValueError("files must map file names to their text")
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f'the body must be {{"id": ..., "config": ...}} ({exc})'})
                return
            try:
                result = service.grade(who, cid, text, files)
            except LabError as exc:  # an unknown challenge, a config the lab cannot run
                self._send(400, {"error": str(exc)})
                return
            self._send(200, result)

    return ThreadingHTTPServer((host, port), Handler)


def run_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def remote_grade(
    url: str,
    token: str,
    challenge_id: str,
    config_text: str,
    *,
    files: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send an attempt (its config, and *files* beside it) to the instructor's grader; its JSON
    answer, or a one-line error."""
    body = {"id": challenge_id, "config": config_text, **({"files": files} if files else {})}
    return _post(url, token, "grade", body, timeout=timeout)


def remote_hint(url: str, token: str, challenge_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """The next hint tier from the classroom server's grader, which records it (``POST hint``:
    ``{"id", "tier", "of", "hint"}``); ``challenge serve`` has no hints (404, a one-line error)."""
    return _post(url, token, "hint", {"id": challenge_id}, timeout=timeout)


def _post(url: str, token: str, route: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url.rstrip("/") + "/" + route,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        raise LabError(f"{URL_ENV}={url}: the grader said {exc.code}: {why}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LabError(
            f"{URL_ENV}={url}: cannot reach the grader ({reason}); check the URL with your instructor"
        ) from None
