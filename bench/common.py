"""What every benchmark shares: timing side by side, the result rows, a resolved config,
a command run as a user runs it."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROWS: list[tuple[str, str, str, str, str]] = []  # benchmark, annlab, baseline, value, target
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # pipelines/ and tests/servers.py, as `make` runs them from here


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    return min(_timed(fn) for _ in range(repeats))


def best_of_pair(ours: Callable[[], object], baseline: Callable[[], object], repeats: int
                 ) -> tuple[float, float]:
    """Alternate the two, so that a slow spell of the (shared, virtual) machine hits both."""
    pairs = [(_timed(ours), _timed(baseline)) for _ in range(repeats)]
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, ours: float, baseline: float, target: float | None,
           baseline_name: str = "baseline") -> None:
    """A ratio against a baseline measured in the same run."""
    ratio = ours / baseline
    verdict = "" if target is None else "ok" if ratio <= target else "MISSED"
    print(f"{name:<40} ours {ours:8.3f} s   {baseline_name} {baseline:8.3f} s   "
          f"ratio {ratio:6.3f}   {'' if target is None else f'target <= {target}'}  {verdict}",
          flush=True)
    ROWS.append((name, f"{ours:.3g} s", f"{baseline:.3g} s ({baseline_name})", f"{ratio:.3f}",
                 "(reported)" if target is None else f"<= {target} {verdict}"))


def resolved(*overrides: str):
    """The default config with ``overrides``, resolved."""
    from hydra import compose, initialize_config_dir

    import pipelines  # noqa: F401  (registers the config schema)
    from annlab.spec import resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return resolve(compose(config_name="config", overrides=list(overrides)))


def moons(noise: float):
    """The default data (raw coordinates) at ``noise``."""
    return resolved(f"data.noise={noise}", "data.standardize=false").data


def cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
         without: str = "") -> float:
    """Wall seconds of ``python -m pipelines.run <args>`` (with the start-up settings in
    ``without`` switched off: bench/without.py); stops the benchmarks if it fails."""
    return measured(*args, env=env, prefix=prefix, without=without)[0]


def measured(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
              without: str = "", started: Callable[[int], object] | None = None,
              entry: list[str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of ``python -m pipelines.run <args>`` (or of
    ``python <entry> <args>``); ``started(pid)`` is called as soon as it runs. The peak is the
    process's own (:class:`PeakSampler`)."""
    import subprocess

    if entry is None:
        entry = ([str(REPO / "bench" / "without.py"), without] if without
                 else ["-m", "pipelines.run"])
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*prefix, sys.executable, *entry, *args],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                env=env)
        peak = PeakSampler(proc.pid)
        if started is not None:
            started(proc.pid)
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        peak.stop()
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"`{' '.join(entry)} {' '.join(args)}` failed:\n{err.read()[-3000:]}")
    return wall, peak.mb


class PeakSampler:
    """One process's peak resident memory: its VmHWM (which only grows), read every 20 ms
    while it runs. Not wait4's ru_maxrss: Linux carries the high-water mark of the process
    that exec'd it over, so a child of this (large) process would report this one's peak."""

    def __init__(self, pid: int) -> None:
        self.mb, self._stop = 0.0, threading.Event()

        def sample() -> None:
            while True:
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.mb = max(self.mb, int(line.split()[1]) / 1024)
                if self._stop.wait(0.02):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def target(name: str, value: float, unit: str, limit: float | None, note: str = "") -> None:
    """A value against a fixed limit (None: reported only)."""
    verdict = "" if limit is None else "ok" if value <= limit else "MISSED"
    print(f"{name:<40} {value:8.2f} {unit:<4} "
          f"{'' if limit is None else f'target <= {limit:g} {unit}'}  {verdict}  {note}",
          flush=True)
    ROWS.append((name, f"{value:.3g} {unit}", note, "",
                 "(reported)" if limit is None else f"<= {limit:g} {unit} {verdict}"))


def cpu_seconds(pids: set[int]) -> dict[int, float]:
    """User + system CPU seconds each live process of ``pids`` has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended since it was listed
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def wait_idle(limit: float, deadline: float) -> float:
    """The 1-minute load average once it is at most ``limit`` (others' tests, or our own
    previous command, decaying), waiting until ``deadline`` (monotonic) at most."""
    while (load := os.getloadavg()[0]) > limit and time.monotonic() < deadline:
        print(f"load {load:.2f} > {limit}: waiting for an idle machine", flush=True)
        time.sleep(15)
    return load


@contextlib.contextmanager
def grid_planner() -> Iterator[tuple[Callable[[list[str]], object], list[str], object]]:
    """What a sweep's launching process plans a grid with: ``plan(arguments)`` (annlab's
    sweeper composing each point as its launcher will), the default sweep's axes as overrides,
    and Hydra's config loader and composed sweep config."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import pipelines  # noqa: F401  (the schema)
    from hydra_plugins.annlab_sweeper._compose import compose_jobs
    from hydra_plugins.annlab_sweeper._grid import plan

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = compose(config_name="config", overrides=["sweep=default"],
                         return_hydra_config=True)
        sweeper = SimpleNamespace(compose_all=lambda pts: compose_jobs(loader, master, pts))
        line = [f"{k}={v}" for k, v in master.hydra.sweeper.params.items()]
        yield (lambda arguments: plan(sweeper, [*arguments, "sweep=default"])), line, \
            (loader, master)
