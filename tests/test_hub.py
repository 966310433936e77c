"""`trustlab classroom serve`: JupyterHub with three attendees, grading on the server, isolation.

One hub for the module, on 127.0.0.1 with its own state directory; three attendees sign in with
their codes, their servers are spawned from the classroom image, each sends a challenge attempt
(a wrong one, then the reference solution) through the grader service from inside its server,
and the instructor's page shows them. Isolation is checked from inside an attendee server.
Everything the hub started is removed at the end, and checked to be gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.course import classroom, hub
from harness.runtimes import images

# One xdist worker for test_hub and test_classroom: both fixtures build (or find up to date) the
# classroom image, and two builds at once on one daemon fail (the hub's fixture did, in parallel).
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("classroom")]

CHALLENGE = "nginx-ca-without-verify"
ROOT = Path(__file__).resolve().parents[1]
SOLUTION = (ROOT / "labs" / "challenges" / CHALLENGE / "solution" / "nginx.conf").read_text()
START = (ROOT / "labs" / "challenges" / CHALLENGE / "nginx.conf").read_text()


@dataclass
class Room:
    served: hub.Served
    state: Path
    token: str
    codes: dict[str, str]
    containers: dict[str, str]

    @property
    def settings(self) -> hub.Settings:
        return self.served.settings

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        return hub.api(self.settings, token or self.token, method, path, body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SESSIONS: list[Any] = []


def _session(room: Room) -> Any:
    import requests

    s = requests.Session()
    _SESSIONS.append(s)
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`, proxies would be asked
    s.verify = str(room.state / "hub" / "tls" / "ca.crt")  # the minted leaf names 127.0.0.1: real verification
    return s


def _sign_in(room: Room, name: str, code: str) -> Any:
    s = _session(room)
    base = room.settings.url
    s.get(f"{base}/hub/login", timeout=30).raise_for_status()
    r = s.post(
        f"{base}/hub/login",
        data={"username": name, "password": code, "_xsrf": s.cookies.get("_xsrf", path="/hub/")},
        allow_redirects=False,
        timeout=30,
    )
    return s, r


def _exec(
    container: str, script: str, *, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "exec", "-i", container, "sh", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def room(request: pytest.FixtureRequest, docker_ready: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = images.client()
    # TRUSTLAB_HUB_TEST_IMAGE: an image id to use as it is (a developer's loop; CI builds).
    image = os.environ.get("TRUSTLAB_HUB_TEST_IMAGE", "")
    built = None if image else classroom.build(progress=lambda _: None)
    # By id: another build may move the tag meanwhile.
    image = image or c.images.get(classroom.IMAGE).id
    state = tmp_path_factory.mktemp("hubstate")
    t0 = time.perf_counter()
    served = hub.serve(
        port=_free_port(), bind="127.0.0.1", image=image, state=state, grade_runtime="docker", progress=lambda _: None
    )
    try:
        token = hub.admin_token(state)
        codes = hub.add_attendees(3, state=state)
        r = Room(served, state, token, codes, {})
        names = list(codes)
        for name, code in codes.items():
            _, resp = _sign_in(r, name, code)
            assert resp.status_code == 302, resp.text[-500:]
        t1 = time.perf_counter()
        for name in names:
            r.api("POST", f"/hub/api/users/{name}/server")
        deadline = time.monotonic() + 180
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                model = r.api("GET", f"/hub/api/users/{name}")
                if (model.get("servers") or {}).get("", {}).get("ready"):
                    pending.discard(name)
            time.sleep(0.5)
        assert not pending, f"servers not ready in 180 s: {pending}; {hub._log_tail(served.directory, 8)}"
        for ct in c.containers.list(filters={"label": f"{hub.LABEL}={served.settings.instance}"}):
            env = dict(e.split("=", 1) for e in ct.attrs["Config"]["Env"] if "=" in e)
            r.containers[env["JUPYTERHUB_USER"]] = ct.name
        assert sorted(r.containers) == sorted(names)
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            verb = "given" if built is None else "up to date" if built.skipped else f"built in {built.duration_s:.1f} s"
            print(
                f"\n[hub] classroom image {verb}; hub up in {served.start_s:.1f} s; "
                f"3 servers ready {time.perf_counter() - t1:.1f} s after their spawn "
                f"(fixture {time.perf_counter() - t0:.1f} s)"
            )
        yield r
    finally:
        for session in _SESSIONS:
            session.close()
        # A bystander: another instance's container (same label key) must survive this --stop.
        bystander = c.containers.create(image, ["true"], labels={hub.LABEL: "someone-else"}, entrypoint=[])
        try:
            gone = hub.stop(state=state)
            left = c.containers.list(all=True, filters={"label": f"{hub.LABEL}={served.settings.instance}"})
            nets = c.networks.list(filters={"label": f"{hub.LABEL}={served.settings.instance}"})
            assert not left and not nets, (gone, left, nets)
            assert gone[0].startswith("hub (pid") and any(g.startswith("network ") for g in gone), gone
            bystander.reload()  # still there (NotFound otherwise)
        finally:
            bystander.remove(force=True)


def test_codes_sign_in_and_wrong_codes_do_not(room: Room) -> None:
    name, code = next(iter(room.codes.items()))
    _, ok = _sign_in(room, name, code)
    assert ok.status_code == 302 and ok.headers["Location"].startswith(("/hub/", f"/user/{name}/"))
    for who, what in ((name, "aaaa-bbbb-cccc"), ("attendee-99", code), (name, code.upper() + "x")):
        _, bad = _sign_in(room, who, what)
        assert bad.status_code == 403, (who, what, bad.status_code)
    # The codes file holds no code in clear, and the state directory is the owner's only.
    text = (room.state / "hub" / "codes.json").read_text()
    assert code not in text and code.replace("-", "") not in text
    for path in (room.state / "hub", room.state / "hub" / "codes.json", room.state / "hub" / "grader-secret"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_hub_serves_tls_with_the_printed_fingerprint(room: Room) -> None:
    import ssl

    pem = ssl.get_server_certificate(("127.0.0.1", room.settings.port))
    assert hub.fingerprint(pem.encode()) == room.served.fingerprint
    # Plain HTTP on the hub's port is no way in.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{room.settings.port}/hub/api/", timeout=10)


def test_each_attendee_is_graded_by_the_service_wrong_refused_right_flagged(room: Room) -> None:
    secret = (room.state / "hub" / "grader-secret").read_text().strip()
    for name, ct in room.containers.items():
        wrong = _exec(
            ct,
            f"cat > /tmp/{CHALLENGE}.conf && trustlab challenge check {CHALLENGE} /tmp/{CHALLENGE}.conf --json",
            stdin=START,
        )
        assert wrong.returncode == 1, wrong.stderr[-2000:]
        data = json.loads(wrong.stdout)
        assert data["solved"] is False and "flag" not in data and data["attendee"] == name
        assert any(f["identity"] for f in data["failures"]), data["failures"]
        hint = _exec(ct, f"trustlab challenge hint {CHALLENGE}")
        assert hint.returncode == 0 and hint.stdout.startswith("hint 1/"), hint.stdout + hint.stderr
        right = _exec(
            ct,
            f"cat > /tmp/{CHALLENGE}.conf && trustlab challenge check {CHALLENGE} /tmp/{CHALLENGE}.conf",
            stdin=SOLUTION,
        )
        assert right.returncode == 0, (right.stdout + right.stderr)[-2000:]
        want = (
            "trustlab{"
            + hmac.new(secret.encode(), f"{CHALLENGE}:{name}".encode(), hashlib.sha256).hexdigest()[:32]
            + "}"
        )
        assert f"flag: {want}" in right.stdout and f"for {name}" in right.stdout


def test_the_same_file_graded_in_the_attendee_server_alone_yields_no_flag(room: Room) -> None:
    """Without the grader (no TRUSTLAB_GRADER_URL), the attendee's server grades nothing itself:
    it cannot run a lab (no docker socket, no namespaces) and holds no flag secret."""
    ct = next(iter(room.containers.values()))
    out = _exec(
        ct,
        f"cat > /tmp/s.conf && env -u TRUSTLAB_GRADER_URL -u TRUSTLAB_GRADER_TOKEN "
        f"trustlab challenge check {CHALLENGE} /tmp/s.conf --runtime docker",
        stdin=SOLUTION,
    )
    assert out.returncode != 0 and "trustlab{" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_the_instructor_sees_the_room(room: Room) -> None:
    data = room.api("GET", f"/services/{hub.SERVICE}/api/room")
    by = {a["name"]: a for a in data["attendees"]}
    for name in room.codes:
        cell = by[name]["challenges"][CHALLENGE]
        assert cell["attempts"] >= 2 and cell["failed"] >= 1 and cell["solved"] is True, (name, cell)
        assert by[name]["server"] is True and cell["hints"] == 1
    assert data["stuck"]["id"] == CHALLENGE and data["stuck"]["failed"] >= 3
    csv_text = hub.api(room.settings, room.token, "GET", f"/services/{hub.SERVICE}/room.csv")
    lines = csv_text.strip().splitlines()
    assert lines[0] == "attendee,challenge,attempts,failed,solved,hints"
    assert {ln.split(",")[0] for ln in lines[1:]} >= set(room.codes)
    # Through the hub's OAuth, as a browser: the instructor gets the page, an attendee does not.
    s, r = _sign_in(room, hub.INSTRUCTOR, _instructor_code(room))
    assert r.status_code == 302
    page = s.get(f"{room.settings.url}/services/{hub.SERVICE}/", timeout=30)
    assert page.status_code == 200 and 'id="room"' in page.text and "attendee-01" in page.text
    board = s.get(f"{room.settings.url}/services/{hub.SERVICE}/scoreboard", timeout=30)
    assert board.status_code == 200 and 'id="scoreboard"' in board.text and "<th>attendee-03</th>" in board.text
    name, code = next(iter(room.codes.items()))
    s, _ = _sign_in(room, name, code)
    for page in ("", "scoreboard", "api/room", "room.csv"):
        refused = s.get(f"{room.settings.url}/services/{hub.SERVICE}/{page}", timeout=30)
        assert refused.status_code == 403, page
    mine = s.get(f"{room.settings.url}/services/{hub.SERVICE}/progress", timeout=30)
    assert mine.status_code == 200 and f"<li>{CHALLENGE}</li>" in mine.text and "<h1>attendee-01</h1>" in mine.text


def _instructor_code(room: Room) -> str:
    if room.served.instructor_code:
        return room.served.instructor_code
    return hub.add_codes(room.state / "hub", [hub.INSTRUCTOR])[hub.INSTRUCTOR]


# -- isolation, from inside an attendee server --------------------------------------------------------
def test_no_docker_socket_no_capabilities_no_privilege(room: Room) -> None:
    ct = next(iter(room.containers.values()))
    out = _exec(
        ct, "ls -l /var/run/docker.sock /run/docker.sock 2>&1; grep -E '^Cap(Eff|Bnd)|NoNewPrivs' /proc/self/status"
    )
    assert "No such file" in out.stdout and "docker.sock ->" not in out.stdout
    status = dict(line.split(":\t") for line in out.stdout.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"].strip() == "1"
    attrs = images.client().containers.get(ct).attrs["HostConfig"]
    assert not attrs["Privileged"] and not [b for b in attrs.get("Binds") or [] if "docker.sock" in b]


def test_the_solutions_are_not_in_the_attendee_server(room: Room) -> None:
    """An empty read-only tmpfs covers every solution/ of the image: starting a challenge works,
    reading its solution does not (root with no capability cannot unmount it: see CapEff below)."""
    ct = next(iter(room.containers.values()))
    out = _exec(
        ct,
        "d=$(python3 -c \"from harness.assets import asset_dir; print(asset_dir('labs'))\")/challenges; "
        f"ls -A $d/{CHALLENGE}/solution | wc -l; "
        f"cd /tmp && trustlab challenge start {CHALLENGE} --dir /tmp/st >/dev/null && echo STARTED; "
        "env -u TRUSTLAB_GRADER_URL -u TRUSTLAB_GRADER_TOKEN "
        f"trustlab challenge solution {CHALLENGE} --dir /tmp/sol; echo exit=$?",
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "0", out.stdout + out.stderr
    assert "STARTED" in lines and "exit=2" in lines, out.stdout + out.stderr
    assert "ships no solutions" in out.stderr, out.stderr


def test_another_attendees_server_is_unreachable(room: Room) -> None:
    """The attendees' network has inter-container traffic off: B's server answers the hub's proxy
    (the host) but not A's server."""
    c = images.client()
    (a, ct_a), (b, ct_b) = list(room.containers.items())[:2]
    ip_b = c.containers.get(ct_b).attrs["NetworkSettings"]["Networks"][room.settings.network]["IPAddress"]
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        f"try:\n s.connect(('{ip_b}', 8888)); print('CONNECTED')\n"
        "except OSError as e: print('REFUSED', e)\n"
    )
    out = _exec(ct_a, f'python3 -c "{probe}"')
    assert "REFUSED" in out.stdout, out.stdout + out.stderr
    # Control: from the host, B's server is there (so the refusal above is the network's doing).
    with socket.create_connection((ip_b, 8888), timeout=5):
        pass


