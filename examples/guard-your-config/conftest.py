"""Policy for every trustlab check in this project."""

import pytest


@pytest.fixture(scope="session")
def trustlab_config():
    # Our internal CA never issues wildcard certificates, so a *.svc.internal impostor cannot
    # exist here; every other impostor must be blocked.
    return {"accept": ("wildcard",)}
