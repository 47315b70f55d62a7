"""The PostgreSQL server of the tests: `postgres_url()` or a skip that says why.

`.ci/run` installs PostgreSQL if it is missing, starts it, makes a role with a password
and its own database, and exports `HYPERGRAD_TEST_POSTGRES`, a URL with that password in
it. Elsewhere set it by hand to run these tests (any database you may write to):

    HYPERGRAD_TEST_POSTGRES=postgresql://me:secret@127.0.0.1:5432/scratch python -m pytest ...

Studies get unique names, so runs against one database never meet; `schema(url)` gives
a URL into a new, empty schema of the database (dropped afterwards), where Optuna has to
create its tables, as on a new database.
"""

import contextlib
import os
import uuid

import pytest

ENV = "HYPERGRAD_TEST_POSTGRES"


def postgres_url() -> str:
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(
            f"no PostgreSQL server: {ENV} is not set (.ci/run starts a server and sets it; "
            "see tests/_records_postgres.py to run these tests by hand)"
        )
    pytest.importorskip("psycopg", reason="the PostgreSQL tests need psycopg (the test extra)")
    return url


def password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).password or ""


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def schema(url: str):
    """A URL whose connections use a new empty schema; the schema is dropped on exit."""
    import sqlalchemy

    from hypergrad.records._storage import _postgres_driver

    name = unique("s").replace("-", "_")
    engine = sqlalchemy.create_engine(_postgres_driver(url, "the test database"))
    with engine.begin() as con:
        con.execute(sqlalchemy.text(f"CREATE SCHEMA {name}"))
    try:
        yield f"{url}?options=-csearch_path%3D{name}", name, engine
    finally:
        with engine.begin() as con:
            con.execute(sqlalchemy.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()
