"""A user's config is someone else's (a pull request checked in CI, a challenge attempt): the
adapters read no host file on its say-so, and their parsers stay bounded (issue 26, items 3-4).

No proxy runs here except in the last test (``check`` refuses before any lab starts).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.configs import base
from harness.configs import caddy as cconf
from harness.configs import envoy as econf
from harness.configs import traefik as tconf
from harness.errors import ConfigError

STATIC = "entryPoints:\n  web:\n    address: ':80'\nproviders:\n  file:\n    {key}: {value}\n"
SERVICE = (
    "http:\n  routers:\n    r:\n      rule: PathPrefix(`/`)\n      service: s\n  services:\n    s:\n"
    "      loadBalancer:\n        servers:\n          - url: https://backend.internal:8443\n"
)


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, str]:
    """A root-only directory outside the config's, holding a dynamic file with a secret in it."""
    token = f"Bearer trustlab-{secrets.token_hex(8)}"
    d = tmp_path / "outside"
    d.mkdir(mode=0o700)
    secret = d / "secret.yml"
    secret.write_text(SERVICE + f"  middlewares:\n    m:\n      headers:\n        customRequestHeaders:\n"
                      f"          Authorization: '{token}'\n")
    secret.chmod(0o600)
    return d, token


def _conf(tmp_path: Path, key: str, value: str) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    path = conf / "traefik.yml"
    path.write_text(STATIC.format(key=key, value=value))
    return path


def _refused(path: Path, token: str, *says: str) -> str:
    with pytest.raises(ConfigError) as info:
        tconf.parse(path)
    msg = str(info.value)
    assert token not in msg and "Bearer" not in msg  # named, never shown
    assert len(msg.splitlines()) == 1
    for s in says:
        assert s in msg, msg
    return msg


def test_traefik_reads_no_absolute_path(tmp_path: Path, outside: tuple[Path, str]) -> None:
    d, token = outside
    path = _conf(tmp_path, "filename", str(d / "secret.yml"))
    _refused(path, token, "providers.file.filename", "not found beside the config")
    path = _conf(tmp_path, "directory", str(d))
    _refused(path, token, "providers.file.directory", "not found beside the config")


def test_traefik_reads_nothing_above_its_directory(tmp_path: Path, outside: tuple[Path, str]) -> None:
    _, token = outside
    _refused(_conf(tmp_path, "filename", "../outside/secret.yml"), token, "leaves the config's directory")
    _refused(_conf(tmp_path, "directory", "../outside"), token, "leaves the config's directory")
    _refused(_conf(tmp_path, "filename", "./a/../../outside/secret.yml"), token, "leaves the config's directory")


def test_traefik_follows_no_link_out(tmp_path: Path, outside: tuple[Path, str]) -> None:
    d, token = outside
    path = _conf(tmp_path, "filename", "dynamic.yml")
    (path.parent / "dynamic.yml").symlink_to(d / "secret.yml")
    _refused(path, token, "dynamic.yml is a symbolic link")
    path = _conf(tmp_path, "filename", "sub/secret.yml")
    (path.parent / "sub").symlink_to(d)
    _refused(path, token, "symbolic link")
    path = _conf(tmp_path, "directory", "linked.d")
    (path.parent / "linked.d").symlink_to(d)
    _refused(path, token, "symbolic link")
    path = _conf(tmp_path, "directory", "conf.d")
    (path.parent / "conf.d").mkdir()
    (path.parent / "conf.d" / "10-secret.yml").symlink_to(d / "secret.yml")
    _refused(path, token, "10-secret.yml is a symbolic link")


