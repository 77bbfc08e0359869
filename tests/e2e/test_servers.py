"""The test servers of tests/servers.py: PostgreSQL, `mlflow server` over it, a two-node Ray
cluster, all on loopback only."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest

from tests.servers import assert_loopback_only, is_loopback, listeners

RAY_NODES_AND_TASKS = """
import json, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(logging_level="ERROR", log_to_driver=False)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def node_id():
    return ray.get_runtime_context().get_node_id()

ran_on = ray.get([node_id.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                  .remote() for n in alive], timeout=120)
print(json.dumps({"alive": alive, "ran_on": ran_on}))
"""


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:5432", True), ("127.0.0.53%lo:53", True), ("[::1]:5000", True),
    ("[::ffff:127.0.0.1]:6379", True), ("0.0.0.0:5000", False), ("[::]:5000", False),
    ("*:22", False), ("192.0.2.2:80", False), ("[::ffff:10.0.0.1]:80", False),
])
def test_is_loopback_reads_ss_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_postgres_listens_on_loopback_and_accepts_connections(postgres):
    import psycopg

    url = postgres.create_database(f"t_{uuid.uuid4().hex[:8]}")
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="postgres",
                         dbname=database, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    ours = [addr for addr, pids in listeners() if pids & postgres.pids()]
    assert ours == [f"127.0.0.1:{postgres.port}"]
    assert_loopback_only(postgres.pids())


def test_mlflow_server_over_postgres_keeps_4000_points_across_a_restart(
        postgres, start_mlflow_server):
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    server = start_mlflow_server(postgres.create_database(f"t_{uuid.uuid4().hex[:8]}"))
    assert_loopback_only(server.pids() | postgres.pids())
    client = MlflowClient(server.url)
    run_id = client.create_run(client.create_experiment("servers")).info.run_id
    keys = ["train_loss", "val_loss", "train_misclassification", "val_misclassification"]
    metrics = [Metric(key, 1.0 / step + k, 0, step)
               for k, key in enumerate(keys) for step in range(1, 1001)]
    client.log_batch(run_id, metrics=metrics)  # one call; the client sends 1,000 per request
    client.log_text(run_id, "proxied", "check/proxied.txt")
    assert [p.read_text() for p in server.artifacts.rglob("proxied.txt")] == ["proxied"]

    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
    server.start()
    assert server.url == url
    client = MlflowClient(server.url)
    for k, key in enumerate(keys):
        history = client.get_metric_history(run_id, key)
        assert sorted((m.step, m.value) for m in history) == [
            (step, 1.0 / step + k) for step in range(1, 1001)]
    client.set_terminated(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_two_node_ray_cluster_runs_a_task_on_each_node(ray_cluster, loopback_netns):
    import json

    report = json.loads(ray_cluster.python(RAY_NODES_AND_TASKS).strip().splitlines()[-1])
    assert len(report["alive"]) == 2
    assert sorted(report["ran_on"]) == sorted(report["alive"])
    assert_loopback_only(ray_cluster.pids(), loopback_netns)
