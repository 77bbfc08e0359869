"""A tracking store as this process opens it: its URI checked, a new sqlite file created whole,
a server asked whether it answers, one MLflow client per store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from functools import cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import ExclusiveFileLock
from requests.adapters import HTTPAdapter
from sqlalchemy.exc import SQLAlchemyError
from urllib3.util import Retry

from annlab import databases
from annlab.errors import AnnlabError
from annlab.paths import tracking_uri

SCHEMA_WAIT_SECONDS = 60  # for another client's migrations of a store it is creating
SCHEMA_STILL_SECONDS = 3  # a schema unchanged this long is no one's migration under way
file_lock = ExclusiveFileLock  # MLflow's flock-based lock, for other stores' first creation
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


class TrackingError(AnnlabError):
    """The tracking store cannot be used; the message says which and why."""


resolve_uri = tracking_uri  # what every command opens: see annlab.paths.tracking_uri


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (rather than a database the process opens)."""
    return urlparse(uri).scheme in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    return (Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///")
            else None)


def first_line(err: BaseException) -> str:
    """An exception in one line, for messages."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.strip().splitlines()[0]


def duplicate_row(err: BaseException) -> bool:
    """A uniqueness violation, as a database or a server relaying it words it."""
    text = str(err).lower()
    return any(m in text for m in ("unique constraint", "uniqueviolation", "duplicate key",
                                   "duplicate entry"))  # sqlite, PostgreSQL, MySQL


T = TypeVar("T")


def once_more_if_raced(call: Callable[[], T]) -> T:
    """``call()``, made once more when it broke a uniqueness that another process's insert had
    just taken: MLflow looks a row up, then inserts it if missing, so two processes writing the
    same row at once collide, and the second try finds the row."""
    try:
        return call()
    except MlflowException as err:
        if not duplicate_row(err):
            raise
        return call()


@cache
def _client(uri: str) -> MlflowClient:
    """One client per store and process: opening a sqlite store costs about a second."""
    return MlflowClient(uri)


def _check_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in STORE_SCHEMES or (scheme == "sqlite" and not uri.startswith("sqlite:///")):
        raise TrackingError(f"tracking URI {uri!r} is not a tracking store; allowed: "
                            "sqlite:///<path>, http(s)://<mlflow server>, "
                            "postgresql+psycopg://..., mysql://..., mssql://...")


def _check_database(uri: str) -> set[str]:
    """A database MLflow would open itself: its driver installed and the database answering,
    told in seconds (MLflow retries for minutes). Returns its tables."""
    try:
        return databases.check_mlflow_or_empty(uri, "tracking URI")
    except databases.DatabaseError as err:
        raise TrackingError(f"{err}; or point it at an mlflow server: http(s)://<host>:<port>"
                            ) from None


def _check_server(uri: str, patient: bool = False) -> None:
    """Whether the server answers: asked once, so that a command fails within seconds when
    nothing does; or, ``patient``, within the retry window MLflow's own client gives every
    call (its MLFLOW_HTTP_REQUEST_* settings), so that a job starting while a server restarts
    waits for it as its calls would."""
    session = requests.Session()
    if patient:
        from mlflow.environment_variables import (
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
            MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        )

        retry = Retry(total=MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
                      backoff_factor=MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
                      backoff_jitter=MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get(),
                      status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None)
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
    try:
        session.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(f"tracking server {uri} is unreachable ({type(err).__name__}); "
                            "start it or point MLFLOW_TRACKING_URI elsewhere") from err
    finally:
        session.close()


def build_whole(target: Path, build) -> None:
    """Make ``target`` with ``build(path)`` beside it and rename it into place, under a lock:
    several processes may ask at once, and a half-built file must never be left at ``target``."""
    if target.exists():
        return
    with file_lock(f"{target}.lock"):
        if target.exists():
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _empty_store() -> Path:
    """A new, empty store of this MLflow version, made once by MLflow's own schema migrations
    (seconds) and copied for every new store after it (a millisecond)."""
    from mlflow.version import VERSION

    cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "annlab"
    template = cache_dir / f"mlflow-{VERSION}-empty.db"
    cache_dir.mkdir(parents=True, exist_ok=True)
    build_whole(template, lambda tmp: MlflowClient(f"sqlite:///{tmp}").search_experiments(
        max_results=1))
    return template


def _copy_empty_store(tmp: Path, db: Path) -> None:
    """The empty store copied to ``tmp``, to be renamed ``db``: its Default experiment keeps
    its artifacts beside ``db``, like every experiment annlab creates (the template's points
    into the directory the template was built from)."""
    shutil.copyfile(_empty_store(), tmp)
    with closing(sqlite3.connect(tmp)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    ((db.parent / "mlartifacts").as_uri(),))


def _schema(db: Path) -> tuple[frozenset[str], str | None] | None:
    """The store's tables and its schema's alembic version; None while it cannot be read."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            tables = frozenset(r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"))
            version = (con.execute("SELECT version_num FROM alembic_version").fetchone()
                       if "alembic_version" in tables else None)
            return tables, version[0] if version else None
    except sqlite3.OperationalError as err:  # locked by a writer now, or not there
        if "locked" in str(err):
            return None
        raise


