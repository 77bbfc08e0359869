"""What a lab's grid costs (issue 32): whole sweeps, run as a user runs them into fresh stores,
against their compute floor and their peers.

    python bench/bench.py scale          # 1,000 configs into the embedded store
    python bench/bench.py scale-server   # 200 configs through `mlflow server` on PostgreSQL
    python bench/bench.py peer           # the default 27-config sweep: floor, the usual way

The compute floor of a grid: the fits its jobs make (each config's network trained on its own
splits with per-epoch validation, as a job trains it, without data, figures, tracking or
start-up), timed one after another in this process right after the sweep, divided by the
joblib launcher's worker count (one per core, 2 here): what the sweep would take if its
workers did nothing but train. Training's share of a sweep is that floor over its wall.

`python bench/scale.py <overrides>` is the peer (:func:`peer_job`): the same grid written the
usual way, as a Hydra app with Hydra's own sweeper and joblib launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO, grid_planner, measured, report, target, wait_idle

RATES = [f"{0.01 * 200 ** (i / 24):.3g}" for i in range(25)]  # 0.01 to 2, log-spaced
GRID = ["data=moons,circles", "model.activation=tanh,relu", "model.hidden_nodes=range(1,11)",
        f"train.learning_rate={','.join(RATES)}", "train.epochs=300"]  # 2 x 2 x 10 x 25
SERVER_GRID = [*GRID[:3], f"train.learning_rate={','.join(RATES[::6])}", GRID[4]]  # x 5: 200
WORKERS = 2  # the joblib launcher's default: one per core
LAUNCHER = "127.0.0.2"  # the source address of the launching process's requests (Relay)
ACCESS = re.compile(r'(\d+\.\d+\.\d+\.\d+):\d+ - "(\w+) (\S+) HTTP/[\d.]+" (\d+)')


# --- one sweep, and what it left ------------------------------------------------------------

@dataclass
class Sweep:
    """A sweep's wall, the launching process's peak memory, and its store afterwards."""

    wall: float
    peak_mb: float  # the launching process's own (common.PeakSampler)
    started: float  # epoch seconds, just before the command
    loads: tuple[float, float]  # 1-minute load average at its start and end
    runs: list = field(default_factory=list)  # MLflow Run objects, parent first
    children: list = field(default_factory=list)

    @property
    def finished(self) -> int:
        return sum(r.info.status == "FINISHED" for r in self.children)

    @property
    def first_job(self) -> float:
        """Seconds from the command's start to the first child run's start."""
        return min(r.info.start_time for r in self.children) / 1000 - self.started

    def timeline(self) -> dict[str, float]:
        """Where the wall went, from the runs' own start and end times: before the first run
        started, after the last one ended, and in between the worker slots' seconds inside
        runs and outside any (a worker between jobs, or waiting for a part's last job)."""
        starts = [r.info.start_time / 1000 for r in self.children]
        ends = [r.info.end_time / 1000 for r in self.children]
        inside = sum(e - s for s, e in zip(starts, ends))
        middle = max(ends) - min(starts)
        return {"before": min(starts) - self.started,
                "after": self.started + self.wall - max(ends),
                "inside": inside, "between": WORKERS * middle - inside}


def sweep(args: list[str], uri: str, sweep_dir: str, started=lambda pid: None) -> Sweep:
    """``make sweep`` with ``args`` into ``uri`` (joblib launcher), as a user runs it, after
    waiting (a minute at most) for the machine to quieten; ``started(pid)`` as it starts."""
    start_load = wait_idle(1.0, time.monotonic() + 60)
    begun = time.time()
    wall, peak_mb = measured("sweep=default", "hydra/launcher=joblib", *args,
                             f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}",
                             started=started)
    return Sweep(wall, peak_mb, begun, (start_load, os.getloadavg()[0]))


def read_runs(result: Sweep, uri: str) -> Sweep:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("annlab")
    token, runs = None, []
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000,
                                  page_token=token)
        runs += page
        if not (token := page.token):
            break
    result.children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    result.runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags] + result.children
    return result


def artifact_bytes(root: Path, parent_id: str) -> tuple[int, Counter]:
    """Bytes under an artifact root, the parent run's own excluded; and by kind (a run's
    file, its step images, its model's files)."""
    kinds: Counter = Counter()
    for path in root.rglob("*"):
        if not path.is_file() or parent_id in path.parts:
            continue
        parts = path.relative_to(root).parts
        kind = ("model" if "models" in parts else "images" if "images" in parts
                else parts[-1])
        kinds[kind] += path.stat().st_size
    return sum(kinds.values()), kinds


