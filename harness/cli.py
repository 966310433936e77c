"""The ``trustlab`` command line.

Exit codes: 0 ok; 1 an expectation or check failed; 2 bad input or a missing prerequisite
(one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn, TextIO

from harness import __version__
from harness.errors import LabError
from harness.report.page import PAGE_NAME as PAGE
from harness.vocab import IDENTITY_IDS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def _identities(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    for ident in chosen:
        if ident not in IDENTITY_IDS:
            raise LabError(f"--identity: {ident!r} is unknown; known: {', '.join(IDENTITY_IDS)}")
    return chosen


def _runtime(name: str, *, say: TextIO | None = None) -> str:
    """*name*, or for ``auto`` the runtime chosen, said on *say* (default stderr)."""
    if name != "auto":
        return name
    from harness.runner import resolve_auto

    chosen, why = resolve_auto()
    print(f"runtime: {chosen} ({why})", file=say or sys.stderr)
    return chosen


def _proxies(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


def _selectors(value: str | None, *, flag: str = "--proxy") -> list[Any]:
    """``nginx,haproxy@2.8`` -> selectors (a kind, or a kind and a version prefix)."""
    from harness.proxies import names
    from harness.versions import parse_selector

    out = []
    for part in _proxies(value) or []:
        try:
            out.append(parse_selector(part, kinds=names(), flag=flag))
        except ValueError as exc:
            raise LabError(str(exc)) from None
    return out


def _check_writable(
    path: Path | None, flag: str, *, inputs: tuple[Path, ...] = (), directory: bool | None = None
) -> None:
    """Refuse an output path now, before the run, when writing it would fail or destroy an input.

    A run is lost when its report cannot be written at the end (``--json /proc/x.json``, an
    ``--out`` whose ``matrix.json`` is a directory), so each target is tried up front: its
    directory must exist and take a new file, the target must not be a directory, and it must
    not be one of the files the command reads (``check --json`` naming the config itself)."""
    if path is None:
        return
    path = Path(path)
    shown = _shown(str(path))
    directory = flag == "--out" if directory is None else directory
    if path.is_dir() and not directory:
        raise LabError(f"{flag}: {shown} is a directory; give a file name (or remove the directory)")
    parent = path if directory and path.is_dir() else path.parent
    if not parent.exists():
        raise LabError(f"{flag}: directory {_shown(str(parent))} does not exist")
    if not parent.is_dir():
        raise LabError(f"{flag}: {_shown(str(parent))} is not a directory")
    for given in inputs:
        if _same_file(path, given):
            raise LabError(
                f"{flag}: {shown} is the input {_shown(str(given))}; writing there would overwrite it; "
                "choose another file"
            )
    _try_write(parent, flag)


def _try_write(parent: Path, flag: str) -> None:
    """Create a file in *parent* and drop it, or say why *flag* cannot write there. The file has
    no name (``O_TMPFILE``, where the file system has it; else it is unlinked as it is made), so
    a Ctrl-C at any moment leaves nothing behind."""
    try:
        with tempfile.TemporaryFile(prefix=".trustlab-write-test.", dir=parent):
            pass
    except OSError as exc:
        raise LabError(f"{flag}: cannot write to {_shown(str(parent))} ({exc.strerror})") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):
        return False


def _distinct(outputs: list[tuple[str, Path]]) -> None:
    """Two outputs may not name one file (``--json X --csv X`` kept only the CSV)."""
    for i, (flag, path) in enumerate(outputs):
        for other, path2 in outputs[:i]:
            if _same_file(path, path2):
                raise LabError(f"{other} and {flag} both name {_shown(str(path))}; give each its own file")


def _shown(value: str) -> str:
    from harness.errors import shown

    return shown(value)


# -- commands ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from harness import report, runner, scenarios
    from harness.report import terminal

    chosen = scenarios.select(args.scenario)
    _check_writable(args.json, "--json", inputs=tuple(sc.path for sc in chosen if sc.path))
    runtime = _runtime(args.runtime)
    idents = _identities(args.identity)
    progress = terminal.Progress(sum(len(idents or sc.identities) for sc in chosen))
    try:
        results = runner.run(
            chosen, runtime=runtime, identities=idents, keep=args.keep, on_cell=lambda c: progress.step(c.scenario)
        )
    finally:
        progress.close()
    if args.wide:
        print(report.run_text(results, chosen), end="")
    else:
        terminal.run_report(results, chosen, terminal.console())
    if args.json:
        report.write_json(results, args.json)
        print(f"wrote {args.json}")
    if results.mismatches:
        print(f"{len(results.mismatches)} cell(s) differ from expectation", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_matrix(args: argparse.Namespace) -> int:
    from harness import report, runner, scenarios
    from harness.report import page, terminal

    selectors = _selectors(args.proxy)
    chosen = scenarios.select(None, proxies=[s.kind for s in selectors] or None)
    if args.list:
        if args.wide:
            for sc in chosen:
                print(f"{sc.id:<28} {sc.title}")
        else:
            terminal.scenario_list(chosen, terminal.console())
        return EXIT_OK
    out = Path(args.out or "results")
    if out.exists() and not out.is_dir():
        raise LabError(f"--out: {out} exists and is not a directory")
    # A picture only when one is asked for: --png, --poster, or an --out directory (make lab).
    draw = not args.no_plot and (args.png is not None or args.poster or args.out is not None)
    png = Path(args.png) if args.png else out / "matrix.png"
    pictures = [("--png", png)] if draw else []
    pictures += [("--poster", out / "matrix-poster.png")] if draw and args.poster else []
    outputs = [
        ("--json", args.json or out / "matrix.json"),
        ("--csv", args.csv or out / "matrix.csv"),
        ("--out", out / "matrix.md"),
        ("--out", out / PAGE),
    ] + pictures
    _distinct(outputs)
    if out.exists():
        for flag, value in outputs:
            _check_writable(value, flag, directory=False)
    else:
        _check_writable(out, "--out")
        asked = Path(args.png) if args.png else None
        for flag, value in (("--json", args.json), ("--csv", args.csv), ("--png", asked)):
            _check_writable(value, flag)
    runtime = _runtime(args.runtime)
    idents = _identities(args.identity)
    versioned = args.all_versions or any(sel.prefix for sel in selectors)
    progress = terminal.Progress(0 if versioned else sum(len(idents or sc.identities) for sc in chosen))
    try:
        results = runner.run(
            chosen,
            runtime=runtime,
            identities=idents,
            seed=args.seed,
            keep=args.keep,
            on_cell=lambda c: progress.step(c.scenario),
            selectors=selectors,
            all_versions=args.all_versions,
        )
    finally:
        progress.close()
    con = terminal.console()
    if args.wide:
        print(report.grid(results, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")), end="")
    else:
        terminal.matrix_grid(results, con)
    con.print(
        f"matrix: {len(results.cells)} cells in {results.meta['duration_s']:.2f} s on the "
        f"{results.meta['runtime']} runtime"
    )
    out.mkdir(parents=True, exist_ok=True)
    written = [
        report.write_json(results, args.json or out / "matrix.json"),
        report.write_csv(results, args.csv or out / "matrix.csv"),
    ]
    (out / "matrix.md").write_text(report.markdown(results))
    written.append(out / "matrix.md")
    if draw:
        written += report.draw(results, png, poster=out / "matrix-poster.png" if args.poster else None, say=con.print)
    written.append(page.write(results.to_json_dict(), out / PAGE))
    terminal.written(written, con)
    con.print(f"results page: {out / PAGE} (open it in a browser; works offline)", soft_wrap=True)
    for c in results.mismatches:
        print(
            f"differs: {c.scenario}{' @' + c.proxy_version if c.proxy_version else ''} x {c.identity}: "
            f"{c.outcome.value}, expected "
            f"{c.expected.value if c.expected else '-'} ({c.reason})",
            file=sys.stderr,
        )
    return EXIT_FAILED if results.mismatches else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """`trustlab diff A B`: the cells whose outcome changes between two proxy versions (or runs).

    Each side is ``KIND@PREFIX`` (run now; both sides in one lab) or a matrix JSON file
    (``FILE``, or ``FILE@PREFIX`` for one version of a file holding several). Exit 0 when no
    outcome changes, 1 when some do, 2 bad input."""
    from harness import report, runner, scenarios
    from harness.report import terminal
    from harness.versions import diff, render_diff

    _check_writable(args.json, "--json")
    sides = [_diff_side(args.a), _diff_side(args.b)]
    if sides[0].label == sides[1].label:
        raise LabError(
            f"diff: both sides are {sides[0].label}; compare two versions (nginx@1.22 nginx@1.31) or two files"
        )
    live = [s for s in sides if isinstance(s, _Live)]
    if len({s.selector.kind for s in live}) > 1:
        raise LabError(
            f"diff: {live[0].label} and {live[1].label} are different proxies; compare two versions of one proxy"
        )
    if live:
        kinds = {s.selector.kind for s in live}
        refs = args.scenario or None
        chosen = scenarios.select(refs, proxies=sorted(kinds))
        if not chosen:
            raise LabError(f"no scenario of {', '.join(sorted(kinds))} selected; see trustlab matrix --list")
        runtime = _runtime(args.runtime)
        installed = [i.version for i in runner.get_runtime(runtime).installations(live[0].selector.kind)]
        for s in live:
            hits = [v for v in installed if s.selector.matches(s.selector.kind, v)]
            if len(hits) > 1:
                raise LabError(f"diff: {s.label} matches {', '.join(hits)}; give a longer version prefix")
        progress = terminal.Progress(0)
        try:
            results = runner.run(
                chosen,
                runtime=runtime,
                identities=_identities(args.identity),
                selectors=[s.selector for s in live],
                on_cell=lambda c: progress.step(c.scenario),
            )
        finally:
            progress.close()
        for s in live:
            s.label, s.cells = runner.side(results, s.selector)
        for c in results.mismatches:
            print(
                f"differs from expectation: {c.scenario} @{c.proxy_version} x {c.identity}: "
                f"{c.outcome.value}, expected {c.expected.value if c.expected else '-'}",
                file=sys.stderr,
            )
    a, b = sides
    if a.label == b.label:
        raise LabError(f"diff: both sides ran on {a.label}; compare two versions (nginx@1.22 nginx@1.31) or two files")
    d = diff(a.cells, b.cells, a=a.label, b=b.label)
    if not d.compared:
        raise LabError(f"diff: {a.label} and {b.label} have no cell in common (different proxies or scenarios)")
    if args.wide:
        print(render_diff(d), end="")
    else:
        terminal.diff_report(d, terminal.console())
    if args.json:
        text = json.dumps(d.to_json_dict(), indent=2) + "\n"
        report.write_text(args.json, text)
        print(f"wrote {args.json}")
    return EXIT_FAILED if d.changes else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """`trustlab report FILE.json [-o OUT.html]`: the results page of a matrix, diff, check or conformance JSON."""
    from harness.report import page

    doc = page.load(args.file)
    # A conformance run's page goes beside its JSON under the same stem (docs/conformance.html).
    default = args.file.with_suffix(".html").name if page.source_kind(doc) == "conformance" else PAGE
    out = args.output or args.file.parent / default
    _check_writable(out, "-o", inputs=(args.file,))
    page.write(doc, out)
    print(f"results page: {out} ({page.source_kind(doc)}, one file, works offline: open it in a browser)")
    return EXIT_OK


class _Live:
    """A diff side run now: ``nginx@1.31``."""

    def __init__(self, selector: Any) -> None:
        self.selector = selector
        self.label = str(selector)
        self.cells: list[dict[str, Any]] = []


class _Saved:
    """A diff side read from a matrix JSON file (``F.json`` or ``F.json@1.31``)."""

    def __init__(self, label: str, cells: list[dict[str, Any]]) -> None:
        self.label, self.cells = label, cells


def _diff_side(text: str) -> _Live | _Saved:
    from harness.proxies import names
    from harness.versions import matches_prefix, parse_selector

    head, at, prefix = text.partition("@")
    if head in names():
        try:
            sel = parse_selector(text, kinds=names(), flag="diff")
        except ValueError as exc:
            raise LabError(str(exc)) from None
        if sel.prefix is None:
            raise LabError(f"diff: {text!r} names no version; write {text}@VERSION (trustlab doctor lists them)")
        return _Live(sel)
    path = Path(head if at and not Path(text).exists() else text)
    if not path.exists() and not path.is_symlink():
        raise LabError(
            f"diff: {_shown(text)!r} is neither KIND@VERSION ({', '.join(names())}) nor an existing matrix JSON file"
        )
    from harness.errors import read_input

    raw = read_input(
        path,
        error=LabError,
        kind="a matrix JSON file",
        limit=200_000_000,
        directory_hint="pass a file written by trustlab matrix --json",
    )
    try:
        cells = json.loads(raw)["cells"]
        assert isinstance(cells, list) and all(
            isinstance(c, dict)
            and isinstance(c.get("scenario"), str)
            and isinstance(c.get("identity"), str)
            and isinstance(c.get("outcome"), str)
            for c in cells
        )
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError):
        raise LabError(
            f"{_shown(str(path))}: not a trustlab matrix JSON file (no cells with scenario, identity "
            "and outcome); write one with trustlab matrix --json FILE"
        ) from None
    if at and path != Path(text):
        cells = [
            c for c in cells if isinstance(c.get("proxy_version"), str) and matches_prefix(c["proxy_version"], prefix)
        ]
        if not cells:
            raise LabError(f"diff: {_shown(str(path))} holds no cell on a version starting with {prefix}")
    seen: dict[tuple[str, str], set[object]] = {}
    for c in cells:
        seen.setdefault((c["scenario"], c["identity"]), set()).add(c.get("proxy_version"))
    twice = next((k for k, v in seen.items() if len(v) > 1), None)
    if twice:
        versions = ", ".join(sorted(str(v) for v in seen[twice]))
        where = _shown(str(path))
        raise LabError(f"diff: {where} holds {twice[0]} on {versions}; pick one: {where}@VERSION")
    return _Saved(_shown(str(path)) + (f"@{prefix}" if at and path != Path(text) else ""), cells)


def cmd_pki(args: argparse.Namespace) -> int:
    from harness.pki import LabPKI
    from harness.vocab import LOCAL_LAB_IP

    if args.pki_cmd == "mint":
        out = Path(args.out)
        if args.backend_ip:
            import ipaddress

            try:
                ipaddress.ip_address(args.backend_ip)
            except ValueError:
                raise LabError(
                    f"--backend-ip: {_shown(args.backend_ip)!r} is not an IP address; "
                    "give one like 10.203.0.10 or fd00::10"
                ) from None
        try:
            busy = out.exists() and any(out.iterdir()) if out.is_dir() else out.exists()
        except OSError as exc:
            raise LabError(f"--out: cannot inspect {_shown(str(out))} ({exc.strerror})") from None
        if busy:
            raise LabError(f"--out: {out} already exists and is not empty; choose a new directory")
        if not out.parent.exists():
            raise LabError(f"--out: directory {out.parent} does not exist")
        # Mint next to the target, then rename: an interrupted mint leaves nothing behind.
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        except OSError as exc:
            raise LabError(
                f"--out: cannot create a directory in {out.parent} ({exc.strerror}); choose a writable place"
            ) from None
        try:
            LabPKI.mint(backend_ip=args.backend_ip or LOCAL_LAB_IP).write_to(tmp)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabError(f"--out: cannot write the PKI to {out} ({exc.strerror})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        print(f"wrote the lab PKI to {out} (keys 0600, directory 0700); see {out}/manifest.json")
        return EXIT_OK
    if args.dir:
        from harness.errors import read_input

        manifest = Path(args.dir) / "manifest.json"
        if not manifest.exists() and not manifest.is_symlink():
            raise LabError(f"{_shown(str(manifest))}: not found; pass a directory written by `trustlab pki mint`")
        raw = read_input(
            manifest,
            error=LabError,
            kind="a PKI manifest",
            limit=1_000_000,
            directory_hint="pass a directory written by `trustlab pki mint`",
        )
        try:
            rows = list(json.loads(raw)["identities"].values())
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            rows = []
        if not rows or not all(_manifest_row(r) for r in rows):
            raise LabError(
                f"{manifest}: not a trustlab PKI manifest (or a damaged one); "
                "mint a fresh one with `trustlab pki mint --out DIR`"
            )
    else:
        pki = LabPKI.mint()
        rows = [c.describe() for c in pki.identities.values()]
        print("(a fresh PKI minted for display; `trustlab pki mint --out DIR` keeps one)\n")
    for row in rows:
        print(f"{row['identity']}  ({'legitimate' if row['legitimate'] else 'impostor'}): {row['meaning']}")
        print(f"    subject   {row['subject']}")
        print(f"    SANs      {', '.join(row['sans']) or '(none)'}")
        print(f"    issuer    {row['issuer']}")
        print(f"    validity  {row['not_before']} .. {row['not_after']}")
        print(f"    served    {row['chain_served']} certificate(s)")
    return EXIT_OK


_ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "identity": str,
    "legitimate": (bool, type(None)),
    "meaning": str,
    "subject": str,
    "sans": list,
    "issuer": str,
    "not_before": str,
    "not_after": str,
    "chain_served": int,
}


def _manifest_row(row: object) -> bool:
    """One identity of a PKI manifest has every field `pki show` prints, of the right type."""
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(k), t) for k, t in _ROW_FIELDS.items())
        and all(isinstance(s, str) for s in row["sans"])
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import diagnose

    return diagnose(print)


def _through(attempt: dict[str, Any]) -> str:
    """One line on a request through a held lab: the status and who answered, or the verdict."""
    from harness.vocab import LEGITIMATE_IDS

    status = attempt["status"] if attempt["status"] is not None else "no response"
    who = attempt["served_by"]
    if who:
        kind = "the legitimate backend" if who.split("@")[0] in LEGITIMATE_IDS else "an IMPOSTOR (spoofed)"
        return f"{status}, answered by {who}: {kind}"
    logged = attempt["verdict"] or "nothing (no verification line)"
    return f"{status}, refused; the proxy logged: {logged}"


def cmd_up(args: argparse.Namespace) -> int:
    from harness import held

    if bool(args.config) == bool(args.scenario) or bool(args.config) != bool(args.proxy):
        raise LabError("up: give a scenario, or --config FILE --proxy KIND (one of the two)")
    if args.config:
        runtime = "local" if args.runtime == "auto" else args.runtime
        state = held.up_config(args.proxy, args.config, identity=args.identity, runtime=runtime)
    else:
        state = held.up(args.scenario, identity=args.identity, runtime=_runtime(args.runtime, say=sys.stdout))
    _print_held(state)
    return EXIT_OK


def _print_held(state: dict[str, Any]) -> None:
    """What `trustlab up` holds, the first request through it, and what to do next."""
    from harness import held

    print(
        f"lab {state['lab']} is up: {state['scenario']} ({state['runtime']} runtime), "
        f"the backend answers as {state['identity']}"
    )
    print(f"  first request:     {_through(held.try_once(state=state))}")
    print(f"  through the proxy: {state['curl']}")
    if state.get("upstream"):
        print(
            f"  the upstream held: {state['upstream']}"
            + (f" (not held: {len(state['others'])} more; check runs them all)" if state.get("others") else "")
        )
    ct = state.get("container")
    where = f"   (inside {ct}: docker exec {ct} cat ...)" if ct else ""
    print(f"  its config:        {state['config']}{where}")
    print(f"  its error log:     {state['log']}")
    if state["point"] != state["identity"]:
        print(f"  to see the point:  trustlab present {state['point']}   ({state['point_why']})")
    else:
        print(f"  the point shows now ({state['point_why']}); other identities: trustlab present IDENTITY")
    print("  what the backend saw and the proxy's verdicts: trustlab status --log")
    print("  stop it:           trustlab down")


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_seat_log(st: dict[str, Any]) -> None:
    """What a held lab's backend seat saw, and the proxy's verdicts."""
    from harness import held

    for conn in held.seat_log(lab=st["lab"]):
        print(
            f"    seat: #{conn['seq']} as {conn['identity']} sni={_dash(conn['sni'])} "
            f"tls={_dash(conn['tls'])} request={_dash(conn['request'])}"
            + (f" ({conn['error']})" if conn["error"] else "")
        )
    for line in held.verdict_lines(state=st):
        print(f"    proxy: {line}")


def cmd_status(args: argparse.Namespace) -> int:
    from harness import held
    from harness.runner import stale_labs

    states = held.labs()
    if not states:
        print("no lab is up")
    for st in states:
        alive = "up" if st["alive"] else f"DEAD (remove it: trustlab down {st['lab']})"
        print(
            f"{st['lab']}  {alive}  {st['scenario']}  runtime={st['runtime']}  identity={st['identity']}  "
            f"since {st['started']}"
        )
        if st["alive"]:
            print(f"    {st['curl']}")
            print(f"    config: {_dash(st.get('config'))}  log: {_dash(st.get('log'))}")
            if args.log:
                _print_seat_log(st)
    for why in held.ignored:
        print(f"ignored: {why}")
    stale = [p for p in stale_labs() if p.name not in {s["lab"] for s in states}]
    if stale:
        print(
            f"{len(stale)} stale lab director{'y' if len(stale) == 1 else 'ies'} left by a killed run: "
            "trustlab down --all"
        )
    return EXIT_OK


def cmd_present(args: argparse.Namespace) -> int:
    from harness import held
    from harness.vocab import ALL_IDENTITY_IDS

    if args.identity not in ALL_IDENTITY_IDS:
        raise LabError(f"identity {args.identity!r} is unknown; known: {', '.join(ALL_IDENTITY_IDS)}")
    state = held.present(args.identity, lab=args.lab)
    print(f"lab {state['lab']}: the backend now answers as {args.identity}")
    print(f"  a request through the proxy: {_through(held.try_once(state=state))}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from harness import held

    stopped = held.down(lab=args.lab, all_labs=args.all)
    print(f"stopped and removed: {', '.join(stopped)}" if stopped else "nothing to stop")
    return EXIT_OK


#: The optional identities ``check --identity`` runs: those that need nothing of the config beyond
#: its backend name (client-ca-signed needs an mTLS client certificate, revoked a CRL directive).
CHECK_OPTIONAL = ("legit-deep", "cn-only", "san-other-cn-backend", "wildcard-parent")
#: ``--all-identities``: the ones that apply to every backend name (wildcard-parent needs two labels
#: under the parent: ask for it by name).
CHECK_ALL = ("legit-deep", "cn-only", "san-other-cn-backend")


def check_identities(asked: list[str], *, every: bool = False) -> tuple[str, ...]:
    """The built-in identities, then the optional ones asked for (an unknown one is bad input)."""
    from harness.vocab import IDENTITY_IDS

    for ident in asked:
        if ident not in CHECK_OPTIONAL:
            extra = " (built in: always run)" if ident in IDENTITY_IDS else ""
            raise LabError(
                f"--identity: {ident!r}{extra} is not an optional identity check runs; "
                f"choose from {', '.join(CHECK_OPTIONAL)}"
            )
    return IDENTITY_IDS + tuple(dict.fromkeys([*(CHECK_ALL if every else ()), *asked]))


def cmd_check(args: argparse.Namespace) -> int:
    """`trustlab check PROXY FILE`: exit 0 legit served + impostors blocked, 1 otherwise, 2 bad input."""
    from harness.check import check, render
    from harness.report import terminal

    _check_writable(args.json, "--json", inputs=(args.file,))
    accept = tuple(a.strip() for a in (args.accept or "").split(",") if a.strip())
    identities = check_identities(args.identity, every=args.all_identities)
    result = check(
        args.proxy,
        args.file,
        accept=accept,
        keep=args.keep,
        runtime=_runtime(args.runtime, say=sys.stdout),
        version=args.proxy_version,
        identities=identities,
        dynamic=tuple(args.dynamic),
    )
    if args.json:
        args.json.write_text(json.dumps(result.to_json_dict(), indent=2) + "\n")
    if result.rejected:
        hint = "" if args.keep else " (--keep keeps the adapted config)"
        raise LabError(f"{args.proxy} refused {args.file} as adapted for the lab{hint}: {result.rejected}")
    if args.wide:
        print(render(result))
    else:
        terminal.check_report(result, terminal.console())
    if args.json:
        print(f"wrote {args.json}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_audit(args: argparse.Namespace) -> int:
    """`trustlab audit FILE`: exit 1 when a high-severity finding, else 0; 2 bad input."""
    from harness.audit import audit, render

    runtime = _runtime(args.runtime, say=sys.stdout) if args.prove else "local"
    report = audit(args.file, proxy=args.proxy, prove=args.prove, runtime=runtime)
    print(render(report))
    return EXIT_FAILED if report.high else EXIT_OK


def cmd_images(args: argparse.Namespace) -> int:
    from harness.runtimes import images

    if args.images_cmd == "build":
        r = images.build(force=args.force, method=args.method, image=images.lab_image(), versions=args.versions)
        verb = "up to date" if r.skipped else f"built in {r.duration_s:.1f} s"
        print(f"{', '.join(r.tags)}: {verb} ({', '.join(f'{k} {v}' for k, v in r.versions.items())})")
        if not args.versions:
            print(
                f"extra versions (trustlab proxies list) are not in it: {images.VERSIONS_BUILD} builds "
                f"{images.versions_image()}"
            )
    elif args.images_cmd == "save":
        target = Path(args.file)
        if target.is_dir():
            raise LabError(f"{target}: is a directory; give a file name such as trustlab-images.tar")
        if not target.parent.exists():
            raise LabError(f"{target}: directory {target.parent} does not exist")
        written = images.save(target, gzip=args.gzip or None)
        print(
            f"wrote {written}; copy it to each laptop and run: trustlab images load {written.name} "
            f"(or, with Docker only: docker load -i {written.name})"
        )
    elif args.images_cmd == "load":
        if not Path(args.file).is_file():
            raise LabError(f"{args.file}: no such file (write one with trustlab images save FILE)")
        print("loaded: " + ", ".join(images.load(args.file)))
    else:
        images.client(timeout=10)  # no daemon: one line saying where it looked and what to do
        present = images.images_present()
        own = images.image_proxies(ref=images.lab_image()) if present else []
        listed = [f"{r['kind']} {r['version']}" for r in own] or [
            f"{k} {v}" for k, v in (images.image_versions() if present else {}).items()
        ]
        print(f"{images.lab_image()}: " + (", ".join(listed) if present else "missing; run: trustlab images build"))
        extra = images.carried_by(images.client(), images.versions_image())
        print(
            f"{images.versions_image()}: "
            + (
                ", ".join(f"{r['kind']} {r['version']}" for r in extra)
                if extra is not None
                else f"missing; run: {images.VERSIONS_BUILD}"
            )
        )
        return EXIT_OK if present else EXIT_FAILED
    return EXIT_OK


def cmd_classroom(args: argparse.Namespace) -> int:
    """`trustlab classroom [build|stop]`: JupyterLab + notebooks + trustlab in one container."""
    from harness.course import classroom

    if args.classroom_cmd == "build":
        r = classroom.build(force=args.force)
        print(f"{r.image}: {'up to date' if r.skipped else f'built in {r.duration_s:.1f} s'}")
        return EXIT_OK
    if args.classroom_cmd == "stop":
        gone = classroom.stop()
        print(f"stopped and removed: {', '.join(gone)}" if gone else "no classroom is running")
        return EXIT_OK
    if args.classroom_cmd in ("serve", "attendees"):
        from harness.course.hub.cli import cmd_hub

        return cmd_hub(args)
    if args.rest:
        raise LabError(f"classroom {args.classroom_cmd}: unexpected {' '.join(args.rest)!r}")
    port = classroom.DEFAULT_PORT if args.port is None else args.port
    if not 0 < port < 65536:
        raise LabError(f"--port: {port} is not a port number (1-65535)")
    return classroom.run(port=port, detach=args.detach)


def _wide_opt(sp: argparse.ArgumentParser) -> None:
    """--wide, for the commands that print a grid or cells."""
    sp.add_argument(
        "--wide",
        action="store_true",
        help="one long line per row or cell, as before (default: fit the terminal, 80 columns when it cannot tell)",
    )


def _runtime_opt(sp: argparse.ArgumentParser) -> None:
    """--runtime, --identity and --keep, for the commands that run scenarios."""
    sp.add_argument(
        "--runtime",
        choices=("auto", "local", "docker", "remote"),
        default="auto",
        help="where the proxies run (default: auto = docker when ready, else local; remote = "
        "the classroom's lab service, in a classroom server)",
    )
    sp.add_argument("--identity", help="comma-separated identities (default: all)")
    sp.add_argument("--keep", action="store_true", help="keep the lab directory (configs, logs, keys)")


def _add_run(sub: Any) -> None:
    """`trustlab run`: scenarios by id or file, each cell's evidence."""
    sp = sub.add_parser("run", help="run scenarios by id or file and show each cell's evidence")
    sp.add_argument("scenario", nargs="+", help="scenario id (nginx/verify-off) or path to a .toml file")
    sp.add_argument("--json", type=Path, help="write the cells as JSON")
    _wide_opt(sp)
    _runtime_opt(sp)
    sp.set_defaults(func=cmd_run)


