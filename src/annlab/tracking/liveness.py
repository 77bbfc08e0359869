"""Whether the process writing a run still lives: who writes it, a heartbeat, and the verdict.

A process that is killed with SIGKILL, crashes or loses its machine cannot close its run. Each
run therefore names its writer (host, boot, pid, start: ``annlab.process``) and renews a
heartbeat; a later process tells from them whether the run was abandoned.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from annlab import names

HEARTBEAT_SECONDS = 60
SHARED = "shared"  # annlab.process of a run that several processes write (a study's parent)
STALE_AFTER_SECONDS = 10 * HEARTBEAT_SECONDS  # a run on another machine silent this long died


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from a later one that reuses its pid (start time) or a rebooted
    machine (boot id)."""

    host: str
    boot: str
    pid: int
    started: str  # clock ticks after boot, from /proc/<pid>/stat

    def __str__(self) -> str:
        return f"{self.host} {self.boot} {self.pid} {self.started}"

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        parts = (text or "").split(" ")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    @classmethod
    def current(cls) -> ProcessId:
        return cls(socket.gethostname(), _boot_id(), os.getpid(), _started(os.getpid()))

    def alive(self) -> bool | None:
        """True or False on the machine that ran it; None (cannot tell) elsewhere."""
        if self.host != socket.gethostname():
            return None
        return self.boot == _boot_id() and self.started == _started(self.pid)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").strip()


def _started(pid: int) -> str:
    stat = _read(f"/proc/{pid}/stat")  # the command name (field 2) may hold spaces: skip it
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def written_here(tags: dict[str, str]) -> bool:
    """Whether the run's writer is this process or one it started (a job's worker)."""
    writer = ProcessId.parse(tags.get(names.PROCESS, ""))
    if writer is None or not writer.alive():
        return False
    pid = writer.pid
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            pid = int(_read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1])  # its parent
        except (IndexError, ValueError):
            return False
    return False


def writer_tags() -> dict[str, str]:
    """Tags naming this process as a run's writer, its heartbeat renewed now."""
    return {names.PROCESS: str(ProcessId.current()), names.HEARTBEAT: str(int(time.time()))}


def abandoned(tags: dict[str, str], now: float) -> str | None:
    """Why the RUNNING run with these tags has no live writer, or None if it may have one (or
    was not written by annlab, so nothing tells)."""
    writer = tags.get(names.PROCESS)
    if writer is None:
        return None
    process = ProcessId.parse(writer)
    alive = process.alive() if process is not None else None
    if alive is None:  # another machine, or shared by several: judge by the heartbeat
        alive = now - float(tags.get(names.HEARTBEAT) or 0) < STALE_AFTER_SECONDS
    if alive:
        return None
    who = (f"its process (pid {process.pid} on {process.host})" if process
           else "the processes writing it")
    return (f"{who} ended without closing the run: killed with SIGKILL, crashed, or its "
            "machine was lost; closed the next time annlab opened the store")


@contextmanager
def heartbeat(renew: Callable[[str], None]) -> Iterator[None]:
    """While inside, call ``renew(unix time)`` every HEARTBEAT_SECONDS from a daemon thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            # A missed beat is no failure; the run itself reports a store that went away.
            with suppress(Exception):
                renew(str(int(time.time())))

    threading.Thread(target=beat, daemon=True, name="heartbeat").start()
    try:
        yield
    finally:
        stop.set()
