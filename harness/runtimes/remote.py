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

The service's limits (:mod:`harness.course.hub.grader`): :data:`MAX_RUNS_PER_ATTENDEE` labs at once per
attendee, :data:`MAX_CELLS` cells per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import LabError, PrerequisiteError
from harness.results import Cell, Results
from harness.runtimes.base import ConfigJob, Held, Job, OnProxy, event_of
from harness.runtimes.contract import CellEvent

if TYPE_CHECKING:
    from harness.proxies.base import Installation
    from harness.scenarios import Scenario

NAME = "remote"
#: Picks the notebooks' runtime (harness.course.notebook, the pytest plugin); the spawner sets it to NAME.
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
    """Runs scenario jobs on the classroom's lab service: their built-in scenario ids and identity
    ids go there (data, never a scenario file or a config); the cells come back. The lab, its
    PKI and its proxies are the service's (its docker runtime)."""

    name = NAME

    def __init__(self) -> None:
        #: The last run's results meta as the service reported it.
        self._served: dict[str, Any] = {}

    def preflight(self, kinds: set[str]) -> None:
        """Where the service is and who asks (set in a classroom server); whether it answers,
        the run's own request says (its scenarios are checked first: no request for a file)."""
        endpoint()

    def health(self) -> None:
        """A one-line :class:`PrerequisiteError` unless the service answers (``trustlab doctor``)."""
        try:
            call("health", timeout=10)
        except LabError as exc:
            raise PrerequisiteError(str(exc)) from None

    def versions(self) -> dict[str, str]:
        return dict(self._served.get("versions") or {})

    def installations(self, kind: str) -> list[Installation]:
        return []  # the service's default of each kind (its version comes back in the cells' meta)

    def lacking(self, kinds: Iterable[str], matches: Callable[[str, str], bool] = lambda k, v: True) -> str:
        return (
            "the remote runtime runs each scenario on the lab service's default proxy version; "
            "drop --proxy KIND@VERSION / --all-versions"
        )

    def lab_path(self, lab_dir: Path, path: Path) -> Path:
        return path

    def facts(self) -> dict[str, Any]:
        served = self._served
        if not served:
            return {}
        return {k: served.get(k) for k in ("backend_ip", "remote", "proxy_versions")}

    def stop(self) -> None:
        return None  # the service ends an attendee's lab when its request ends

    def hold(self, job: Job, *, lab_dir: Path) -> contextlib.AbstractContextManager[Held]:
        raise LabError("the remote runtime runs labs to completion; trustlab up needs local or docker")

    def run(self, job: Job, *, lab_dir: Path, on_proxy: OnProxy | None = None) -> Iterator[CellEvent]:
        """Every cell of *job* once the service answers (all at once: it answers when the run is
        over)."""
        if isinstance(job, ConfigJob):
            raise LabError("the remote runtime runs built-in scenarios only, not a config (trustlab check)")
        _builtin_only(job.scenarios)
        # With optional identities added per scenario the caller gave none: the service adds them too.
        results = run([s.id for s in job.scenarios], identities=None if job.extra else job.identities)
        self._served = {**results.meta, "backend_ip": results.meta.get("backend_ip")}
        kinds = {s.id: s.proxy.value for s in job.scenarios}
        for cell in results.cells:
            if cell.scenario not in kinds:
                raise LabError(f"lab service: its answer names {cell.scenario}, which was not asked for")
            yield event_of(cell)


def _builtin_only(scenarios: Iterable[Scenario]) -> None:
    """Refuse a scenario that is not built in: the service looks ids up, never a file."""
    from harness import scenarios as builtins

    known = builtins.builtin()
    for sc in scenarios:
        if known.get(sc.id) is None or sc.path != known[sc.id].path:
            raise LabError(
                f"{sc.id}: the remote runtime runs built-in scenarios only (trustlab matrix --list), "
                "not a scenario file"
            )


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
