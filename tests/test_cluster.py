import pytest

from regene_search.cluster import ClusterInfo, check_resources, is_loopback, token_file
from regene_search.errors import UserError


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_resources_beyond_the_cluster_are_refused():
    info = ClusterInfo(dashboard_url=None, cpus=8, gpus=2, nodes=2, auth_mode="token")
    check_resources(info, cpus_per_trial=2, gpus_per_trial=0.5)
    with pytest.raises(UserError, match="--gpus-per-trial 3 exceeds the cluster's 2 GPU"):
        check_resources(info, cpus_per_trial=1, gpus_per_trial=3)
    with pytest.raises(UserError, match="--cpus-per-trial 9 exceeds"):
        check_resources(info, cpus_per_trial=9, gpus_per_trial=0)


def test_token_file_follows_ray_auth_token_path(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert token_file() == tmp_path / "tok"
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    assert token_file().name == "auth_token"
