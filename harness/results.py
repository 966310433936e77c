"""The data a run produces: :class:`Cell` (one request's outcome and evidence) and
:class:`Results` (the cells of a run and what it ran on).

These types sit below everything that makes or shows them: the runner fills them, and
``report``, ``verdicts`` and ``notebook`` read them. This module imports nothing of trustlab
above :mod:`harness.vocab` (stdlib only: the lab workers import it too). A presentation layer
that wants runs to display themselves (Jupyter's ``_repr_html_``) registers its renderers with
:func:`register_display`; nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.versions import matches_prefix
from harness.vocab import Outcome


@dataclass(frozen=True)
class Cell:
    """The outcome of one request (proxy x variant x identity) with its evidence."""

    scenario: str
    proxy: str
    variant: str
    identity: str
    outcome: Outcome
    expected: Outcome | None
    status: int | None
    reason: str
    sni: str | None
    tls: str | None
    duration_s: float
    #: Seat evidence (issue 14): "reused connection" (the request came on a connection already
    #: open, no new handshake) or "resumed session" (a resumed TLS handshake); None otherwise.
    reuse: str | None = None
    #: mTLS scenarios: the client certificate the proxy sent, "subject (issuer ...)".
    client_cert: str | None = None
    #: Multi-policy scenarios: what the request under the loose policy got first.
    primed: str | None = None
    #: Versions as an axis (issue 15): the proxy's version that ran this cell (``1.22.1``) and
    #: the TLS library it runs with (``OpenSSL 3.0.19``); None in results written before.
    proxy_version: str | None = None
    tls_library: str | None = None

    @property
    def differs(self) -> bool:
        """True when a scenario expectation exists and the run disagrees with it."""
        return self.expected is not None and self.outcome is not self.expected

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["expected"] = self.expected.value if self.expected else None
        d["duration_s"] = round(self.duration_s, 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Cell:
        data = dict(d)
        data["outcome"] = Outcome(str(data["outcome"]))
        data["expected"] = Outcome(str(data["expected"])) if data.get("expected") else None
        return cls(**data)  # type: ignore[arg-type]


#: Renderers a presentation layer registered (``html``: Results -> str; ``pretty``: Results,
#: printer, cycle -> None). :mod:`harness.course.notebook` registers its grid when it is imported.
_display: dict[str, Callable[..., Any]] = {}


def register_display(
    *, html: Callable[[Results], str] | None = None, pretty: Callable[[Results, Any, bool], None] | None = None
) -> None:
    """Let runs display themselves through *html* (Jupyter) and *pretty* (IPython's console)."""
    if html is not None:
        _display["html"] = html
    if pretty is not None:
        _display["pretty"] = pretty


@dataclass
class Results:
    """The cells of a run and what it ran on."""

    meta: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)

    @property
    def mismatches(self) -> list[Cell]:
        return [c for c in self.cells if c.differs]

    def to_json_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "cells": [c.to_dict() for c in self.cells]}

    def outcomes(self) -> dict[tuple[str, str], Outcome]:
        """(scenario, identity) -> outcome; a run on several versions keeps the last of each."""
        return {(c.scenario, c.identity): c.outcome for c in self.cells}

    def _repr_html_(self) -> str | None:
        """A coloured grid when a notebook displays the results (once a renderer is registered)."""
        html = _display.get("html")
        return str(html(self)) if html else None

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        pretty = _display.get("pretty")
        if pretty:
            pretty(self, printer, cycle)
        else:
            printer.text(f"Results({len(self.cells)} cells, {len(self.mismatches)} differ from expectation)")

    def cell(self, scenario: str, identity: str, *, version: str | None = None) -> Cell:
        """The cell of *scenario* x *identity* (on the proxy version starting with *version*)."""
        for c in self.cells:
            if (
                c.scenario == scenario
                and c.identity == identity
                and (version is None or (c.proxy_version and matches_prefix(c.proxy_version, version)))
            ):
                return c
        raise KeyError((scenario, identity) if version is None else (scenario, identity, version))
