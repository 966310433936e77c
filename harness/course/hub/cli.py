"""``trustlab classroom serve|attendees``: the command lines of :mod:`harness.course.hub`."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from harness.course import hub
from harness.errors import LabError


def cmd_hub(args: argparse.Namespace) -> int:
    if args.classroom_cmd == "attendees" and args.rest == ["instructor"]:
        code = hub.add_codes(hub.hub_dir(), [hub.INSTRUCTOR])[hub.INSTRUCTOR]
        print(
            json.dumps({hub.INSTRUCTOR: code})
            if args.json
            else f"new code for {hub.INSTRUCTOR}: {code} (the old one no longer signs in)"
        )
        return 0
    if args.classroom_cmd == "attendees":
        if len(args.rest) != 2 or args.rest[0] != "add" or not args.rest[1].isdigit():
            raise LabError("classroom attendees: write `trustlab classroom attendees add N` (N attendees, 1-500)")
        codes = hub.add_attendees(int(args.rest[1]))
        url = None
        with contextlib.suppress(LabError):
            url = hub.load_settings(hub.hub_dir()).url
        print(json.dumps({"url": url, "codes": codes}, indent=2) if args.json else hub.sheet(codes, url=url))
        return 0
    if args.rest:
        raise LabError(f"classroom serve: unexpected {' '.join(args.rest)!r}")
    if args.stop:
        gone = hub.stop()
        if args.json:
            print(json.dumps({"stopped": gone}, indent=2))
            return 0
        print(f"stopped and removed: {', '.join(gone)}" if gone else "no classroom server is running")
        return 0
    served = hub.serve(
        port=hub.DEFAULT_PORT if args.port is None else args.port,
        bind=args.bind or hub.DEFAULT_BIND,
        cert=Path(args.cert) if args.cert else None,
        key=Path(args.key) if args.key else None,
        grade_runtime=args.grade_runtime,
        progress=(lambda _: None) if args.json else (lambda line: print(f"  {line}")),
    )
    s = served.settings
    if args.json:
        data = {
            "url": s.url,
            "port": s.port,
            "bind": s.bind,
            "fingerprint_sha256": served.fingerprint,
            "instructor_code": served.instructor_code,
            "room": f"{s.url}/services/{hub.SERVICE}/",
            "state": str(served.directory),
        }
        print(json.dumps(data, indent=2))
        return 0
    where = "every interface" if s.bind in ("0.0.0.0", "::") else s.bind
    print(f"classroom server up: https://<this machine>:{s.port}/ (listening on {where})")
    print(f"  TLS certificate SHA-256 fingerprint: {served.fingerprint}")
    if served.instructor_code:
        print(f"  instructor: sign in as {hub.INSTRUCTOR} with code {served.instructor_code} (shown once)")
    print(f"  the room: https://<this machine>:{s.port}/services/{hub.SERVICE}/ (instructor only)")
    print("  attendees' sign-in codes: trustlab classroom attendees add N")
    print(f"  state: {served.directory}; log: {served.directory / 'hub.log'}")
    print("  stop it (and every server it started): trustlab classroom serve --stop")
    return 0