def _matrix_outputs(sp: argparse.ArgumentParser) -> None:
    """Where `trustlab matrix` writes, and which pictures it draws."""
    sp.add_argument(
        "--out", help="output directory (default: results/); naming one also draws the summary picture OUT/matrix.png"
    )
    sp.add_argument("--json", type=Path, help="JSON path (default: OUT/matrix.json)")
    sp.add_argument("--csv", type=Path, help="CSV path (default: OUT/matrix.csv)")
    sp.add_argument(
        "--png",
        nargs="?",
        const="",
        metavar="FILE",
        help="draw the summary picture (per proxy kind: impostors through, outages) to FILE "
        "(default: OUT/matrix.png); --json or --csv alone draw nothing",
    )
    sp.add_argument(
        "--poster",
        action="store_true",
        help="also draw the full scenarios x identities poster, OUT/matrix-poster.png (large, slow)",
    )
    sp.add_argument("--no-plot", action="store_true", help="draw no picture, even with --out")


def _add_matrix(sub: Any, every_kind: str) -> None:
    """`trustlab matrix`: every scenario x identity, and what it writes."""
    sp = sub.add_parser("matrix", help="run every scenario x identity; grid, JSON, CSV, pictures")
    sp.add_argument(
        "--proxy",
        help=f"comma-separated proxy kinds ({every_kind}), each optionally KIND@VERSION "
        "(nginx,haproxy@2.8: a version prefix)",
    )
    sp.add_argument(
        "--all-versions",
        action="store_true",
        help="run every installed version of each proxy (trustlab doctor lists them)",
    )
    _matrix_outputs(sp)
    _wide_opt(sp)
    sp.add_argument("--seed", type=int, help="shuffle the cell order with this seed")
    sp.add_argument("--list", action="store_true", help="list the scenarios and exit")
    _runtime_opt(sp)
    sp.set_defaults(func=cmd_matrix)


