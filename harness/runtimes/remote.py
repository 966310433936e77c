"""The remote runtime: an attendee's notebook runs its labs through the classroom's lab service.

In a classroom server (``trustlab classroom serve``) an attendee's JupyterLab has no docker
socket, no privilege and no capability: it cannot start a proxy. Its spawner sets
``TRUSTLAB_RUNTIME=remote`` and ``TRUSTLAB_GRADER_URL`` (the grader service on the attendees'
network gateway); the server's own hub token (``TRUSTLAB_GRADER_TOKEN``, else
``JUPYTERHUB_API_TOKEN``) says who asks. :func:`run` then sends *data only* -- built-in scenario
ids and identity ids, never code nor a scenario file -- to ``POST <url>/run``; the service
validates them as the CLI does, runs them on its docker runtime (today's hardened lab
containers, labelled with the attendee) and answers the results' JSON, which becomes the same
:class:`~harness.results.Results` a local run returns. Every refusal comes back as one line
(:class:`~harness.errors.LabError`).

The service's limits (:mod:`harness.hub.grader`): :data:`MAX_RUNS_PER_ATTENDEE` labs at once per
attendee, :data:`MAX_CELLS` cells per request.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from harness.errors import LabError, PrerequisiteError
from harness.results import Cell, Results

NAME = "remote"
#: Picks the notebooks' runtime (harness.notebook, the pytest plugin); the spawner sets it to NAME.
RUNTIME_ENV = "TRUSTLAB_RUNTIME"
#: The service's URL and the caller's token (the same as the grader's: it is one service).
URL_ENV = "TRUSTLAB_GRADER_URL"
TOKEN_ENV = "TRUSTLAB_GRADER_TOKEN"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
#: Labs one attendee may have running at once on the service (a second is refused, 429).
MAX_RUNS_PER_ATTENDEE = 1
#: Cells (scenarios x identities) one request may ask for: notebook 00's runs are 11-13 cells,
#: a whole proxy kind's matrix about 150; the full matrix is refused (run it per kind).
MAX_CELLS = 200
#: Seconds the client waits for an answer (a run of MAX_CELLS on a busy host stays well under).
TIMEOUT_S = 600.0


def endpoint() -> tuple[str, str]:
    """The service's URL and the token to send, or a one-line :class:`PrerequisiteError`."""
    url = os.environ.get(URL_ENV, "").strip()
    token = os.environ.get(TOKEN_ENV, "").strip() or os.environ.get(HUB_TOKEN_ENV, "").strip()
    if not url or not token:
        raise PrerequisiteError(
            f"the remote runtime needs {URL_ENV} and {TOKEN_ENV} (set in a classroom server); "
            "outside one, use TRUSTLAB_RUNTIME=local or docker"
        )
    return url.rstrip("/"), token


def call(route: str, body: dict[str, Any] | None = None, *, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """``POST`` *body* (``GET`` when None) to the service's *route*; its JSON or a one-line error."""
    url, token = endpoint()
    request = urllib.request.Request(
        f"{url}/{route}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error") or exc.reason
        except ValueError:
            why = exc.reason
        raise LabError(f"lab service: {why}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LabError(f"lab service at {url}: cannot reach it ({reason}); ask your instructor") from None


class RemoteRuntime:
    """What :func:`harness.runner.get_runtime` gives for ``remote``: preflight and versions only;
    :func:`harness.runner.run` hands the whole run to :func:`run` (the lab, its PKI and its
    proxies are the service's)."""

    name = NAME

    def preflight(self, kinds: set[str]) -> None:
        try:
            call("health", timeout=10)
        except LabError as exc:
            raise PrerequisiteError(str(exc)) from None

    def versions(self) -> dict[str, str]:
        return {}


def run(scenario_ids: Sequence[str], *, identities: Sequence[str] | None = None) -> Results:
    """Run built-in scenarios on the classroom's lab service; the same :class:`Results` as a
    local run, with ``meta["runtime"] == "remote"`` and ``meta["remote"]`` saying where it ran."""
    body: dict[str, Any] = {"scenarios": list(scenario_ids)}
    if identities:
        body["identities"] = list(identities)
    t0 = time.perf_counter()
    data = call("run", body)
    try:
        cells = [Cell.from_dict(c) for c in data["cells"]]
        meta = dict(data["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LabError(f"lab service: its answer is not a run's results ({exc})") from None
    meta["remote"] = {
        "runtime": meta.get("runtime"),
        "url": endpoint()[0],
        "round_trip_s": round(time.perf_counter() - t0, 3),
    }
    meta["runtime"] = NAME
    return Results(meta=meta, cells=cells)
