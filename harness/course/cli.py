"""``trustlab challenge ...`` and ``trustlab workshop ...``: the course on top of ``check``.

Exit codes as everywhere: 0 ok (SOLVED, READY), 1 not yet / not ready, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.course import scoring
from harness.errors import LabError
from harness.vocab import ProxyKind

EXIT_OK, EXIT_FAILED = 0, 1


def _challenge_dir(ch_id: str, given: str | None, config: str | None = None) -> Path:
    """Where the attempt lives: *given*, else ``./ID/``, else the current folder when it is that
    challenge's (named ID, or its README names it): ``check`` works from inside the folder."""
    if given:
        return Path(given)
    cwd = Path.cwd()
    if config and not (cwd / ch_id / config).exists() and (cwd / config).exists():
        readme = cwd / "README.md"
        mine = cwd.name == ch_id or (readme.is_file() and f"`{ch_id}`" in readme.read_text(errors="replace"))
        if mine:
            return cwd
    return cwd / ch_id


def cmd_list(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    all_ = C.load_all()
    with C.progress() as p:
        solved = set(p.solved)
    if args.json:
        rows = [
            {
                "id": c.id,
                "proxy": c.proxy.value,
                "title": c.title,
                "difficulty": c.difficulty,
                "level": c.level,
                "track": c.track,
                "minutes": c.minutes,
                "file": c.config,
                "solved": c.id in solved,
            }
            for c in all_
        ]
        print(json.dumps({"challenges": rows}, indent=2))
        return EXIT_OK
    # The path: one track per proxy family, each from warm-up to expert, with its progress.
    kinds = [k.value for k in ProxyKind]
    tracks = sorted(dict.fromkeys(c.track for c in all_), key=lambda t: kinds.index(t) if t in kinds else len(kinds))
    next_up = None
    for track in tracks:
        mine = sorted((c for c in all_ if c.track == track), key=lambda c: (C.LEVELS.index(c.level), c.minutes, c.id))
        done = sum(c.id in solved for c in mine)
        print(f"{track} track: {done}/{len(mine)} solved")
        for c in mine:
            mark = "[x]" if c.id in solved else "[ ]"
            print(f"  {mark} {c.level:<12} {c.id:<26} {c.minutes:>2} min  {c.title.strip()}")
            if next_up is None and c.id not in solved:
                next_up = c
        print()
    print(f"{len(solved & {c.id for c in all_})}/{len(all_)} solved.", end=" ")
    print(f"Next: trustlab challenge start {next_up.id}" if next_up else "Every challenge solved.")
    return EXIT_OK


def cmd_start(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    ch = C.get(args.id)
    out = _challenge_dir(ch.id, args.dir, ch.config)
    if out.exists() and not out.is_dir():
        raise LabError(f"--dir: {out} exists and is not a directory")
    target = out / ch.config
    start = ch.start_file.read_text()
    where = "" if args.dir is None else f" --dir {out}"
    if target.exists() and target.read_text() != start:
        # An attempt in progress: never overwritten; say how to go on, or start over.
        print(f"{ch.id}: {ch.title} ({ch.proxy.value}, {ch.difficulty}, about {ch.minutes} min)\n")
        print(f"you already have an attempt at {target} (it differs from the starting config): kept as it is.")
        print(f"continue: edit {target}, then run: trustlab challenge check {ch.id}{where}")
        print(f"start over: trustlab challenge reset {ch.id}{where} (your attempt is kept as a .bak file)")
        return EXIT_OK
    out.mkdir(parents=True, exist_ok=True)
    C.write_file(target, start)
    for name in ch.files:  # what the config reads beside it (remap.config): an attempt's kept
        if not (out / name).exists():
            C.write_file(out / name, (ch.path / name).read_text())
    C.write_file(out / "README.md", ch.readme())
    print(f"{ch.id}: {ch.title} ({ch.proxy.value}, {ch.difficulty}, about {ch.minutes} min)\n")
    print(ch.story.strip() + "\n")
    print("Goal: " + ch.goal.strip() + "\n")
    print(f"wrote {target} and {out / 'README.md'}")
    print(f"edit {target}, then run: trustlab challenge check {ch.id}{where}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    ch = C.get(args.id)
    file = Path(args.file) if args.file else _challenge_dir(ch.id, args.dir, ch.config) / ch.config
    if not file.exists():
        raise LabError(f"{file}: no such file; run `trustlab challenge start {ch.id}` first, or name your config")
    if os.environ.get(scoring.URL_ENV):
        return _check_remote(ch, file, as_json=args.json)
    g = C.grade(ch, file, runtime=args.runtime)
    secret = C.workshop_secret()
    if g.solved:
        if secret:
            g.flag = C.flag(ch.id, secret)
        C.record_solve(g)
    with C.progress() as p:
        shown = p.hints.get(ch.id, 0)
    hints_left = C.hints_enabled() and shown < len(ch.hints)
    if args.json:
        print(json.dumps(g.to_json_dict(), indent=2))
    else:
        print(C.render_grade(g, hints_left=hints_left))
    return EXIT_OK if g.solved else EXIT_FAILED


def _check_remote(ch: Any, file: Path, *, as_json: bool) -> int:
    """Scored mode: the instructor's grader grades the attempt (and alone issues its flag)."""
    from harness.course import challenges as C

    token = os.environ.get(scoring.TOKEN_ENV, "")
    if not token:
        raise LabError(
            f"scored mode ({scoring.URL_ENV} is set): set {scoring.TOKEN_ENV} to the token your instructor gave you"
        )
    beside = {n: (file.parent / n).read_text(errors="replace") for n in ch.files if (file.parent / n).is_file()}
    data = scoring.remote_grade(
        os.environ[scoring.URL_ENV], token, ch.id, file.read_text(errors="replace"), files=beside
    )
    if data.get("solved"):
        C.record_solve(C.Grade(ch, str(file), True, [], []))
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(data.get("text", ""))
        if data.get("flag"):
            by = f"the grader at {os.environ[scoring.URL_ENV]}"
            print(f"flag: {data['flag']} (issued by {by} for {data.get('attendee')})")
    return EXIT_OK if data.get("solved") else EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    secret = C.workshop_secret()
    if not secret:
        raise LabError(f"serve: set {C.SECRET_ENV} on this (the grading) machine; attendees never get it")
    service = scoring.GradingService(secret=secret, tokens=scoring.read_tokens(Path(args.tokens)), runtime=args.runtime)
    server = scoring.serve(service, host=args.host, port=args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"grading on http://{host}:{port}/grade for {len(service.tokens)} attendee(s); Ctrl-C stops it")
    print(f"attendees: export {scoring.URL_ENV}=http://{host}:{port} {scoring.TOKEN_ENV}=<their token>")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_tokens(args: argparse.Namespace) -> int:
    target = Path(args.out)
    if target.exists():
        raise LabError(f"--out: {target} exists; tokens are never overwritten (remove it, or choose another file)")
    tokens = scoring.new_tokens(args.names)
    scoring.write_tokens(target, tokens)
    print(f"wrote {len(tokens)} token(s) to {target} (0600); give each attendee their own line:")
    for token, name in tokens.items():
        print(f"  {name}: {scoring.TOKEN_ENV}={token}")
    return EXIT_OK


def cmd_hint(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    ch = C.get(args.id)
    if os.environ.get(scoring.URL_ENV) and os.environ.get(scoring.TOKEN_ENV):
        # Scored mode on a classroom server: the grader hands out hints and records them.
        data = scoring.remote_hint(os.environ[scoring.URL_ENV], os.environ[scoring.TOKEN_ENV], ch.id)
        print(f"hint {data['tier']}/{data['of']} for {ch.id}: {data['hint']}")
        print("(that is the last hint)" if data["tier"] >= data["of"] else f"(more: trustlab challenge hint {ch.id})")
        return EXIT_OK
    shown = C.next_hint(ch, all_tiers=args.all)
    for tier, text in shown:
        print(f"hint {tier}/{len(ch.hints)} for {ch.id}: {text}")
    if shown[-1][0] == len(ch.hints):
        print(f"(that is the last hint; the reference solution: trustlab challenge solution {ch.id})")
    else:
        print(f"(more: trustlab challenge hint {ch.id})")
    return EXIT_OK


def cmd_solution(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    ch = C.get(args.id)
    if os.environ.get(scoring.URL_ENV):
        raise LabError(f"scored mode ({scoring.URL_ENV} is set): the solutions stay with the instructor")
    C.record_solution(ch)
    out = Path(args.dir) if args.dir else Path.cwd() / ch.id / "solution"
    if out.exists() and not out.is_dir():
        raise LabError(f"--dir: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    target = out / ch.config
    C.write_file(target, ch.solution_file.read_text())
    for name in ch.files:
        C.write_file(out / name, (ch.path / "solution" / name).read_text())
    print(f"wrote the reference solution to {target}\n")
    print(ch.explanation.strip() + "\n")
    if ch.grader.policy:
        print(f"PKI policy this challenge grades: {ch.grader.policy}\n")
    print("Lesson: " + ch.lesson.strip())
    for s in ch.sources:
        print(f"  {s}")
    print(f"\ncheck it on the real server: trustlab challenge check {ch.id} {target}")
    return EXIT_OK


def cmd_progress(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    with C.progress() as p:
        data = p.to_json_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for c in C.load_all():
        mark = "[x]" if c.id in data["solved"] else "[ ]"
        extra = []
        if data["hints"].get(c.id):
            extra.append(f"{data['hints'][c.id]}/{len(c.hints)} hints")
        if c.id in data["solutions"]:
            extra.append("solution viewed")
        print(f"{mark} {c.id:<26} {', '.join(extra)}")
    print(f"\n{len(data['solved'])}/{data['total']} solved (state: {data['state_file']})")
    if data["predictions"]:
        right = sum(p["right"] for p in data["predictions"].values())
        cells = sum(p["total"] for p in data["predictions"].values())
        print(f"notebook predictions: {len(data['predictions'])} scored, {right}/{cells} cells right")
        for sid, p in data["predictions"].items():
            print(f"    {sid:<40} {p['right']}/{p['total']}")
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    if args.all == bool(args.id):
        raise LabError("reset: give one challenge ID or --all")
    if args.all and args.dir:
        raise LabError("reset: --dir goes with one challenge ID (--all resets progress only)")
    C.reset(None if args.all else args.id)
    print("progress reset: " + ("every challenge" if args.all else args.id))
    if args.all:
        return EXIT_OK
    ch = C.get(args.id)
    folder = _challenge_dir(ch.id, args.dir, ch.config)
    target = folder / ch.config
    if not target.exists():
        print(f"no attempt at {target}; start one: trustlab challenge start {ch.id}")
        return EXIT_OK
    backup = C.restore_start(ch, folder)
    if backup is None:
        print(f"{target} is already the starting config")
    else:
        print(f"{target} restored to the starting config; your attempt is kept as {backup}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from harness.course import challenges as C

    secret = C.workshop_secret()
    if not secret:
        raise LabError(f"export --ctfd: set {C.SECRET_ENV} first (the flags are derived from it)")
    target = Path(args.ctfd)
    if target.is_dir() or not target.parent.is_dir():
        raise LabError(f"--ctfd: {target} must be a file name in an existing directory")
    n = C.export_ctfd(target, secret=secret, with_hints=C.hints_enabled())
    print(f"wrote {n} challenges with flags to {target} (CTFd: Admin > Config > Backup > Import CSV, type: Challenges)")
    return EXIT_OK


def cmd_preflight(args: argparse.Namespace) -> int:
    from harness.course import workshop

    report = workshop.preflight(runtime=args.runtime)
    for line in report.lines:
        print(line)
    return EXIT_OK if report.ready else EXIT_FAILED


def cmd_bundle(args: argparse.Namespace) -> int:
    from harness.course import workshop

    extras = tuple(e.strip() for e in args.extras.split(",") if e.strip())
    result = workshop.bundle(
        Path(args.dir),
        images=not args.no_images,
        notebooks=not args.no_notebooks,
        extras=extras,
        scored=args.scored,
        say=lambda s: print(s, file=sys.stderr),
    )
    print(f"wrote the workshop bundle to {result.path} ({result.size_mb:.1f} MB): {', '.join(result.parts)}")
    print(f"on each laptop: see {result.path / 'README.md'}")
    return EXIT_OK


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add the ``challenge`` and ``workshop`` groups to ``trustlab``'s subparsers."""
    sp = sub.add_parser("challenge", help="break-and-fix challenges graded on the real servers")
    csub = sp.add_subparsers(dest="challenge_cmd", required=True, parser_class=parser_class)
    c = csub.add_parser("list", help="every challenge, with a solved mark")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_list)
    c = csub.add_parser("start", help="write a challenge's starting config and README")
    c.add_argument("id")
    c.add_argument("--dir", help="where (default: ./ID/)")
    c.set_defaults(func=cmd_start)
    c = csub.add_parser("check", help="grade your config on the real proxy: exit 0 SOLVED, 1 not yet")
    c.add_argument("id")
    c.add_argument("file", nargs="?", help="your config (default: DIR/<the challenge's file>)")
    c.add_argument("--dir", help="the challenge directory (default: ./ID/, or this folder when it is ID's)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument(
        "--runtime", choices=("auto", "local", "docker"), default="auto", help="where the proxy runs (default: auto)"
    )
    c.set_defaults(func=cmd_check)
    c = csub.add_parser("hint", help="the next hint tier (recorded)")
    c.add_argument("id")
    c.add_argument("--all", action="store_true", help="every tier at once")
    c.set_defaults(func=cmd_hint)
    c = csub.add_parser("solution", help="write the reference solution and explain it")
    c.add_argument("id")
    c.add_argument("--dir", help="where (default: ./ID/solution/)")
    c.set_defaults(func=cmd_solution)
    c = csub.add_parser("progress", help="what you solved, hints and solutions used, notebook predictions scored")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_progress)
    c = csub.add_parser("reset", help="restore the starting file (attempt kept as .bak), forget progress")
    c.add_argument("id", nargs="?")
    c.add_argument("--dir", help="the challenge directory (default: ./ID/, or this folder when it is ID's)")
    c.add_argument("--all", action="store_true", help="every challenge (also replaces a corrupt state file)")
    c.set_defaults(func=cmd_reset)
    c = csub.add_parser("serve", help="instructors: the scored-mode grader (attendees check against it)")
    c.add_argument("--tokens", required=True, help="the attendee tokens file (trustlab challenge tokens)")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    c.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    c.add_argument("--runtime", choices=("auto", "local", "docker"), default="auto")
    c.set_defaults(func=cmd_serve)
    c = csub.add_parser("tokens", help="instructors: one scored-mode token per attendee")
    c.add_argument("names", nargs="+", help="attendee names")
    c.add_argument("--out", required=True, help="the tokens file to write (for serve --tokens)")
    c.set_defaults(func=cmd_tokens)
    c = csub.add_parser("export", help="instructors: the challenge list with flags, for a scoreboard")
    c.add_argument("--ctfd", required=True, help="write a CTFd challenges CSV here")
    c.set_defaults(func=cmd_export)

    sp = sub.add_parser("workshop", help="instructors: preflight an attendee's laptop, build the offline kit")
    wsub = sp.add_subparsers(dest="workshop_cmd", required=True, parser_class=parser_class)
    w = wsub.add_parser("preflight", help="READY, or exactly what to fix (runtime, image, a smoke run)")
    w.add_argument("--runtime", choices=("auto", "local", "docker"), default="auto")
    w.set_defaults(func=cmd_preflight)
    w = wsub.add_parser("bundle", help="write the offline kit: wheelhouse, image tar, notebooks, guide")
    w.add_argument("dir", help="a new (or empty) directory")
    w.add_argument("--no-images", action="store_true", help="leave out the docker image tar")
    w.add_argument("--no-notebooks", action="store_true", help="leave out the rendered notebooks")
    w.add_argument("--scored", action="store_true", help="a scored workshop's kit: no solutions, no answers guide")
    w.add_argument(
        "--extras",
        default="docker,notebooks",
        help="trustlab extras the wheelhouse carries (default: docker,notebooks; '' for the core only)",
    )
    w.set_defaults(func=cmd_bundle)