def _add_diff(sub: Any, every_kind: str) -> None:
    """`trustlab diff`: the cells that change between two versions or runs."""
    sp = sub.add_parser("diff", help="the cells whose outcome changes between two proxy versions (or two runs)")
    sp.add_argument(
        "a", help=f"KIND@VERSION (KIND: {every_kind}; nginx@1.22: run now) or a matrix JSON file (FILE or FILE@VERSION)"
    )
    sp.add_argument("b", help="the other side, the same way (nginx@1.31)")
    sp.add_argument("--scenario", action="append", help="only this scenario (id or file; repeatable)")
    sp.add_argument("--json", type=Path, help="write the diff as JSON")
    _wide_opt(sp)
    _runtime_opt(sp)
    sp.set_defaults(func=cmd_diff)


def _add_report(sub: Any) -> None:
    """`trustlab report`: the results page of a JSON file."""
    sp = sub.add_parser(
        "report", help="the results page (one offline HTML file) of a matrix, diff, check or conformance JSON"
    )
    sp.add_argument("file", type=Path, help="a JSON file written by trustlab matrix, diff, check or conformance --json")
    sp.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"the page to write (default: {PAGE} beside FILE; for a conformance JSON, its name with .html)",
    )
    sp.set_defaults(func=cmd_report)


