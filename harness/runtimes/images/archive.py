"""Save and load: the lab image (and the versions and classroom images, when built) in one
tarball, plain or gzip, for laptops and classrooms without a build."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import LabError, PrerequisiteError
from harness.runtimes.images.daemon import client, get
from harness.runtimes.images.names import (
    ALIAS,
    CLASSROOM_REPO,
    LAB_IMAGE,
    LAB_REPO,
    LOADED,
    VERSIONS_SUFFIX,
    Progress,
    loaded_tag,
    stderr_progress,
    versions_image,
)


def _compressed(path: Path) -> bool:
    return path.name.endswith((".gz", ".tgz"))


def save(
    path: Path | str, *, progress: Progress | None = None, refs: list[str] | None = None, gzip: bool | None = None
) -> Path:
    """Write the lab image (and the versions and classroom images, when built) into one tarball.

    Args:
        refs: what to write (default: every ``trustlab/lab``, ``trustlab/lab-versions`` and
            ``trustlab/classroom`` tag of the current images; layers they share are written once).
        gzip: compress (default: when the name ends in ``.gz`` or ``.tgz``); about a third of
            the size, and ``docker load`` / ``images load`` read it as it is.
    """
    say = progress or stderr_progress()
    c = client(timeout=600)
    refs = _default_refs(c) if refs is None else refs
    path = Path(path)
    compress = _compressed(path) if gzip is None else gzip
    # The SDK's Image.save() names one tag; the API endpoint takes several.
    res = c.api._get(c.api._url("/images/get"), params={"names": refs}, stream=True)
    c.api._raise_for_status(res)
    size = _write(res.iter_content(chunk_size=1 << 20), path, compress=compress)
    packed = f", gzip: {path.stat().st_size / 1e6:.0f} MB" if compress else ""
    say(f"saved {', '.join(refs)} to {path} ({size / 1e6:.0f} MB{packed})")
    return path


def _default_refs(c: Any) -> list[str]:
    """Every tag of the current lab image, and of the versions and classroom images when built."""
    img = get(c, LAB_IMAGE)
    if img is None:
        raise PrerequisiteError(f"images save: {LAB_IMAGE} is missing; run: trustlab images build")
    refs = [t for t in img.tags if t.startswith(f"{LAB_REPO}:") and t != LOADED]
    extra = get(c, versions_image(LAB_IMAGE))
    if extra is not None:  # its layers below the versions layer are the lab image's: stored once
        mine = f"{LAB_REPO}{VERSIONS_SUFFIX}:"
        refs += [t for t in extra.tags if t.startswith(mine) and not t.endswith(":loaded")]
    room = get(c, f"{CLASSROOM_REPO}:{ALIAS}")
    if room is not None:
        refs += [t for t in room.tags if t.startswith(f"{CLASSROOM_REPO}:") and not t.endswith(":loaded")]
    return refs


def _write(chunks: Iterable[bytes], path: Path, *, compress: bool) -> int:
    """Stream *chunks* into *path* (through a ``.partial`` file, renamed when complete); return the bytes read."""
    import gzip as gz

    tmp = path.with_name(path.name + ".partial")
    size = 0
    try:
        with (
            open(tmp, "wb") as raw,
            (
                gz.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
                if compress
                else contextlib.nullcontext(raw)
            ) as fh,
        ):
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def load(path: Path | str, *, progress: Progress | None = None) -> list[str]:
    """Load a tarball written by :func:`save` (plain or gzip); return the tags it brought.

    When it brings ``trustlab/lab:current``, that image is also tagged ``trustlab/lab:loaded``:
    `images build` then refuses to move ``current`` away from it without ``--force``."""
    say = progress or stderr_progress()
    path = Path(path)
    if not path.is_file():
        raise LabError(f"images load: {path}: no such file; pass a tarball made by `trustlab images save`")
    c = client(timeout=600)
    brought: list[str] = []
    with open(path, "rb") as fh:  # the daemon reads gzip (and xz, bzip2) tarballs itself
        for entry in c.api.load_image(fh):
            if "error" in entry:
                raise LabError(f"images load: {path}: {entry['error']}")
            line = str(entry.get("stream") or "").strip()
            if line:
                say(line)
                if line.startswith("Loaded image: "):
                    brought.append(line[len("Loaded image: ") :])
    if not brought:
        raise LabError(f"images load: {path} held no tagged image; pass a tarball made by `trustlab images save`")
    for ref in brought:
        if ref.endswith(f":{ALIAS}"):
            c.images.get(ref).tag(*loaded_tag(ref).rsplit(":", 1))
    return brought
