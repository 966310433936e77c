"""Guard the deploy config: the real nginx must serve the backend and refuse every impostor."""

from pathlib import Path

HERE = Path(__file__).parent


def test_deploy_config_verifies_backend(trustlab_check):
    result = trustlab_check("nginx", HERE / "deploy" / "nginx.conf")
    assert result.ok, result.summary()


def test_regressed_config_is_caught(trustlab_check):
    result = trustlab_check("nginx", HERE / "deploy" / "nginx-regressed.conf")
    assert not result.ok
    assert result.outcome("rogue-ca").value == "spoofed", result.summary()