def _add_pki(sub: Any) -> None:
    """`trustlab pki mint|show`."""
    sp = sub.add_parser("pki", help="mint or show the lab PKI")
    psub = sp.add_subparsers(dest="pki_cmd", required=True, parser_class=_Parser)
    m = psub.add_parser("mint", help="write a fresh lab PKI to a new directory")
    m.add_argument("--out", required=True, help="new directory to create")
    m.add_argument("--backend-ip", help="IP for the ip-san identity (default: the local lab IP)")
    s = psub.add_parser("show", help="describe every identity's certificate")
    s.add_argument("dir", nargs="?", help="a directory written by `pki mint` (default: mint a fresh one)")
    sp.set_defaults(func=cmd_pki)


def _add_up(sub: Any) -> None:
    """`trustlab up`: hold a lab for one scenario or your own config."""
    from harness.proxies import names as proxy_names

    sp = sub.add_parser("up", help="keep a lab running for one scenario (or your own config), to explore with curl")
    sp.add_argument("scenario", nargs="?", help="scenario id or file (or --config FILE --proxy KIND)")
    sp.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="hold your own config (or a challenge attempt) as trustlab check runs it",
    )
    sp.add_argument("--proxy", choices=proxy_names(), help="the kind of --config")
    sp.add_argument("--identity", default="legit", help="what the backend answers as (default: legit)")
    sp.add_argument("--runtime", choices=("auto", "local", "docker"), default="auto")
    sp.set_defaults(func=cmd_up)