def per_run_note(kinds: Counter, runs: int) -> str:
    return ", ".join(f"{kind} {size / runs / 1000:.0f}" for kind, size in kinds.most_common()
                     if size / runs >= 500)


def report_sweep(name: str, result: Sweep, floor: tuple[float, float], store_bytes: int,
                 art: int, kinds: Counter, wall_limit: float | None = None,
                 first_job_limit: float | None = None) -> None:
    """The rows every large sweep gets (``floor``: :func:`compute_floor`'s)."""
    n, (floor, floor_load) = len(result.children), floor
    times = result.timeline()
    target(f"{name}: wall per config", result.wall / n, "s", wall_limit,
           f"{n} configs in {result.wall:.0f} s, {result.finished} finished; 1-minute load "
           f"{result.loads[0]:.1f} at its start, {result.loads[1]:.1f} at its end")
    target(f"{name}: ratio to the compute floor", result.wall / floor, "x", None,
           f"floor {floor:.1f} s: the {n} fits with per-epoch validation, one process, "
           f"{WORKERS * floor:.1f} s, over {WORKERS} workers, at load {floor_load:.1f}; "
           f"training's share of the wall {100 * floor / result.wall:.0f} %")
    target(f"{name}: where the wall goes", result.wall, "s", None,
           f"before the first run {times['before']:.1f} s, after the last {times['after']:.1f} "
           f"s; worker-seconds inside runs {times['inside']:.0f} (of which training "
           f"{WORKERS * floor:.0f}), between runs {times['between']:.0f}")
    target(f"{name}: time to the first job", result.first_job, "s", first_job_limit,
           "from the command's start to the first child run's start_time")
    target(f"{name}: launching process peak RSS", result.peak_mb, "MB", None,
           "its own VmHWM, read every 20 ms")
    target(f"{name}: artifact bytes per run", art / n / 1000, "KB", None,
           "KB a run: " + per_run_note(kinds, n))
    target(f"{name}: store size per run", store_bytes / n / 1000, "KB", 300,
           f"database and artifacts, the parent's summary included, {store_bytes / 1e6:.0f} "
           f"MB over {n} child runs")


# --- the compute floor ---------------------------------------------------------------------

def compute_floor(arguments: list[str]) -> tuple[float, float]:
    """Seconds the grid's fits take in this process, over the workers (see the module); and
    the 1-minute load average when they started."""
    from annlab.pipeline import build_data, build_model

    with grid_planner() as (plan, line, _):
        grid = plan([*line, *arguments])
    splits, seconds, load = {}, 0.0, os.getloadavg()[0]
    for spec in grid.specs:
        if (key := repr((spec.data, spec.seed))) not in splits:
            splits[key] = build_data(spec).scaled()
        s, model = splits[key], build_model(spec)
        start = time.perf_counter()
        with contextlib.suppress(FloatingPointError):  # a diverging config fails as its job
            model.fit(s.X_train, s.y_train, eval_set=(s.X_val, s.y_val))
        seconds += time.perf_counter() - start
    return seconds / WORKERS, load


# --- requests through the server -----------------------------------------------------------

