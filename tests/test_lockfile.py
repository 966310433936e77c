"""The locked dependency set: every dependency of every extra is pinned with hashes, and results name it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from harness import lockfile

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]).lower()


def test_every_declared_dependency_is_locked_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for reqs in project["optional-dependencies"].values():
        declared |= {_name(r) for r in reqs}
    text = (ROOT / lockfile.LOCK_NAME).read_text()
    pins = lockfile.pins(text)
    assert declared - set(pins) == set(), "run: make lock"
    # Every pin carries at least one hash (pip --require-hashes refuses the lock otherwise).
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 6)[-1])
    unhashed = [b.split("==")[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
    assert unhashed == []


def test_the_lock_names_no_index_or_host() -> None:
    text = (ROOT / lockfile.LOCK_NAME).read_text()
    assert "--index-url" not in text and "--find-links" not in text and "://" not in text


def test_digest_and_drift() -> None:
    digest = lockfile.digest()
    assert digest is not None and re.fullmatch(r"sha256:[0-9a-f]{16}", digest)
    assert lockfile.pins("a-b==1.0 \\\n    --hash=sha256:00\nC_d==2\n") == {"a-b": "1.0", "c-d": "2"}
    # This test environment is the one make venv installed from the lock.
    assert lockfile.drift() == []


def test_constraints_carry_the_pins_without_hashes(tmp_path: Path) -> None:
    flag, path = lockfile.write_constraints(tmp_path)
    assert flag == "-c"
    text = Path(path).read_text()
    assert "--hash" not in text and "cryptography==" in text
