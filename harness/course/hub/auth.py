"""Sign-in with the per-attendee codes ``trustlab classroom attendees add`` printed.

A JupyterHub authenticator over ``codes.json`` in the hub's state directory (salted SHA-256 of
each code; :func:`harness.course.hub.check_code`). The file is read at every sign-in, so attendees added
while the hub runs can sign in at once. Only a name with a code signs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Unicode


class CodeAuthenticator(Authenticator):
    """Admits ``username`` when ``password`` is that name's sign-in code."""

    codes_dir = Unicode(help="the hub's state directory, which holds codes.json").tag(config=True)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        from harness.course.hub import check_code

        name = (data.get("username") or "").strip().lower()
        code = data.get("password") or ""
        if not name or not code or not self.codes_dir:
            return None
        if check_code(Path(self.codes_dir), name, code):
            return name
        self.log.warning("sign-in refused for %r: unknown name or wrong code", name)
        return None
