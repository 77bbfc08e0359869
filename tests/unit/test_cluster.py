"""Ray (annlab.cluster): a cluster checked before any job starts, its reach to the store and
whether anything answers at its address, without starting Ray (mocked); and `make cluster`'s
node, safe by default."""

import socket

import pytest
import ray
from omegaconf import OmegaConf

from annlab.cluster import NoCluster, UnreachableStore, check_cluster

REMOTE = "10.1.2.3"  # a node on another machine, as ray.nodes() names it
SQLITE = "sqlite:////tmp/annlab/mlflow.db"


@pytest.fixture
def head():
    """A head on this machine: something that accepts connections on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def inits(monkeypatch):
    """The ray.init calls made; ray.nodes() answers what ``inits.nodes`` holds."""
    class Calls(list):
        nodes: list = []

    calls = Calls()
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"NodeManagerAddress": address, "Alive": alive} for address, alive in calls.nodes])
    return calls


def _ray(address):
    return OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {
        "address": address, "include_dashboard": False}}}}})


@pytest.mark.parametrize("uri, nodes, refused", [
    (SQLITE, [("127.0.0.1", True), (REMOTE, True)], True),
    ("http://127.0.0.1:5001", [("127.0.0.1", True), (REMOTE, True)], True),
    ("http://localhost:5001", [(REMOTE, True)], True),
    ("http://[::1]:5001", [(REMOTE, True)], True),
    (SQLITE, [("127.0.0.1", True), ("127.0.0.1", True)], False),
    (SQLITE, [("127.0.0.1", True), (REMOTE, False)], False),
    ("http://10.0.0.5:5001", [(REMOTE, True)], False),
    ("https://mlflow.example.org", [(REMOTE, True)], False),
])
def test_a_cluster_with_nodes_elsewhere_and_a_store_only_this_machine_sees_is_refused(
        head, inits, uri, nodes, refused):
    inits.nodes = nodes
    if refused:
        with pytest.raises(UnreachableStore) as info:
            check_cluster(_ray(head), uri)
        message = str(info.value)
        assert "\n" not in message
        assert f"nodes on other machines ({REMOTE})" in message and uri in message
        assert "make server" in message and "MLFLOW_TRACKING_URI=" in message
    else:
        check_cluster(_ray(head), uri)
    # A server the nodes can reach needs no look at the cluster's nodes.
    expected = [] if uri.startswith("http") and not refused else [head]
    assert [kw["address"] for kw in inits] == expected


@pytest.mark.parametrize("address", [f"{REMOTE}:6379", "ray-head.invalid:6379",
                                     f"ray://{REMOTE}:10001"])
def test_an_address_on_another_machine_with_a_local_store_is_refused_before_connecting(
        inits, address):
    with pytest.raises(UnreachableStore, match="is on another machine") as info:
        check_cluster(_ray(address), SQLITE)
    assert address in str(info.value) and inits == []


@pytest.mark.parametrize("address, why", [("ray-head.invalid:6379", "does not resolve"),
                                          (None, "refused")])
def test_an_address_where_nothing_answers_is_refused_naming_it(inits, address, why):
    if address is None:  # a port on this machine where nothing listens
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(NoCluster, match=why) as info:
        check_cluster(_ray(address), "http://10.0.0.5:5001")
    assert f"RAY_ADDRESS={address}" in str(info.value) and inits == []


def test_a_local_instance_beside_a_running_ray_start_cluster_is_refused_naming_it(
        inits, head, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(head)  # as `ray start` leaves it
    with pytest.raises(NoCluster, match=f"set RAY_ADDRESS={head} to run on it") as info:
        check_cluster(_ray(None), SQLITE)
    assert "ray stop" in str(info.value) and inits == []


def test_a_local_ray_instance_is_not_checked(inits, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # no `ray start` cluster here
    check_cluster(_ray(None), SQLITE)
    check_cluster(OmegaConf.create({"hydra": {"launcher": {"n_jobs": 2}}}), "sqlite:///x.db")
    assert inits == []


def test_the_ray_recipe_is_safe_by_default():
    from annlab.cluster import RAY_HEAD_PORTS, RAY_PORTS, ray_command

    head, head_env = ray_command("head", "10.0.0.5")
    worker, worker_env = ray_command("worker", "10.0.0.6", "10.0.0.5:6379")
    for argv, env in ((head, head_env), (worker, worker_env)):
        assert argv[1] == "start" and "--block" in argv  # in the foreground: Ctrl-C stops it
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert "--disable-usage-stats" in argv and "--include-dashboard=false" in argv
        assert {f"{flag}={port}" for flag, port in RAY_PORTS.items()} <= set(argv)
    assert "--head" in head and f"--port={RAY_HEAD_PORTS['--port']}" in head
    assert "--node-ip-address=10.0.0.5" in head and "--address=10.0.0.5:6379" in worker
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in head_env  # a real cluster may grow
    _, loopback = ray_command("head", "127.0.0.1")
    assert loopback["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # kept on loopback


def test_a_worker_without_the_heads_token_is_refused(capsys, monkeypatch, tmp_path):
    from pipelines.cluster import main as cluster

    monkeypatch.setattr("annlab.cluster.RAY_TOKEN", tmp_path / "none")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with pytest.raises(SystemExit) as info:
        cluster(["worker", "--address", "10.0.0.5:6379", "--node-ip", "10.0.0.6"])
    assert info.value.code == 1
    assert "needs the head's token" in capsys.readouterr().err
