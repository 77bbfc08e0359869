"""Where a run came from: git state, package versions, lock file and platform."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from threadpoolctl import threadpool_info

from annlab.paths import REPO_ROOT

LOCK_FILE = REPO_ROOT / "requirements.lock"
KEY_PACKAGES = ("numpy", "scipy", "scikit-learn", "matplotlib", "pillow", "pandas",
                "hydra-core", "omegaconf", "mlflow")


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool
    diff: str | None  # against the commit, tracked files only, when dirty


@dataclass(frozen=True)
class Provenance:
    """What a tracked run records about its origin (tracking turns it into tags and files)."""

    config_hash: str
    entry_point: str  # what made it, e.g. pipelines/run.py
    user: str
    git: GitState
    lock_hash: str | None
    platform: dict
    packages: dict[str, str]

    def environment(self) -> dict:
        """The ``environment.json`` record."""
        return {"git": {"commit": self.git.commit, "dirty": self.git.dirty},
                "lock_hash": self.lock_hash, "packages": self.packages,
                "platform": self.platform, "executable": sys.executable}


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (containers)
        return str(os.getuid())


def collect(config_hash: str, entry_point: str) -> Provenance:
    return Provenance(config_hash, entry_point, user(), git_state(), file_hash(LOCK_FILE),
                      platform_info(), package_versions())


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> GitState:
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status and status.strip())
    return GitState(commit, dirty, _git("diff", "HEAD") if dirty else None)


def file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


@cache
def platform_info() -> dict:
    """What decides the last bits of numpy's results: CPU, SIMD kernels, BLAS build."""
    from numpy._core._multiarray_umath import __cpu_features__

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())
    # numpy's own BLAS only: which other libraries threadpoolctl sees depends on what happens
    # to be imported yet, and the fingerprint must not.
    blas = [{k: lib.get(k) for k in ("internal_api", "version", "architecture")}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", "")]
    info = {
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": cpu,
        "numpy_simd": sorted(k for k, on in __cpu_features__.items() if on),
        "blas": blas,
    }
    info["fingerprint"] = hashlib.sha256(json.dumps(info, sort_keys=True).encode()
                                         ).hexdigest()[:16]
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


@cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
