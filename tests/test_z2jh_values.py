"""docs/classroom/z2jh-values.yaml cannot drift from the code: the Zero-to-JupyterHub values file
names the image this repo builds, the grader/lab service and its URL, the environment and token
scopes the classroom server's spawner gives attendee servers (read from
harness/course/hub/jupyterhub_config.py itself), and hides every challenge's solution. Not a Helm
render: no helm here (docs/classroom/README.md says what was and was not validated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.course import classroom, hub
from harness.course.scoring import TOKEN_ENV, URL_ENV
from harness.runtimes import remote

yaml = pytest.importorskip("yaml")
ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "docs" / "classroom" / "z2jh-values.yaml"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return dict(yaml.safe_load(VALUES.read_text()))


@pytest.fixture(scope="module")
def spawner(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The classroom server's own hub configuration, loaded as JupyterHub loads it."""
    import os

    from traitlets.config import Config

    d = tmp_path_factory.mktemp("hubdir")
    settings = hub.Settings(
        instance="t",
        bind="127.0.0.1",
        port=8443,
        cert="c",
        key="k",
        image=classroom.IMAGE,
        network="n",
        gateway="127.0.0.1",
        hub_port=1,
        service_port=2,
        grade_runtime="docker",
        extra={"image_labs": "/labs"},
    )
    (d / "settings.json").write_text(json.dumps(settings.__dict__))
    (d / "admin-token").write_text("x\n")
    cfg = Config()
    old = os.environ.get("TRUSTLAB_HUB_DIR")
    os.environ["TRUSTLAB_HUB_DIR"] = str(d)
    try:
        path = Path(hub.__file__).with_name("jupyterhub_config.py")
        exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: cfg, "__file__": str(path)})
    finally:
        if old is None:
            os.environ.pop("TRUSTLAB_HUB_DIR", None)
        else:
            os.environ["TRUSTLAB_HUB_DIR"] = old
    return cfg


def test_the_image_is_the_classroom_image_this_repo_builds(values: dict[str, Any]) -> None:
    image = values["singleuser"]["image"]
    assert f"{image['name']}:{image['tag']}" == classroom.IMAGE
    assert values["singleuser"]["cmd"] == ["jupyterhub-singleuser", "--allow-root"]
    assert values["hub"]["config"]["KubeSpawner"]["notebook_dir"] == hub.NOTEBOOK_DIR


def test_the_attendee_environment_is_the_spawners(values: dict[str, Any], spawner: Any) -> None:
    env = values["singleuser"]["extraEnv"]
    ours = dict(spawner.DockerSpawner.environment)
    # Every variable the spawner sets is set here (the token by extraConfig, per server).
    assert set(env) | {TOKEN_ENV} == set(ours), (sorted(env), sorted(ours))
    assert env[remote.RUNTIME_ENV] == ours[remote.RUNTIME_ENV] == remote.NAME
    assert env["TRUSTLAB_SCORED"] == ours["TRUSTLAB_SCORED"]
    assert remote.URL_ENV == URL_ENV and remote.TOKEN_ENV == TOKEN_ENV
    assert env[URL_ENV].endswith(f"/services/{hub.SERVICE}")
    assert f'"{TOKEN_ENV}": lambda spawner: spawner.api_token' in values["hub"]["extraConfig"]["trustlab"]
    assert values["singleuser"]["memory"]["limit"] == hub.MEM_LIMIT


def test_the_grader_is_a_hub_service_with_the_same_roles_and_scopes(values: dict[str, Any], spawner: Any) -> None:
    services = values["hub"]["services"]
    assert list(services) == [hub.SERVICE]
    ours = next(s for s in spawner.JupyterHub.services if s["name"] == hub.SERVICE)
    assert (
        services[hub.SERVICE]["url"].rsplit(":", 1)[0] + "/services/" + hub.SERVICE
        == values["singleuser"]["extraEnv"][URL_ENV].rsplit(":", 1)[0] + "/services/" + hub.SERVICE
    )
    assert services[hub.SERVICE]["oauth_no_confirm"] == ours["oauth_no_confirm"]
    assert "apiToken" not in services[hub.SERVICE], "the service token is given with --set, never committed"
    roles = {r["name"]: r for r in spawner.JupyterHub.load_roles}
    for name in ("user", "trustlab-grader"):
        assert values["hub"]["loadRoles"][name]["scopes"] == roles[name]["scopes"], name
    assert values["hub"]["loadRoles"]["trustlab-grader"]["services"] == [hub.SERVICE]
    assert values["hub"]["config"]["Spawner"]["server_token_scopes"] == spawner.Spawner.server_token_scopes
    assert values["cull"]["timeout"] == hub.CULL_IDLE_S


def test_no_privilege_no_capability_and_attendees_cannot_reach_each_other(values: dict[str, Any]) -> None:
    su = values["singleuser"]
    ctx = values["hub"]["config"]["KubeSpawner"]["container_security_context"]
    assert ctx["capabilities"]["drop"] == ["ALL"] and ctx["privileged"] is False
    assert ctx["allowPrivilegeEscalation"] is False and su["allowPrivilegeEscalation"] is False
    net = su["networkPolicy"]
    assert net["enabled"] is True and net["ingress"] == []
    rules = net["egressAllowRules"]
    assert rules["privateIPs"] is False and rules["nonPrivateIPs"] is False and rules["cloudMetadataServer"] is False
    # The one egress rule: the grader's port, one host.
    (rule,) = net["egress"]
    assert [p["port"] for p in rule["ports"]] == [int(values["hub"]["services"][hub.SERVICE]["url"].rsplit(":", 1)[1])]
    assert rule["to"][0]["ipBlock"]["cidr"].endswith("/32")


def test_every_solution_is_hidden(values: dict[str, Any]) -> None:
    storage = values["singleuser"]["storage"]
    mounts = storage["extraVolumeMounts"]
    labs = {m["mountPath"].split("/challenges/")[0] for m in mounts}
    assert len(labs) == 1 and next(iter(labs)).endswith("harness/_data/labs"), labs
    assert {m["mountPath"] for m in mounts} == set(hub.hidden_solutions(next(iter(labs))))
    assert all(m["readOnly"] is True and m["name"] == "no-solutions" for m in mounts)
    assert [v["name"] for v in storage["extraVolumes"]] == ["no-solutions"]