def _add_held(sub: Any) -> None:
    """`trustlab status`, `present` and `down`: the labs `up` holds."""
    sp = sub.add_parser("status", help="list the labs that are up")
    sp.add_argument("--log", action="store_true", help="also show what each backend seat saw")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("present", help="switch the identity a running lab's backend answers as")
    sp.add_argument("identity")
    sp.add_argument("--lab", help="which lab (default: the only one up)")
    sp.set_defaults(func=cmd_present)

    sp = sub.add_parser("down", help="stop labs and remove everything they left")
    sp.add_argument("lab", nargs="?", help="one lab id (default: the only one up)")
    sp.add_argument(
        "--all",
        action="store_true",
        help="every held lab, plus leftovers of killed runs (never a lab whose owner still runs)",
    )
    sp.set_defaults(func=cmd_down)


def _check_identity_opts(sp: argparse.ArgumentParser) -> None:
    """Which installed version `trustlab check` runs, and its optional identities."""
    sp.add_argument(
        "--proxy-version",
        metavar="V",
        help="run it on this installed version of the proxy (a prefix: 1.31; default: the default one)",
    )
    sp.add_argument(
        "--identity",
        action="append",
        metavar="ID",
        default=[],
        help=f"also run an optional identity (repeatable): {', '.join(CHECK_OPTIONAL)}",
    )
    sp.add_argument(
        "--all-identities",
        action="store_true",
        help=f"also run every optional identity that applies to any config ({', '.join(CHECK_ALL)})",
    )


