"""The configs ``trustlab audit`` is pinned on, and their findings as recorded in
``tests/data/audit_findings.json`` (compared by tests/test_audit_findings.py).

The corpus: every config under ``tests/configs/`` (the false-positive fixtures of ``fp/`` too)
and every built-in scenario's rendered config. A change to a rule that changes a finding shows
up there; when the change is intended, regenerate the record and review its diff::

    .venv/bin/python tests/audit_corpus.py --write
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "tests" / "configs"
RECORD = REPO / "tests" / "data" / "audit_findings.json"
#: Where a scenario's rendered config is written (its findings name files under it as ``<run>``).
RUN = "<run>"
#: What a finding keeps in the record: every field of its JSON (``trustlab audit``'s contract).
FIELDS = ("rule", "file", "line", "severity", "message", "fix", "help", "scenario")


def corpus_configs() -> Iterator[Path]:
    """Every config under tests/configs/ that audit takes (a kind's helper files are skipped)."""
    from harness.configs import guess_proxy
    from harness.errors import ConfigError

    for path in sorted(p for p in CONFIGS.rglob("*") if p.is_file()):
        try:
            guess_proxy(path.read_text(errors="replace"))
        except ConfigError:
            continue
        yield path


def render_scenario(scenario: Any, run_dir: Path, *, bundle: str = "/lab/system-bundle.pem") -> Path:
    """*scenario*'s config as the lab renders it, written into *run_dir* with its extra files."""
    from harness.proxies import driver
    from harness.proxies.base import RenderContext

    ctx = RenderContext(
        run_dir=str(run_dir),
        listen="127.0.0.1:8080",
        ca="/lab/internal-pki.pem",
        bundle=bundle,
        backend_ip="10.203.0.10",
        lean=False,
    )
    d = driver(scenario.proxy)
    for name, text in d.extra_files(scenario, ctx).items():
        (run_dir / name).write_text(text)
    path = run_dir / d.config_name
    path.write_text(d.render(scenario, ctx))
    return path


def findings_of(path: Path, *, proxy: str | None = None, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """The audit findings on *path*, with the repository's and *run_dir*'s paths made stable."""
    from harness.audit import audit
    from harness.errors import ConfigError

    try:
        report = audit(path, proxy=proxy)
    except ConfigError as e:
        return [{"error": _stable(str(e), run_dir)}]
    return [{k: _stable(getattr(f, k), run_dir) for k in FIELDS} for f in report.findings]


def _stable(value: Any, run_dir: Path | None) -> Any:
    if not isinstance(value, str):
        return value
    if run_dir is not None:
        value = value.replace(str(run_dir), RUN)
    return value.replace(str(REPO) + "/", "")


def record() -> dict[str, list[dict[str, Any]]]:
    """Config name -> its findings, for the whole corpus."""
    from harness.proxies import driver
    from harness.scenarios import builtin

    out: dict[str, list[dict[str, Any]]] = {}
    for path in corpus_configs():
        out[str(path.relative_to(REPO))] = findings_of(path)
    for sid, sc in sorted(builtin().items()):
        if not driver(sc.proxy).config_module:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = render_scenario(sc, Path(tmp))
            out[f"scenario:{sid}"] = findings_of(path, proxy=sc.proxy.value, run_dir=Path(tmp))
    return out


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print("usage: tests/audit_corpus.py --write  (records the audit findings into tests/data/)", file=sys.stderr)
        return 2
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