def test_traefik_still_reads_its_own_files(tmp_path: Path) -> None:
    """The controls: a file beside the static one (named relatively, or by the deployment path
    it was written for), and a directory beside it."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "dynamic.yml").write_text(SERVICE)
    for value in ("dynamic.yml", "./dynamic.yml", "/etc/traefik/dynamic.yml"):
        path = _conf(tmp_path, "filename", value)
        assert [s for s, _, _, _ in tconf.parse(path).https_servers()] == ["s"], value
    (conf / "conf.d").mkdir()
    (conf / "conf.d" / "a.yml").write_text(SERVICE)
    assert [s for s, *_ in tconf.parse(_conf(tmp_path, "directory", "conf.d")).https_servers()] == ["s"]


def test_yaml_errors_quote_no_content(tmp_path: Path) -> None:
    """PyYAML's message carries a snippet of the file around the error: it is not shown."""
    token = f"trustlab-{secrets.token_hex(8)}"
    path = tmp_path / "dynamic.yml"
    path.write_text(f"http:\n  services: {{\n    a: '{token}'\n  b: [{token}\n")
    with pytest.raises(ConfigError) as info:
        tconf.parse(path)
    msg = str(info.value)
    assert token not in msg and "invalid YAML at line" in msg, msg


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["envoy", "traefik"])
def test_yaml_alias_bombs_are_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bomb.yaml"
    top = "static_resources:\n  clusters: []\n" if kind == "envoy" else "http:\n  services: {}\n"
    path.write_text(top + _alias_bomb())
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases .* expand it to more than"):
        (econf.parse if kind == "envoy" else tconf.parse)(path)
    assert time.perf_counter() - t0 < 2


def test_yaml_aliases_within_bounds_still_read(tmp_path: Path) -> None:
    path = tmp_path / "reuse.yml"
    path.write_text(SERVICE.replace("    s:\n", "    s: &svc\n") + "    t: *svc\n")
    assert sorted(s for s, *_ in tconf.parse(path).https_servers()) == ["s", "t"]


MAX_DEPTH = getattr(base, "MAX_DEPTH", 100)  # getattr: the test also runs against a tree without it
DEEP = MAX_DEPTH * 20


@pytest.mark.parametrize(("name", "text", "load"), [
    ("deep.yml", "http: " + "[" * DEEP + "]" * DEEP + "\n", tconf.parse),
    ("deep.toml", "[http]\nx = " + "[" * DEEP + "]" * DEEP + "\n", tconf.parse),
    ("deep-inline.toml", "[http]\nx = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n", tconf.parse),
    ("deep.yaml", "static_resources: " + "[" * DEEP + "]" * DEEP + "\n", econf.parse),
    ("deep.json", '{"apps": ' + "[" * DEEP + "]" * DEEP + "}\n", cconf.load),
    ("shallow-but-past.json", '{"apps": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}\n", cconf.load),
])
def test_deep_nesting_is_one_line(tmp_path: Path, name: str, text: str, load: object) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested more than") as info:
        load(path)  # type: ignore[operator]
    assert len(str(info.value).splitlines()) == 1


def test_caddy_snippet_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["(s0) {", "\theader X y", "}"]
    for i in range(1, 10):
        lines += [f"(s{i}) {{", *[f"\timport s{i - 1}"] * 10, "}"]
    lines += ["example.com {", "\timport s9", "\treverse_proxy https://backend.internal:8443", "}"]
    path = tmp_path / "Caddyfile"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="snippet imports expand"):
        cconf.load(path)
    assert time.perf_counter() - t0 < 2


@pytest.mark.bad_input
def test_bounds_are_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("http:\n  services: {}\n" + _alias_bomb())
    deep = tmp_path / "deep.json"
    deep.write_text('{"apps": ' + "[" * DEEP + "]" * DEEP + "}\n")
    for proxy, cfg, says in (("traefik", bomb, "aliases"), ("caddy", deep, "nested more than")):
        assert main(["audit", "--proxy", proxy, str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err


@pytest.mark.integration
@pytest.mark.bad_input
def test_too_many_upstreams_is_one_line(
    local_runtime: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """230 upstream names from a small file used to crash the lab (``ip addr add 10.203.0.256``)."""
    locs = "".join(
        f"        location /u{i} {{ proxy_pass https://up{i}.internal:8443; proxy_ssl_verify on; }}\n"
        for i in range(230)
    )
    cfg = tmp_path / "many.conf"
    cfg.write_text(f"http {{\n    server {{\n        listen 80;\n{locs}    }}\n}}\n")
    assert main(["check", "--runtime", "local", "nginx", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "230 upstreams" in err and "at most 200" in err, err
