"""The user's own data in files: a table (CSV or Parquet, read by pandas' pyarrow engine) checked
before any run exists, and the splits of any dataset written out as such files (`make data`).

A table is read once per process (:func:`read` caches it by the file's identity) and refused in
one line naming the file, and the column or the value, when annlab cannot use it as it is:
missing, unreadable or empty, an unknown column, a feature that is not numeric (annlab encodes
nothing silently), missing values, more than the memory bound allows. Its digest is of its
content (columns, values, labels), not of its path or its bytes: the same table under another
name, or written another way, is the same data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from annlab.config import ConfigError

READERS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}
SPLIT_FILES = {"train": "train", "validation": "validation", "test": "test"}  # make data


class DataError(ConfigError):
    """A data file annlab cannot use as it is; the message names the file and what is wrong."""

    def __init__(self, key: str, value: object, problem: str):
        super().__init__(key, value, problem, f"{key}={str(value)!r}: {problem}")


@dataclass(frozen=True)
class Table:
    """A checked table: its file (absolute) and content digest, its feature columns, the
    feature rows as float64 and the labels as the target column holds them."""

    path: Path
    sha256: str
    features: tuple[str, ...]
    target: str
    X: np.ndarray
    y: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y)


def absolute(value: str) -> Path:
    """A data path as the user gave it, relative ones against the directory they ran from."""
    return Path(os.path.abspath(os.path.expanduser(value)))


def read(key: str, value: str, target: str, features: tuple[str, ...] | None,
         budget: int) -> Table:
    """The table at ``value`` (the config key ``key`` names it), checked; the target column's
    labels and the feature columns (``features``, else every other column) as arrays."""
    path = absolute(value)
    try:
        stat = path.stat()
    except OSError as err:
        raise DataError(key, value, f"{err.strerror.lower()} ({path})") from None
    if not path.is_file():
        raise DataError(key, value, f"not a file ({path})")
    if path.suffix.lower() not in READERS:
        raise DataError(key, value, "a CSV (.csv) or Parquet (.parquet) file is allowed")
    if stat.st_size == 0:
        raise DataError(key, value, "the file is empty")
    if 3 * stat.st_size > budget:  # its bytes, then the parsed table and its arrays
        raise DataError(key, value, f"{stat.st_size / 2**30:.1f} GiB is over the memory bound "
                        f"of {budget / 2**30:.1f} GiB (half of this machine's memory) for its "
                        "bytes and arrays")
    return _read(key, value, path, stat.st_mtime_ns, stat.st_size, target, features)


@lru_cache(maxsize=4)
def _read(key: str, value: str, path: Path, mtime_ns: int, size: int, target: str,
          features: tuple[str, ...] | None) -> Table:
    """:func:`read`'s work, once per file identity (path, time and size) and columns."""
    import pyarrow  # pandas' reader engine: imported with it, only when a file is read

    try:
        frame = (pd.read_csv(path, engine="pyarrow") if READERS[path.suffix.lower()] == "CSV"
                 else pd.read_parquet(path))
        # The reader's buffers are freed but kept by pyarrow's allocator: handed back, the
        # arrays made below reuse that memory instead of adding to the peak.
        pyarrow.default_memory_pool().release_unused()
    except OSError as err:
        raise DataError(key, value, f"cannot read it: {err.strerror or err}") from None
    except Exception as err:  # the reader's own error: its first line says what it met
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(key, value, f"cannot read it as {READERS[path.suffix.lower()]}: "
                        f"{reason}") from None
    return _checked(key, value, path, frame, target, features)


def _checked(key: str, value: str, path: Path, frame: pd.DataFrame, target: str,
             features: tuple[str, ...] | None) -> Table:
    """The parsed table, refused if annlab cannot use it as it is."""
    if frame.empty:
        raise DataError(key, value, "the file holds no rows" if len(frame.columns) else
                        "the file is empty")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if target not in columns:
        raise DataError(key, value, f"no column data.target={target!r}; its columns: "
                        f"{', '.join(columns)}")
    chosen = list(features) if features else [c for c in columns if c != target]
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        raise DataError(key, value, f"no column {', '.join(map(repr, unknown))} (data.features);"
                        f" its columns: {', '.join(columns)}")
    if target in chosen:
        raise DataError(key, value, f"the target column {target!r} cannot also be a feature")
    if not chosen:
        raise DataError(key, value, f"no feature column beside the target {target!r}")
    text = [c for c in chosen if not pd.api.types.is_numeric_dtype(frame[c])
            or pd.api.types.is_bool_dtype(frame[c])]
    if text:
        raise DataError(key, value, f"feature columns that are not numbers: "
                        f"{', '.join(map(repr, text))} (annlab encodes nothing itself: encode or "
                        "drop them, or choose data.features)")
    missing = frame.isna().sum()[[*chosen, target]]  # no copy of the selected columns
    if missing.any():
        counts = ", ".join(f"{c!r}: {n}" for c, n in missing.items() if n)
        raise DataError(key, value, f"missing values ({counts}); annlab fills none: drop or "
                        "impute them first")
    X = np.ascontiguousarray(frame[chosen].to_numpy(dtype=np.float64))  # as generated data
    if not np.isfinite(X).all():
        column = chosen[int(np.flatnonzero(~np.isfinite(X).all(axis=0))[0])]
        raise DataError(key, value, f"column {column!r} holds an infinite value")
    y = labels(frame[target])
    return Table(path, digest(chosen, target, X, y), tuple(chosen), target, X, y)


def digest(features: list[str], target: str, X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of a table's content as annlab uses it: its columns' names, the feature values
    and the labels (not of its file's bytes: the same table written otherwise is the same)."""
    h = hashlib.sha256(repr((list(features), target, y.dtype.str, X.shape)).encode())
    for array in (X, y):  # their memory as it is: no copy
        h.update(np.ascontiguousarray(array).view(np.uint8))
    return h.hexdigest()


def labels(column: pd.Series) -> np.ndarray:
    """The target column's values as labels: integers (whole floats too) or text."""
    values = column.to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        return values
    return values.astype(str)


def write_splits(splits, features: list[str], target: str, out_dir: Path) -> dict[str, Path]:
    """Each split of ``splits`` (raw features, as made) as a CSV file with a header: the feature
    columns, then the target; floats written so that they read back to the same bits. Each file
    appears whole or not at all (written beside it, then renamed over it): a run reading it
    meanwhile, or two `make data` at once, never meet half a file, and an interrupted write
    leaves the earlier file as it was."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, (X, y) in splits.by_context().items():
        frame = pd.DataFrame(X, columns=features)
        frame[target] = y
        written[split] = out_dir / f"{SPLIT_FILES[split]}.csv"
        part = written[split].with_name(f".{written[split].name}.{os.getpid()}.part")
        try:
            frame.to_csv(part, index=False)
            os.replace(part, written[split])
        finally:
            part.unlink(missing_ok=True)
    return written
