"""Database URLs checked in seconds: the driver, the answer, whose tables; never a password."""

import sqlite3

import pytest

from annlab import databases


def test_a_password_is_never_printed():
    assert databases.redact("postgresql+psycopg://me:hunter2@db:5432/x") == \
        "postgresql+psycopg://me:***@db:5432/x"
    assert databases.redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


@pytest.mark.parametrize("url, expected", [
    ("mysql://me@db/x", "needs the Python module 'MySQLdb'"),
    ("nonsense", "is not a database URL"),
])
def test_an_unusable_url_is_one_line_naming_the_key(url, expected):
    with pytest.raises(databases.DatabaseError, match=expected) as info:
        databases.parse(url, "tune.storage")
    assert str(info.value).startswith("tune.storage=") and "\n" not in str(info.value)


def test_tables_says_whose_database_it_is(tmp_path):
    assert databases.tables(f"sqlite:///{tmp_path / 'none.db'}", "k") == set()  # not made yet
    db = tmp_path / "x.db"
    with sqlite3.connect(db) as con:
        for name in ("experiments", "runs", "metrics", "alembic_version"):
            con.execute(f"CREATE TABLE {name} (x)")
    found = databases.tables(f"sqlite:///{db}", "k")
    assert databases.holds_mlflow(found) and not databases.holds_mlflow({"studies", "trials"})