def _check_lab_opts(sp: argparse.ArgumentParser) -> None:
    """The lab `trustlab check` runs: kept or not, traefik's dynamic files, the runtime."""
    sp.add_argument("--keep", action="store_true", help="keep the lab directory (adapted config, logs)")
    sp.add_argument(
        "--dynamic",
        action="append",
        type=Path,
        metavar="FILE",
        default=[],
        help="traefik: a dynamic configuration file the static one's provider reads (repeatable)",
    )
    sp.add_argument(
        "--runtime",
        choices=("auto", "local", "docker"),
        default="auto",
        help="where the proxy runs (default: auto = docker when ready, else local)",
    )


def _add_check(sub: Any) -> None:
    """`trustlab check`: your own config against every identity."""
    from harness.proxies import driver, kinds

    checkable = [k for k in kinds() if driver(k).config_module]
    sp = sub.add_parser("check", help="run your own proxy config against every identity")
    not_yet = [k.value for k in kinds() if k not in checkable]
    sp.add_argument(
        "proxy",
        help="the proxy kind: "
        + ", ".join(k.value for k in checkable)
        + (f" ({', '.join(not_yet)}: not yet)" if not_yet else ""),
    )
    sp.add_argument(
        "file", type=Path, help="your config (" + ", ".join(driver(k).config_name for k in checkable) + " ...)"
    )
    sp.add_argument("--json", type=Path, help="write the result as JSON")
    sp.add_argument("--accept", help="impostors your PKI policy rules out, accepted (e.g. wildcard)")
    _check_identity_opts(sp)
    _check_lab_opts(sp)
    _wide_opt(sp)
    sp.set_defaults(func=cmd_check)


