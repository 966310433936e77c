"""JupyterHub's configuration for ``trustlab classroom serve`` (``jupyterhub -f`` this file).

Everything instance-specific comes from ``$TRUSTLAB_HUB_DIR/settings.json``, written by
:func:`harness.course.hub.serve`; the reasons are in ``harness/course/hub/__init__.py``.
"""
# get_config is given by traitlets when it loads this file.

import json
import os
import sys
from pathlib import Path

from harness.course import hub
from harness.course.scoring import TOKEN_ENV, URL_ENV
from harness.runtimes import remote

d = Path(os.environ["TRUSTLAB_HUB_DIR"])
s = hub.Settings(**json.loads((d / "settings.json").read_text()))
c = get_config()  # type: ignore[name-defined]  # noqa: F821

# -- the hub, its proxy and its state --------------------------------------------------------------
c.JupyterHub.bind_url = f"https://{s.bind}:{s.port}"
c.JupyterHub.ssl_cert = s.cert
c.JupyterHub.ssl_key = s.key
# The hub's API on the attendees' network gateway only: servers reach it there, the room does not.
c.JupyterHub.hub_ip = s.gateway
c.JupyterHub.hub_port = s.hub_port
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.free_port('127.0.0.1')}"
c.ConfigurableHTTPProxy.pid_file = str(d / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{d / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(d / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(d / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# -- who signs in ----------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "harness.course.hub.auth.CodeAuthenticator"
c.CodeAuthenticator.codes_dir = str(d)
c.Authenticator.admin_users = {s.instructor}
c.Authenticator.allow_all = True  # the authenticator itself admits only names holding a code

# -- one server per attendee, from the classroom image -------------------------------------------------
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = s.image
c.DockerSpawner.network_name = s.network
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.prefix = f"trustlab-hub-{s.instance}"
c.DockerSpawner.name_template = "{prefix}-{username}"
c.DockerSpawner.cmd = ["jupyterhub-singleuser", "--allow-root"]
c.DockerSpawner.notebook_dir = hub.NOTEBOOK_DIR
c.DockerSpawner.mem_limit = hub.MEM_LIMIT
c.DockerSpawner.extra_create_kwargs = {"labels": {hub.LABEL: s.instance}}
# No docker socket (nothing is mounted), no privilege, every capability dropped, no setuid gain.
c.DockerSpawner.volumes = {}
c.DockerSpawner.extra_host_config = {
    "privileged": False,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": hub.PIDS_LIMIT,
    "tmpfs": hub.hidden_solutions(s.extra["image_labs"]),
}
c.DockerSpawner.environment = {
    URL_ENV: s.grader_url,
    # The server's own hub token: the grader asks the hub whose it is.
    TOKEN_ENV: lambda spawner: spawner.api_token,
    "DOCKER_HOST": "",
    # Solutions hidden (see tmpfs above), hints and solutions through the grader only.
    "TRUSTLAB_SCORED": "1",
    # The notebooks' runs go to the grader's lab routes (harness/runtimes/remote.py): this server
    # cannot start a proxy itself.
    remote.RUNTIME_ENV: remote.NAME,
}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
# The server's token may reach the grader, and nothing of the hub beyond its own server.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={hub.SERVICE}",
]

# -- services: the grader (attempts, flags, the instructor's page), the idle culler, the CLI's token --
_env_keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TRUSTLAB_STATE_DIR", "DOCKER_HOST", "DOCKER_CONFIG")
_service_env = {k: os.environ[k] for k in _env_keep if k in os.environ}
_service_env["TRUSTLAB_HUB_DIR"] = str(d)
c.JupyterHub.services = [
    {
        "name": hub.SERVICE,
        "url": f"http://{s.gateway}:{s.service_port}",
        "command": [sys.executable, "-m", "harness.course.hub.grader"],
        "environment": _service_env,
        "oauth_no_confirm": True,
        "display": True,
    },
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={s.cull_idle_s}"],
        "environment": {k: v for k, v in _service_env.items() if k in ("PATH", "HOME", "LANG")},
    },
    {"name": hub.ADMIN_SERVICE, "api_token": (d / "admin-token").read_text().strip()},
]
c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", f"access:services!service={hub.SERVICE}"]},
    {"name": "trustlab-grader", "scopes": ["list:users", "read:users", "read:servers"], "services": [hub.SERVICE]},
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
    {"name": "admin", "users": [s.instructor], "services": [hub.ADMIN_SERVICE]},
]