@cache
def _head() -> str | None:
    """The schema version this MLflow makes (its empty store's)."""
    return (_schema(_empty_store()) or (frozenset(), None))[1]


def _wait_while_made_elsewhere(db: Path) -> None:
    """Another MLflow client (the UI, a notebook) creating or upgrading the store in place
    runs its migrations one by one: a second client migrating beside it breaks both. Wait
    while the schema is short of this MLflow's and still changing (or cannot be read), for
    SCHEMA_WAIT_SECONDS at most; a schema that stays as it is goes on to be judged."""
    deadline, seen, since = time.monotonic() + SCHEMA_WAIT_SECONDS, None, time.monotonic()
    while True:
        try:
            state = _schema(db)
        except sqlite3.Error:  # no database at all: judged next
            return
        if state is not None:
            tables, version = state
            making = any(t.startswith("_alembic_tmp_") for t in tables)
            if (version == _head() and not making) or (  # done, or another program's tables
                    tables and not making and not tables & databases.MLFLOW_TABLES - {
                        "alembic_version"}):
                return
        now = time.monotonic()
        if state != seen:
            seen, since = state, now
        elif state is not None and now - since > SCHEMA_STILL_SECONDS:
            return
        if now > deadline:
            raise TrackingError(f"tracking store {db} is still being created or upgraded by "
                                f"another program after {SCHEMA_WAIT_SECONDS} s; try again "
                                "once it has finished")
        time.sleep(0.2)


def _open_sqlite(db: Path, uri: str) -> None:
    """Create a new store whole or not at all; refuse, in seconds, a file that is no store.

    Several processes may open a new store at once (two terminals, a script): one copies it
    into place under a lock, the others wait and use it. Building it in place could leave a
    half-built file behind that breaks every later run.
    """
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            build_whole(db, lambda tmp: _copy_empty_store(tmp, db))
    except (OSError, MlflowException, SQLAlchemyError) as err:
        raise TrackingError(f"cannot create the tracking store {db}: {first_line(err)}"
                            ) from err
    _wait_while_made_elsewhere(db)
    try:
        databases.check_mlflow_or_empty(uri, "tracking URI")
    except databases.DatabaseError as err:
        raise TrackingError(f"{err}; set tracking.uri or MLFLOW_TRACKING_URI to another "
                            "store (a new file is created)") from None
    if not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        raise TrackingError(f"tracking store {db} cannot be written (read-only file system or "
                            "no permission); copy it somewhere writable and set tracking.uri "
                            "/ MLFLOW_TRACKING_URI to the copy")


class Store:
    """One tracking store (a sqlite file or a server) as this process sees it."""

    def __init__(self, uri: str, job: bool = False):
        """``job``: a sweep's job, whose launching process has found the store already: a
        server is not asked first (MLflow's own retries wait out a restart on the first call
        instead)."""
        self.uri = uri
        _check_uri(uri)
        new = False
        if is_server(uri):
            if not job:
                _check_server(uri)
        elif (db := sqlite_path(uri)) is not None:
            _open_sqlite(db, uri)
        elif urlparse(uri).scheme != "databricks":
            new = not databases.holds_mlflow(_check_database(uri))
        try:
            if new:  # MLflow makes its tables as its client opens the store
                with databases.creating(uri, "tracking URI"):
                    self.client = _client(uri)
            else:
                self.client = _client(uri)
        except (MlflowException, SQLAlchemyError) as err:  # e.g. a schema of an older MLflow
            raise TrackingError(f"tracking store {uri}: {first_line(err)}") from err

    def check_reachable(self, consequence: str, cause: BaseException | None = None,
                        patient: bool = False) -> None:
        """For a server store: raise :class:`TrackingError` (naming the server and
        ``consequence``) if it does not answer, at once instead of spending MLflow's retry
        window on each further call, or (``patient``) after that window once."""
        if is_server(self.uri):
            try:
                _check_server(self.uri, patient)
            except TrackingError as err:
                raise TrackingError(f"{err}; {consequence}") from (cause or err)