def test_hub_secrets_and_the_grading_secret_are_out_of_reach(room: Room) -> None:
    ct = next(iter(room.containers.values()))
    name = next(iter(room.containers))
    d = room.state / "hub"
    secret = (d / "grader-secret").read_text().strip()
    cookie = (d / "jupyterhub_cookie_secret").read_text().strip()
    # Nothing of the hub's state directory is mounted or copied in: no file of that name anywhere,
    # no mount of it, and neither secret in the server's environment.
    out = _exec(
        ct,
        "find / \\( -path /proc -o -path /sys \\) -prune -o \\( -name jupyterhub.sqlite "
        "-o -name jupyterhub_cookie_secret -o -name grader-secret "
        "-o -name grader.sqlite -o -name codes.json \\) -print 2>/dev/null; echo ---; cat /proc/self/mounts; "
        "echo ---; cat /proc/1/environ | tr '\\0' '\\n'; env",
        timeout=120,
    )
    found, mounts, env = out.stdout.split("---\n", 2)
    assert found.strip() == "", found
    assert str(d) not in mounts and "docker.sock" not in mounts
    assert secret not in env and cookie not in env and "TRUSTLAB_GRADER_URL" in env
    # The server's own hub token can reach the grader but read no other user, nor the hub's users.
    token = _exec(ct, "printenv JUPYTERHUB_API_TOKEN").stdout.strip()
    assert token
    with pytest.raises(urllib.error.HTTPError) as err:
        room.api("GET", "/hub/api/users", token=token)
    assert err.value.code == 403
    other = [n for n in room.codes if n != name][0]
    with pytest.raises(urllib.error.HTTPError) as err:
        room.api("GET", f"/hub/api/users/{other}", token=token)
    assert err.value.code in (403, 404)
    with pytest.raises(urllib.error.HTTPError) as err:
        room.api("GET", f"/services/{hub.SERVICE}/api/room", token=token)
    assert err.value.code == 403


