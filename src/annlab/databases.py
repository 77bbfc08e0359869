"""Database URLs as annlab meets them (a tracking store, a server's backend store, a study's
storage), checked in seconds before a library spends minutes on them: the driver is installed,
the database answers, and whose tables it holds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL

from annlab.errors import AnnlabError

# What works with the packages annlab installs (requirements.lock).
OUT_OF_THE_BOX = "sqlite:///<path>, postgresql+psycopg://<user>@<host>:<port>/<database>"
CONNECT_TIMEOUT = 5  # seconds; the libraries' own retries take minutes to give up
MLFLOW_TABLES = {"experiments", "runs", "metrics", "alembic_version"}
# The PostgreSQL advisory lock held while a library makes its tables in a new database.
CREATING_LOCK = int.from_bytes(hashlib.sha256(b"annlab: creating tables").digest()[:8], "big",
                               signed=True)
CREATING_SECONDS = 120  # MLflow makes its tables in ~10 s; a holder this slow is stuck


class DatabaseError(AnnlabError):
    """A database URL that cannot be used; the message names it (without its password)."""


def redact(url: str) -> str:
    """The URL without its password, fit for printing."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def parse(url: str, key: str) -> URL:
    """The URL, its driver importable; else one line naming ``key``, the scheme, the missing
    module and what works out of the box."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect().import_dbapi()
    except ModuleNotFoundError as err:
        scheme = url.split(":", 1)[0]
        raise DatabaseError(f"{key}={redact(url)}: the scheme {scheme!r} needs the Python "
                            f"module {err.name!r}, which annlab does not install; out of the "
                            f"box: {OUT_OF_THE_BOX}") from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as err:
        raise DatabaseError(f"{key}={redact(url)} is not a database URL ({err}); allowed: "
                            f"{OUT_OF_THE_BOX}") from None
    return parsed


def tables(url: str, key: str) -> set[str]:
    """The tables the database holds (none for a sqlite file not made yet), found with one
    connection of at most CONNECT_TIMEOUT seconds; one line naming ``key`` if it does not
    answer."""
    parsed = parse(url, key)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or not Path(parsed.database).exists():
            return set()
        connect_args = {}
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT}
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as err:  # any driver's error: its first line is what the user needs
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise DatabaseError(f"cannot use {key}={redact(url)}: "
                            f"{reason[0] if reason else type(err).__name__}") from None
    finally:
        engine.dispose()


def holds_mlflow(names: set[str]) -> bool:
    """Whether these tables are an MLflow tracking store's."""
    return names >= MLFLOW_TABLES


def check_mlflow_or_empty(url: str, key: str) -> set[str]:
    """The tables of a database MLflow is to use as its store: none yet, or MLflow's (all of
    them, or some while MLflow makes them). Any other (an Optuna storage, an application's
    database) is refused before MLflow writes its tables into it."""
    names = tables(url, key)
    ours = names & MLFLOW_TABLES - {"alembic_version"} or any(
        name.startswith("_alembic_tmp_") for name in names)
    if names and (not ours or {"studies", "trials"} <= names):
        whose = ("an Optuna study storage" if {"studies", "trials"} <= names else
                 "tables that are not MLflow's: " + ", ".join(sorted(names)[:5]) +
                 (", ..." if len(names) > 5 else ""))
        raise DatabaseError(f"{key}={redact(url)} holds {whose}, not an MLflow store; "
                            "annlab wrote nothing into it")
    return names


def create_if_missing(url: str, key: str) -> bool:
    """Create a PostgreSQL database that does not exist yet (through the server's maintenance
    database ``postgres``, with the URL's own user); True if it did. Any refusal (no such
    server, no right to create) is left for :func:`tables` to report."""
    parsed = parse(url, key)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return False
    engine = sqlalchemy.create_engine(parsed.set(database="postgres"),
                                      connect_args={"connect_timeout": CONNECT_TIMEOUT},
                                      isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                            {"name": parsed.database}).first():
                return False
            name = engine.dialect.identifier_preparer.quote(parsed.database)
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
            return True
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


@contextmanager
def creating(url: str, key: str) -> Iterator[None]:
    """Held while a library opens the database at ``url`` and makes its tables if they are not
    there yet. Two processes making them at once (two people's first `make tune`, two runs on a
    new store) collide in PostgreSQL's catalog and one fails (a duplicate ``pg_type`` row): in
    PostgreSQL this is an advisory lock, which every host using the database shares, held by a
    transaction of its own for at most CREATING_SECONDS. Other databases: nothing (a sqlite
    file is made under a lock file beside it)."""
    parsed = parse(url, key)
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with engine.connect() as conn:  # closing it ends the transaction, releasing the lock
            conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{CREATING_SECONDS}s'"))
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": CREATING_LOCK})
            except sqlalchemy.exc.OperationalError:
                raise DatabaseError(f"{key}={redact(url)}: another process has been making "
                                    f"its tables for {CREATING_SECONDS} s; once it is done "
                                    "(or stopped), rerun") from None
            yield
    finally:
        engine.dispose()