def _add_audit(sub: Any, every_kind: str) -> None:
    """`trustlab audit`: static findings on your config."""
    from harness.proxies import names as proxy_names

    sp = sub.add_parser("audit", help="static findings on your proxy config, each linked to a scenario")
    sp.add_argument("file", type=Path, help="your config file")
    sp.add_argument("--proxy", choices=proxy_names(), help=f"proxy kind ({every_kind}; default: guessed)")
    sp.add_argument("--prove", action="store_true", help="also run `trustlab check` to confirm live")
    sp.add_argument(
        "--runtime",
        choices=("auto", "local", "docker"),
        default="auto",
        help="where --prove runs the proxy (default: auto = docker when ready, else local)",
    )
    sp.set_defaults(func=cmd_audit)


def _add_images_build(isub: Any) -> None:
    """`trustlab images build`: the lab image, and the versions image."""
    b = isub.add_parser("build", help="build the lab image from this host's apt sources (no-op when current)")
    b.add_argument(
        "--force",
        action="store_true",
        help="rebuild even when the inputs are unchanged or current came from `images load`",
    )
    b.add_argument(
        "--method",
        choices=("offline", "dockerfile"),
        default="offline",
        help="offline: mmdebstrap + docker import (default); dockerfile: labs/docker/Dockerfile "
        "(pulls its base only when missing)",
    )
    b.add_argument(
        "--versions",
        action="store_true",
        help="also build the versions image (trustlab/lab-versions:current): every installed "
        "version (trustlab proxies list), FROM the lab image, which has each kind's default only",
    )