class Relay:
    """A TCP relay on loopback in front of the tracking server that tells the launching
    process's requests from the jobs': each connection it accepts goes on upstream on its own
    connection, from 127.0.0.2 when the launching process opened it (the socket is among that
    process's open files when it is accepted), else from 127.0.0.1. The server's access log,
    which names each request's client address, then says whose it was. It costs each request
    about half a millisecond more (two hops, in Python): the sweep timed against the embedded
    store goes to the server directly."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.launcher, self.port = upstream, 0, 0
        self.connections: Counter = Counter()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)  # connections still open: cut them
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def _relay(self, reader, writer) -> None:
        port = writer.get_extra_info("peername")[1]
        source = LAUNCHER if _opened_by(self.launcher, port, self.port) else "127.0.0.1"
        self.connections[source] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream, local_addr=(source, 0))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader, writer) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


def _opened_by(pid: int, port: int, relay_port: int) -> bool:
    """Whether process ``pid`` holds the loopback TCP socket from ``port`` to the relay."""
    ends = f"0100007F:{port:04X} 0100007F:{relay_port:04X}"
    inodes = {f"socket:[{line.split()[9]}]" for line in Path("/proc/net/tcp").read_text()
              .splitlines()[1:] if " ".join(line.split()[1:3]) == ends}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
    return False


def requests_by_endpoint(log: str) -> dict[str, Counter]:
    """Lines of the server's access log as requests by client address and endpoint (``PUT
    artifacts``, ``POST runs/log-batch``, ...; ids and query strings left out)."""
    found: dict[str, Counter] = {}
    for line in log.splitlines():
        if match := ACCESS.search(line):
            address, method, path, _ = match.groups()
            path = path.split("?")[0].removeprefix("/api/2.0/")
            path = re.sub(r"^mlflow-artifacts/artifacts/.*", "artifacts", path)
            path = re.sub(r"m-[0-9a-f]{32}|[0-9a-f]{32}|/\d+(?=/|$)", "<id>", path)
            found.setdefault(address, Counter())[f"{method} {path.removeprefix('mlflow/')}"] += 1
    return found


# --- the benchmarks ------------------------------------------------------------------------

def into_embedded(args: list[str], tmp: str, schema_first: bool = False
                  ) -> tuple[Sweep, int, int, Counter]:
    """A sweep into a fresh embedded store in ``tmp`` (its schema made first when
    ``schema_first``, as a server's database is), its runs read back; the store's bytes (the
    database file and every artifact) and the child runs' artifact bytes, also by kind."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    if schema_first:
        from annlab import tracking

        tracking.open(uri, "warm-up")
    result = read_runs(sweep(args, uri, f"{tmp}/sweep"), uri)
    root = Path(tmp) / "mlartifacts"
    art, kinds = artifact_bytes(root, result.runs[0].info.run_id)
    store = sum(p.stat().st_size for p in [*Path(tmp).glob("mlflow.db*"), *root.rglob("*")]
                if p.is_file())
    return result, store, art, kinds


def bench_scale() -> None:
    """A 1,000-config grid (2 datasets x 2 activations x 10 hidden sizes x 25 learning rates,
    300 epochs) through `make sweep` into a fresh embedded store: wall per config, its ratio
    to the compute floor, time to the first job, the launching process's peak memory, artifact
    and store bytes per run."""
    with tempfile.TemporaryDirectory() as tmp:
        result, store, art, kinds = into_embedded(GRID, tmp)
    report_sweep("scale: 1,000 configs, embedded", result, compute_floor(GRID), store, art,
                 kinds, wall_limit=0.2, first_job_limit=5)


def bench_scale_server() -> None:
    """A 200-config grid (the 1,000's with 5 of its learning rates) into a fresh embedded store
    and through `mlflow server` on PostgreSQL (both started here, on loopback), each into an
    empty store whose schema exists: the server sweep's wall against the embedded one's; then
    again through the server, its jobs reaching it through :class:`Relay`, for the server's
    requests per child run by endpoint and the launching process's per job."""
    from tests.servers import Postgres

    with tempfile.TemporaryDirectory() as tmp:
        embedded, *_ = into_embedded(SERVER_GRID, tmp, schema_first=True)
    postgres = Postgres().start()
    try:
        served = through_server(postgres, "direct", relayed=False)
        relayed = through_server(postgres, "relayed", relayed=True)
    finally:
        postgres.stop()
    n = len(relayed.sweep.children)
    jobs = relayed.clients.get("127.0.0.1", Counter())
    launcher = relayed.clients.get(LAUNCHER, Counter())
    report("scale-server: server / embedded, 200 configs", served.sweep.wall, embedded.wall,
           1.3, "embedded")
    target("scale-server: requests per child run", sum(jobs.values()) / n, "", 25,
           ", ".join(f"{k} {v / n:.3g}" for k, v in jobs.most_common()))
    target("scale-server: launching process, requests per job", sum(launcher.values()) / n,
           "", 1, f"{sum(launcher.values())} for {n} jobs: "
           + ", ".join(f"{k} {v}" for k, v in launcher.most_common())
           + f" (connections: {relayed.connections[LAUNCHER]} its, "
             f"{relayed.connections['127.0.0.1']} the jobs'; that sweep, through the relay, "
             f"took {relayed.sweep.wall:.1f} s)")
    target("scale-server: server and PostgreSQL, CPU", served.cpu, "s", None,
           f"CPU seconds they used during the server sweep ({served.sweep.wall:.0f} s)")
    report_sweep("scale-server: 200 configs, server", served.sweep, compute_floor(SERVER_GRID),
                 served.store, served.art, served.kinds)


@dataclass
class ServerSweep:
    sweep: Sweep
    clients: dict[str, Counter]  # requests by client address and endpoint
    connections: Counter  # through the relay, by source address
    cpu: float  # seconds, the server's and PostgreSQL's during the sweep
    store: int  # bytes: the database and the artifacts
    art: int  # bytes of the child runs' artifacts
    kinds: Counter  # the latter by kind


def through_server(postgres, database: str, relayed: bool) -> ServerSweep:
    """A SERVER_GRID sweep through a new `mlflow server` on a new database of ``postgres``
    (its schema made first), directly or through a :class:`Relay`; what it cost the server."""
    from common import cpu_seconds

    from annlab import tracking
    from tests.servers import MlflowServer

    with tempfile.TemporaryDirectory() as tmp:
        server = MlflowServer(postgres.create_database(database), Path(tmp) / "s",
                              env={"PYTHONUNBUFFERED": "1"})  # each access line at once
        server.start()
        relay = Relay(server.port) if relayed else None
        try:
            tracking.open(server.url, "warm-up")
            logged = server.log.stat().st_size
            before = cpu_seconds(server.pids() | postgres.pids())
            result = sweep(SERVER_GRID, relay.url if relay else server.url, f"{tmp}/sweep",
                           lambda pid: relay and setattr(relay, "launcher", pid))
            after = cpu_seconds(server.pids() | postgres.pids())
            with server.log.open("rb") as log:  # before this process asks anything
                log.seek(logged)
                clients = requests_by_endpoint(log.read().decode(errors="replace"))
            read_runs(result, server.url)
            with postgres.connect(database) as conn:
                store = conn.execute("SELECT pg_database_size(current_database())"
                                     ).fetchone()[0]
            art, kinds = artifact_bytes(server.artifacts, result.runs[0].info.run_id)
            store += sum(p.stat().st_size for p in server.artifacts.rglob("*") if p.is_file())
        finally:
            if relay is not None:
                relay.close()
            server.stop()
    return ServerSweep(result, clients, relay.connections if relay else Counter(),
                       sum(after[p] - before.get(p, 0.0) for p in after), store, art, kinds)


def bench_peer(pairs: int = 2) -> None:
    """The default 27-config `make sweep` into fresh embedded stores, against its compute floor
    and against the same grid written the usual way (:func:`peer_job`), alternating."""
    walls: dict[str, list[float]] = {"annlab": [], "peer": []}
    for _ in range(pairs):
        with tempfile.TemporaryDirectory() as tmp:
            walls["annlab"].append(sweep([], f"sqlite:///{tmp}/mlflow.db", f"{tmp}/sweep").wall)
        with tempfile.TemporaryDirectory() as tmp:
            walls["peer"].append(peer_sweep(tmp))
    (floor, load), ours = compute_floor([]), min(walls["annlab"])
    report("peer: 27-config sweep / the usual way", ours, min(walls["peer"]), None,
           "the usual way")
    target("peer: 27-config sweep / its compute floor", ours / floor, "x", 10,
           f"floor {floor:.2f} s (27 fits, {WORKERS * floor:.2f} s in one process at load "
           f"{load:.1f}, over {WORKERS} workers); walls: "
           + "; ".join(f"{k} {', '.join(f'{w:.1f}' for w in v)} s" for k, v in walls.items()))


# --- the peer: the same grid, the usual way ------------------------------------------------

@dataclass
class PeerConfig:
    uri: str = "???"
    activation: str = "tanh"
    hidden: int = 10
    lr: float = 0.5
    alpha: float = 0.01
    epochs: int = 1000
    n_samples: int = 1000
    noise: float = 0.2
    seed: int = 0


def peer_sweep(tmp: str) -> float:
    """Wall seconds of the default grid the usual way into a fresh sqlite store: the store and
    the experiment (its artifacts beside the store) made first by one process (parallel jobs
    creating them would race), then Hydra's multirun on its joblib launcher (default settings:
    a loky worker per core)."""
    from hydra import compose, initialize_config_dir

    import pipelines  # noqa: F401  (the schema)
    from annlab.spec import resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        master = compose(config_name="config", overrides=["sweep=default"],
                         return_hydra_config=True)
        spec = resolve(compose(config_name="config"))
    axes = {"activation": "model.activation", "hidden": "model.hidden_nodes",
            "lr": "train.learning_rate"}
    uri = f"sqlite:///{tmp}/mlflow.db"
    wait_idle(1.0, time.monotonic() + 60)
    made, _ = measured(uri, f"{tmp}/mlruns", entry=[
        "-c", "import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
        "mlflow.create_experiment('peer', artifact_location=sys.argv[2])"])
    wall, _ = measured("-m", "hydra/launcher=joblib", f"uri={uri}",
                       f"hydra.sweep.dir={tmp}/sweep",
                       *(f"{k}={master.hydra.sweeper.params[v]}" for k, v in axes.items()),
                       f"alpha={spec.train.reg_lambda}", f"epochs={spec.train.epochs}",
                       f"n_samples={spec.data.shape.n_samples}",
                       f"noise={spec.data.settings['noise']}", f"seed={spec.seed}",
                       entry=[str(REPO / "bench" / "scale.py")])
    return made + wall


def peer_job(cfg) -> None:
    """One config the usual way: moons split 60/20/20 (stratified) and standardised,
    scikit-learn's MLPClassifier (full-batch SGD, no momentum, L2 ``alpha``) trained one epoch
    a ``partial_fit`` with the four curves recorded each epoch (training loss, training and
    validation misclassification, validation log-loss: from ``predict_proba`` with numpy, a
    millisecond an epoch less than ``score`` and ``sklearn.metrics.log_loss``), then one run:
    params and every curve point in one ``log_batch``, and ``mlflow.sklearn.log_model``
    (MLflow's default serialisation, skops, with the one type it asks to trust)."""
    import mlflow
    import numpy as np
    from mlflow.entities import Metric, Param
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = make_moons(cfg.n_samples, noise=cfg.noise, random_state=cfg.seed)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=0.6, stratify=y,
                                                        random_state=cfg.seed)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5,
                                                    stratify=y_rest, random_state=cfg.seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
    activation = {"sigmoid": "logistic"}.get(cfg.activation, cfg.activation)
    clf = MLPClassifier((cfg.hidden,), activation=activation, solver="sgd", momentum=0.0,
                        learning_rate_init=cfg.lr, alpha=cfg.alpha, batch_size=len(X_train),
                        shuffle=False, random_state=cfg.seed)
    curves: dict[str, list[float]] = {"train_loss": [], "train_misclassification": [],
                                      "val_loss": [], "val_misclassification": []}
    status = "FINISHED"
    for _ in range(cfg.epochs):
        try:
            clf.partial_fit(X_train, y_train, classes=[0, 1])
        except ValueError:  # scikit-learn's "non-finite parameter weights"
            status = "FAILED"
            break
        curves["train_loss"].append(clf.loss_)
        train, val = clf.predict_proba(X_train), clf.predict_proba(X_val)
        curves["train_misclassification"].append(np.mean(train.argmax(1) != y_train))
        curves["val_loss"].append(-np.mean(np.log(val[np.arange(len(y_val)), y_val])))
        curves["val_misclassification"].append(np.mean(val.argmax(1) != y_val))
    mlflow.set_tracking_uri(cfg.uri)
    mlflow.set_experiment("peer")
    with mlflow.start_run(run_name=f"{cfg.activation}-h{cfg.hidden}-lr{cfg.lr:g}") as run:
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(v), now, step) for key, values in curves.items()
                   for step, v in enumerate(values, 1)]
        if status == "FINISHED":
            metrics += [Metric(f"{split}_accuracy", clf.score(X_, y_), now, 0) for split, X_, y_
                        in (("train", X_train, y_train), ("val", X_val, y_val),
                            ("test", X_test, y_test))]
        params = [Param(key, str(value)) for key, value in cfg.items() if key != "uri"]
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics, params=params)
        if status == "FINISHED":  # skops, MLflow's default, names the type it must trust
            mlflow.sklearn.log_model(clf, name="model", skops_trusted_types=[
                "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"])
        else:
            mlflow.end_run(status)


def peer_main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="peer", node=PeerConfig)
    hydra.main(version_base="1.3", config_path=None, config_name="peer")(peer_job)()


if __name__ == "__main__":
    peer_main()