def test_serve_refuses_an_image_that_is_not_there(tmp_path: Path, docker_ready: str) -> None:
    with pytest.raises(hub.PrerequisiteError, match="trustlab/no-such-classroom:x is missing"):
        hub.serve(port=_free_port(), bind="127.0.0.1", image="trustlab/no-such-classroom:x", state=tmp_path)
    assert not (tmp_path / "hub" / "hub.pid").exists()
    # The lab image is no classroom image: one line saying so, nothing left running.
    with pytest.raises(
        hub.LabError, match=r"has no trustlab in it .*: ModuleNotFoundError: No module named 'harness'$"
    ):
        hub.serve(port=_free_port(), bind="127.0.0.1", image=images.LAB_IMAGE, state=tmp_path)
    assert not (tmp_path / "hub" / "hub.pid").exists()


def test_serve_sweeps_a_killed_hubs_attendees_and_network_and_nothing_else(
    tmp_path: Path, docker_ready: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub killed with its state deleted left its network and attendee containers: the next
    ``serve`` removes them. A hub still running, another host's, and a network made before the
    state label (nothing says whose) stay."""
    c = images.client()
    here = socket.gethostname()
    deleted = tmp_path / "deleted"
    # Only this test's "deleted" state has no hub: every other (the room's, a hub another test
    # serves) counts as running, so the sweep below cannot touch them.
    monkeypatch.setattr(hub, "_hub_pids", lambda d: [] if d == deleted else [1])
    cases = {
        "gone": f"{here}:{deleted}",
        "live": f"{here}:{tmp_path / 'live'}",
        "other-host": f"not-{here}:{deleted}",
        "unlabelled": None,
    }
    made = {}
    try:
        for name, state in cases.items():
            instance = f"sw{os.getpid() % 10000:04d}{name[:2]}"
            labels = {hub.LABEL: instance, **({hub.LABEL_STATE: state} if state else {})}
            net = c.networks.create(f"trustlab-hub-{instance}", internal=True, labels=labels)
            ct = c.containers.create(images.LAB_IMAGE, ["true"], labels={hub.LABEL: instance}, network=net.name)
            made[name] = (net, ct)
        assert hub.sweep(c) == []  # all of them just made: a hub being served may be one
        gone = hub.sweep(c, min_age=0)
        left = {n.name for n in c.networks.list(filters={"label": hub.LABEL})}
        assert made["gone"][0].name not in left and f"network {made['gone'][0].name}" in gone
        assert made["gone"][1].name in gone
        for name in ("live", "other-host", "unlabelled"):
            assert made[name][0].name in left, name
            assert c.containers.get(made[name][1].id)  # still there
    finally:
        for net, ct in made.values():
            with contextlib.suppress(Exception):
                ct.remove(force=True)
            with contextlib.suppress(Exception):
                net.remove()


def test_stop_finds_a_hub_whose_pid_file_is_gone_and_stops_its_proxy_and_services(room: Room, tmp_path: Path) -> None:
    """A second hub from another state directory; its hub.pid removed (a sweep, a crash), --stop
    still finds it by its command line, and nothing it started outlives it; the first hub runs on."""
    other = hub.serve(
        port=_free_port(), bind="127.0.0.1", image=room.settings.image, state=tmp_path, progress=lambda _: None
    )
    d = tmp_path / "hub"
    hubs = hub._hub_pids(d)
    family = hubs + hub._descendants(hubs)
    assert len(hubs) == 1 and len(family) >= 4, family  # hub, proxy, grader, idle culler
    (d / "hub.pid").unlink()
    gone = hub.stop(state=tmp_path)
    assert gone and gone[0] == f"hub (pid {hubs[0]})"
    assert hub._wait_gone(family, 0) == [], family
    running = hub._procs()
    assert not [cmd for _, _, cmd in running.values() if str(d).encode() in cmd]
    assert hub._hub_pids(room.state / "hub"), "the other hub must be left alone"
    assert other.settings.network not in {n.name for n in images.client().networks.list()}


def test_cli_refuses_bad_input() -> None:
    for argv, msg in (
        (["classroom", "serve", "--bind", "nowhere"], "--bind: 'nowhere' is not an IP address"),
        (["classroom", "serve", "--cert", "/nonexistent"], "classroom serve: give both --cert and --key"),
        (["classroom", "attendees", "add", "x"], "classroom attendees: write `trustlab classroom attendees add N`"),
        (["classroom", "attendees", "add", "0"], "attendees add: 0 is not a number of attendees"),
    ):
        out = subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (argv, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"trustlab: error: {msg}"), out.stderr


# -- a real browser ----------------------------------------------------------------------------------------
def _spki_sha256(cert_pem: bytes) -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def hub_browser(room: Room) -> Any:
    """Headless Chromium (Debian's, through selenium as tests/test_page.py drives it) that trusts
    the hub's certificate by its key only (an SPKI pin, not "ignore every certificate error")."""
    from test_page import chromium_driver

    pin = _spki_sha256(Path(room.settings.cert).read_bytes())
    drv = chromium_driver(f"--ignore-certificate-errors-spki-list={pin}")
    yield drv
    drv.quit()


def test_an_attendee_signs_in_with_a_code_in_a_browser_and_gets_jupyterlab(room: Room, hub_browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name, code = list(room.codes.items())[-1]
    drv = hub_browser
    drv.get(f"{room.settings.url}/hub/login")
    # A wrong code first: the login page again, with its message, and no JupyterLab.
    drv.find_element(By.ID, "username_input").send_keys(name)
    drv.find_element(By.ID, "password_input").send_keys("wrong-code-here")
    drv.find_element(By.ID, "login_submit").click()
    WebDriverWait(drv, 30).until(lambda d: "Invalid username or password" in d.page_source)
    assert "/lab" not in drv.current_url
    drv.find_element(By.ID, "username_input").clear()
    drv.find_element(By.ID, "username_input").send_keys(name)
    drv.find_element(By.ID, "password_input").send_keys(code)
    drv.find_element(By.ID, "login_submit").click()
    WebDriverWait(drv, 90).until(lambda d: f"/user/{name}/" in d.current_url)

    # JupyterLab's file browser lists the classroom image's notebooks.
    def listed(d: Any) -> set[str]:
        return {
            (e.get_attribute("textContent") or "").strip()
            for e in d.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemText")
        }

    try:
        WebDriverWait(drv, 90).until(lambda d: "00-the-lab.ipynb" in listed(d))
    except Exception:
        drv.save_screenshot("/tmp/remote_img/signin.png")
        raise AssertionError(f"no notebook listed at {drv.current_url}: {listed(drv)}; {drv.title}") from None
    assert drv.title and "JupyterLab" in drv.title, drv.title


# -- the remote runtime: notebooks in an attendee server run their labs on the lab service ------------
NOTEBOOK_00 = f"{hub.NOTEBOOK_DIR}/00-the-lab.ipynb"
#: Notebook 00's code cells up to its first run (set-up, doctor, names, identities, prediction, run),
#: executed in the attendee's server as its kernel would, with the server's own environment.
RUN_00 = f"""
import json, time
nb = json.load(open({NOTEBOOK_00!r}))
ns = {{}}
for cell in nb["cells"]:
    if cell["cell_type"] != "code":
        continue
    src = "".join(cell["source"])
    t0 = time.perf_counter()
    exec(compile(src, "cell", "exec"), ns)
    if "run_scenario(" in src:
        break
r = ns["r"]
cells = {{c.identity: [c.outcome.value, c.expected.value if c.expected else None] for c in r.cells}}
took = time.perf_counter() - t0
meta = {{"runtime": r.meta["runtime"], "remote": r.meta["remote"]}}
print("RESULT " + json.dumps({{**meta, "cell_s": took, "cells": cells}}))
"""


def _result(out: subprocess.CompletedProcess) -> dict[str, Any]:
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and line, (out.stdout + out.stderr)[-3000:]
    return dict(json.loads(line[-1][len("RESULT ") :]))


def test_notebook_00_runs_in_an_attendee_server_on_the_lab_service(room: Room, request: pytest.FixtureRequest) -> None:
    """The attendee's server cannot start a proxy (no socket, no capability: tests above); with the
    spawner's TRUSTLAB_RUNTIME=remote notebook 00's first cells run nginx/good on the lab service
    and read real outcomes: the legitimate backend served, every impostor blocked."""
    from harness.vocab import LEGITIMATE_IDS

    name, ct = next(iter(room.containers.items()))
    env = _exec(ct, "printenv TRUSTLAB_RUNTIME")
    assert env.stdout.strip() == "remote", env.stdout + env.stderr
    t0 = time.perf_counter()
    data = _result(_exec(ct, "python3 -", stdin=RUN_00, timeout=300))
    took = time.perf_counter() - t0
    assert data["runtime"] == "remote" and data["remote"]["runtime"] == "docker", data
    cells = data["cells"]
    assert cells["legit"][0] == "served" and len(cells) >= 10, cells
    impostors = {i: o for i, (o, _) in cells.items() if i not in LEGITIMATE_IDS}
    # Real verdicts, as notebook 00 shows locally: most impostors blocked, the same-CA sibling
    # (a certificate for another name from the internal CA) per the scenario's expectation.
    assert impostors["rogue-ca"] == "blocked" and set(impostors.values()) <= {"blocked", "spoofed"}, impostors
    assert all(o == e for o, e in cells.values() if e), cells
    # The CLI in the attendee's terminal: the same run through the same service.
    cli = _exec(ct, "trustlab run nginx/good --runtime remote --identity legit,rogue-ca --wide", timeout=300)
    assert cli.returncode == 0 and "served" in cli.stdout and "blocked" in cli.stdout, cli.stdout + cli.stderr
    # The same cell on this host's docker runtime, for the cost of the round trip.
    from harness.course import notebook

    t1 = time.perf_counter()
    local = notebook.run_scenario("nginx/good", runtime="docker")
    local_s = time.perf_counter() - t1
    assert {c.identity: c.outcome.value for c in local.cells} == {i: o for i, (o, _) in cells.items()}
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(
            f"\n[hub] notebook 00 run cell for {name}: remote {data['cell_s']:.1f} s "
            f"(service round trip {data['remote']['round_trip_s']:.1f} s; cells 1-6 with imports {took:.1f} s), "
            f"docker on the host {local_s:.1f} s"
        )


_RUNS = (
    "import json, sys\n"
    "from harness.runtimes import remote\n"
    "from harness.errors import LabError\n"
    "try:\n"
    "    out = remote.call(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)\n"
    "    print('RESULT ' + json.dumps(out))\n"
    "except LabError as exc:\n"
    "    print('ERROR ' + str(exc)); sys.exit(2)\n"
)


def _call(ct: str, route: str, body: Any = None, *, timeout: float = 300) -> subprocess.CompletedProcess:
    args = [route] + ([json.dumps(body)] if body is not None else [])
    return subprocess.run(
        ["docker", "exec", "-i", ct, "python3", "-c", _RUNS, *args], capture_output=True, text=True, timeout=timeout
    )


def test_an_attendees_lab_is_labelled_theirs_and_no_one_else_sees_or_stops_it(room: Room) -> None:
    """A's run: every lab object carries A's name; B's `runs` does not list it and B's `stop` is
    refused and removes nothing; A's lists it; A's second run is refused while the first runs (one
    lab at a time per attendee). A's lab containers are paused while B looks (a lab of this size
    ends in about a second now: the look raced its end), then resume and finish every cell."""
    import threading

    import docker.errors

    from harness import scenarios
    from harness.runtimes.docker import LABEL_ATTENDEE, LABEL_LAB

    (a, ct_a), (b, ct_b) = list(room.containers.items())[:2]
    c = images.client()
    # 18 scenarios (about 180 cells, under the 200-cell cap): still running while B looks, in two labs.
    many = [k for k in scenarios.builtin() if k.startswith(("haproxy/", "nginx/"))][:18]
    done: dict[str, subprocess.CompletedProcess] = {}
    runner = threading.Thread(target=lambda: done.setdefault("a", _call(ct_a, "run", {"scenarios": many})))
    runner.start()
    held: list[Any] = []
    try:
        deadline = time.monotonic() + 120
        while not held and time.monotonic() < deadline:
            # The low-level list: one call, no inspect of a container that may end meanwhile.
            for ct in c.api.containers(filters={"label": f"{LABEL_ATTENDEE}={a}"}):
                with contextlib.suppress(docker.errors.APIError):  # one that ended meanwhile
                    c.api.pause(ct["Id"])
                    held.append(ct)
            time.sleep(0.02)
        assert held, "A's lab never appeared with A's label"
        lab = held[0]["Labels"][LABEL_LAB]
        # One lab at a time per attendee: A's second run is refused while the first runs.
        second = _call(ct_a, "run", {"scenarios": ["nginx/good"]})
        assert second.returncode == 2 and second.stdout.strip() == (
            "ERROR lab service: you already have 1 lab running on the lab service; wait for it to finish"
        ), second.stdout + second.stderr
        seen_a = _result(_call(ct_a, "runs"))
        assert lab in {x["lab"] for x in seen_a["labs"]}, seen_a
        seen_b = _result(_call(ct_b, "runs"))
        assert seen_b == {"attendee": b, "labs": []}, seen_b
        refused = _call(ct_b, "stop", {"lab": lab})
        assert refused.returncode == 2 and refused.stdout.strip() == (
            f"ERROR lab service: no running lab {lab!r} of yours (GET runs lists yours)"
        ), refused.stdout + refused.stderr
        left = c.api.containers(filters={"label": f"{LABEL_LAB}={lab}"})
        assert left, "B's stop removed A's lab"
        assert all(ct["Labels"].get(LABEL_ATTENDEE) == a for ct in left)
    finally:
        for ct in held:
            with contextlib.suppress(docker.errors.APIError):
                c.api.unpause(ct["Id"])
        runner.join(600)
    out = _result(done["a"])
    assert {x["scenario"] for x in out["cells"]} == set(many)
    assert not [x for x in out["cells"] if x["outcome"] == "error"], out["cells"]
    assert not c.containers.list(all=True, filters={"label": f"{LABEL_ATTENDEE}={a}"})


def test_a_wrong_input_to_the_lab_service_gets_one_clear_line(room: Room) -> None:
    """Data only, checked before anything runs: an unknown id, a path on the service's host, an
    unknown identity, a run too large, a body of the wrong shape: one line each, nothing started."""
    from harness.runtimes.remote import MAX_CELLS

    ct = next(iter(room.containers.values()))
    for body, want in (
        ({"scenarios": ["nginx/nope"]}, "'nginx/nope' is not a built-in scenario id; try one of: "),
        ({"scenarios": ["/etc/passwd"]}, "'/etc/passwd' is not a built-in scenario id"),
        (
            {"scenarios": ["../scenarios/nginx/good.toml"]},
            "'../scenarios/nginx/good.toml' is not a built-in scenario id",
        ),
        (
            {"scenarios": ["nginx/good"], "identities": ["legit", "nobody"]},
            "identity 'nobody' is unknown; known: legit",
        ),
        ({"scenarios": "nginx/good"}, 'the body must be {"scenarios": ["nginx/good", ...]}'),
        ({"code": "import os"}, 'the body must be {"scenarios"'),
    ):
        out = _call(ct, "run", body, timeout=60)
        lines = out.stdout.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"ERROR lab service: {want}"), (
            body,
            out.stdout + out.stderr,
        )
    from harness import scenarios

    every = sorted(scenarios.builtin())
    out = _call(ct, "run", {"scenarios": every}, timeout=60)
    assert out.returncode == 2 and f"the lab service runs at most {MAX_CELLS} per request" in out.stdout, out.stdout
    # The CLI: exit 2, one line, no traceback (the full matrix is more than one request runs).
    out = _exec(ct, "trustlab matrix --runtime remote", timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith("trustlab: error: lab service: ") and f"at most {MAX_CELLS} per request" in lines[0]
    # The notebook's own helper: the same line, as a LabError, not a traceback of the service.
    nb = _exec(
        ct,
        "python3 -c \"import harness; harness.run_scenario('nginx/good', runtime='remote', identities=['nobody'])\"",
        timeout=60,
    )
    assert nb.returncode == 1 and nb.stderr.strip().splitlines()[-1] == (
        "harness.errors.LabError: lab service: identity 'nobody' is unknown; known: "
        + ", ".join(__import__("harness.vocab", fromlist=["x"]).ALL_IDENTITY_IDS)
    ), nb.stderr


def test_the_browser_runs_notebook_00s_first_cells_on_the_lab_service(room: Room, hub_browser: Any) -> None:
    """Signed in (the test above), the attendee opens notebook 00 in JupyterLab, runs its cells
    up to the first run with Shift+Enter, and reads the outcome grid the lab service returned."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    name = list(room.codes)[-1]
    drv = hub_browser
    if f"/user/{name}/" not in drv.current_url:
        pytest.skip("needs the sign-in of the test above")
    drv.get(f"{room.settings.url}/user/{name}/lab/tree/00-the-lab.ipynb")

    def click_first_cell(d: Any) -> bool:
        # JupyterLab re-renders while it loads (a spinner over the page, cells replaced): retry.
        try:
            cells = d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
            if not cells:
                return False
            cells[0].click()
            return True
        except WebDriverException:
            return False

    WebDriverWait(drv, 180).until(click_first_cell)
    WebDriverWait(drv, 120).until(
        lambda d: "Idle" in (d.find_element(By.CSS_SELECTOR, "body").get_attribute("textContent") or "")
    )
    ActionChains(drv).send_keys(Keys.ESCAPE).perform()
    cells = drv.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
    sources = [c.get_attribute("textContent") or "" for c in cells]
    upto = next(n for n, src in enumerate(sources) if 'run_scenario("nginx/good"' in src)

    def prompt(d: Any, n: int) -> str:
        """Cell *n*'s input prompt: ``[ ]:`` not run, ``[*]:`` running, ``[7]:`` done."""
        try:
            cell = d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[n]
            return cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").get_attribute("textContent") or ""
        except (WebDriverException, IndexError):  # re-rendering: ask again
            return ""

    # Each code cell up to the run, one at a time: select it (its prompt), Shift+Enter, and wait for
    # its execution count. Under load, relying on the active cell moving on skipped a cell once
    # (the one that imports harness: a NameError); a press that did not take is pressed again.
    for n in range(upto + 1):
        cell = drv.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[n]
        if "jp-CodeCell" not in (cell.get_attribute("class") or "").split():
            continue
        for _ in range(4):
            try:
                drv.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[n].find_element(
                    By.CSS_SELECTOR, ".jp-InputPrompt"
                ).click()
                ActionChains(drv).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
                WebDriverWait(drv, 20).until(lambda d, n=n: re.search(r"\[(\d+|\*)\]", prompt(d, n)))
                break
            except WebDriverException:  # re-rendered under the click, or the press did not take
                continue
        WebDriverWait(drv, 300).until(lambda d, n=n: re.search(r"\[\d+\]", prompt(d, n)))

    def outputs(d: Any) -> str:
        return "\n".join(
            e.get_attribute("textContent") or "" for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
        )

    try:
        WebDriverWait(drv, 300).until(lambda d: "on the remote runtime" in outputs(d) or "Error" in outputs(d))
    except Exception:
        drv.save_screenshot("/tmp/remote_img/notebook.png")
        raise AssertionError(f"no run output at {drv.current_url}: {outputs(drv)[-1500:]}") from None
    text = outputs(drv)
    assert "runtime: remote (TRUSTLAB_RUNTIME=remote" in text, text[-2000:]
    assert "on the remote runtime" in text and "Error" not in text, text[-2000:]
    # The grid the run displays: the legit row served, impostors blocked (labels from harness.report).
    grid = drv.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output table")
    assert grid, text[-2000:]
    cells_text = grid[-1].get_attribute("textContent") or ""
    assert "served" in cells_text and "blocked" in cells_text, cells_text[:2000]