def _add_images(sub: Any) -> None:
    """`trustlab images build|save|load|status`."""
    sp = sub.add_parser("images", help="build (offline), save or load the docker runtime's image")
    isub = sp.add_subparsers(dest="images_cmd", required=True, parser_class=_Parser)
    _add_images_build(isub)
    sv = isub.add_parser(
        "save", help="write the lab (and versions, classroom) images to one tarball for offline classrooms"
    )
    sv.add_argument("file", help="FILE.tar, or FILE.tar.gz for a gzip-compressed one")
    sv.add_argument("--gzip", action="store_true", help="compress whatever the name (load reads both)")
    ld = isub.add_parser("load", help="load a tarball written by `trustlab images save` (.tar or .tar.gz)")
    ld.add_argument("file")
    isub.add_parser("status", help="is the image there, and which versions it carries")
    sp.set_defaults(func=cmd_images)


def _classroom_serve_opts(sp: argparse.ArgumentParser) -> None:
    """The options of `trustlab classroom serve`: the hub's address, certificate and grader."""
    sp.add_argument("--bind", default=None, help="serve: the address the hub listens on (default 0.0.0.0)")
    sp.add_argument("--cert", default=None, help="serve: the hub's TLS certificate (PEM; default: one it mints)")
    sp.add_argument("--key", default=None, help="serve: the key of --cert (PEM)")
    sp.add_argument("--stop", action="store_true", help="serve: stop the hub and remove everything it started")
    sp.add_argument(
        "--grade-runtime",
        choices=("docker", "local", "auto"),
        default="docker",
        help="serve: where the grader runs attempts (default docker)",
    )


def _add_classroom(sub: Any) -> None:
    """`trustlab classroom`: JupyterLab or the classroom server."""
    sp = sub.add_parser("classroom", help="JupyterLab with the notebooks in a container (Docker-only laptops)")
    sp.add_argument(
        "classroom_cmd",
        nargs="?",
        choices=("start", "build", "stop", "serve", "attendees"),
        default="start",
        help="start (default): build the image when needed, start it, print the URL; "
        "serve: the classroom server (JupyterHub, one JupyterLab per attendee); attendees add N",
    )
    sp.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    sp.add_argument(
        "--port",
        type=int,
        default=None,
        help="start: host port on 127.0.0.1 (default 8888); serve: the hub's TLS port (default 8443)",
    )
    _classroom_serve_opts(sp)
    sp.add_argument("--json", action="store_true", help="serve, attendees: print JSON")
    sp.add_argument("--detach", action="store_true", help="start it and return (stop: trustlab classroom stop)")
    sp.add_argument("--force", action="store_true", help="build: rebuild even when nothing changed")
    sp.set_defaults(func=cmd_classroom)


def _add_elsewhere(sub: Any) -> None:
    """The sub-commands written beside their modules: proxies, conformance and the course."""
    # -- `trustlab proxies install|list`: where proxy binaries come from (harness/proxies/install.py)
    from harness.proxies.install import add_commands as add_proxies

    add_proxies(sub, _Parser)

    # -- `trustlab conformance`: certificate-validation cases through real proxies (harness/conformance/__init__.py)
    from harness.conformance import add_command as add_conformance

    add_conformance(sub, _Parser)

    # -- the course: `trustlab challenge ...` and `trustlab workshop ...` (harness/course/cli.py)
    from harness.course.cli import add_commands

    add_commands(sub, _Parser)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="trustlab", description="Does your reverse proxy check who answered at its HTTPS backend?")
    p.add_argument("--version", action="version", version=f"trustlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from harness.proxies import names as proxy_names

    every_kind = ", ".join(proxy_names())
    _add_run(sub)
    _add_matrix(sub, every_kind)
    _add_diff(sub, every_kind)
    _add_report(sub)
    _add_pki(sub)
    _add_up(sub)
    _add_held(sub)
    _add_check(sub)
    _add_audit(sub, every_kind)
    _add_images(sub)
    _add_classroom(sub)

    sp = sub.add_parser("doctor", help="what is installed, what runs, what to do")
    sp.set_defaults(func=cmd_doctor)

    _add_elsewhere(sub)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGINT and SIGTERM unwind as KeyboardInterrupt: every lab's `finally` removes what it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except LabError as exc:
        print(f"trustlab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("trustlab: interrupted; the lab was stopped and removed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
