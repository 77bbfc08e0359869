"""Where a run came from: git state, package versions, lock file and platform."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from threadpoolctl import threadpool_info

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = REPO_ROOT / "requirements.lock"
KEY_PACKAGES = ("numpy", "scipy", "scikit-learn", "matplotlib", "pillow", "pandas",
                "hydra-core", "omegaconf", "mlflow")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> dict:
    """Commit, dirty flag and, when dirty, the diff against the commit (tracked files)."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status and status.strip())
    return {"commit": commit, "dirty": dirty, "diff": _git("diff", "HEAD") if dirty else None}


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


def environment(git: dict) -> dict:
    """Everything recorded with a run about its environment, given its :func:`git_state`."""
    return {
        "git": {"commit": git["commit"], "dirty": git["dirty"]},
        "lock_hash": file_hash(LOCK_FILE),
        "packages": package_versions(),
        "platform": platform_info(),
        "executable": sys.executable,
    }
