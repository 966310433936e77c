"""``python -m harness.runtimes.images build|save|load|status|dockerfile-base`` (``trustlab images`` wires
build, save, load and status to the same functions in harness/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import LabError
from harness.runtimes.images.archive import load, save
from harness.runtimes.images.builder import build
from harness.runtimes.images.names import lab_image, versions_image
from harness.runtimes.images.rootfs import import_dockerfile_base
from harness.runtimes.images.status import image_proxies, image_versions, images_present


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.runtimes.images", description="build, save or load the lab image"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the lab image offline (no-op when up to date)")
    b.add_argument("--force", action="store_true")
    b.add_argument("--method", choices=("offline", "dockerfile"), default="offline")
    b.add_argument("--versions", action="store_true", help="also the versions image (every installed version)")
    s = sub.add_parser("save", help="write the lab image to a tarball (.tar.gz or --gzip: compressed)")
    s.add_argument("path", type=Path)
    s.add_argument("--gzip", action="store_true")
    ld = sub.add_parser("load", help="load a tarball written by save")
    ld.add_argument("path", type=Path)
    sub.add_parser("status", help="is the image there, and which versions it carries")
    sub.add_parser("dockerfile-base", help="CI: the Dockerfile's base image from this host's packages, offline")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "build":
        r = build(force=args.force, method=args.method, image=lab_image(), versions=args.versions)
        summary = {"tags": r.tags, "versions": r.versions, "skipped": r.skipped, "duration_s": round(r.duration_s, 2)}
        print(json.dumps({**summary, "steps": r.steps}))
    elif args.cmd == "save":
        save(args.path, gzip=args.gzip or None)
    elif args.cmd == "load":
        print("\n".join(load(args.path)))
    elif args.cmd == "dockerfile-base":
        name, created = import_dockerfile_base()
        print(json.dumps({"base": name, "created": created}))
    else:
        present = images_present()
        extra = [f"{r['kind']} {r['version']}" for r in image_proxies(ref=versions_image())]
        versions = image_versions() if present else {}
        print(json.dumps({"present": present, "versions": versions, "versions_image": extra}))
        return 0 if present else 1
    return 0
