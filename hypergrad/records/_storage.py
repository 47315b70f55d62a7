"""Opening Optuna storages, with errors that say what is wrong instead of SQLAlchemy tracebacks.

Interface: `open_storage(storage, must_exist=False, read_only=False) -> BaseStorage`;
`describe_storage(storage) -> str` is how every message names a storage.

`storage` is one of:

- `None`: the SQLite file `hypergrad.db` in the working directory;
- a path ending in `.log`, `.journal` or `.jsonl`: Optuna's journal file storage, which
  several processes may share on one file system without a database server;
- any other path: a SQLite file;
- a URL (`sqlite:///...`, `postgresql://user@host/db`, `mysql://...`): Optuna's RDB
  storage. A `postgresql://` URL uses psycopg2 if it is installed, else psycopg 3
  (`pip install 'hypergrad-jax[postgres]'`); the password may stay out of the URL, where
  PostgreSQL's client library finds it in `PGPASSWORD` or a `~/.pgpass` file;
- an `optuna.storages.BaseStorage`: used as it is.

Invariants:

- Every failure to open raises a `RecordsError` subclass whose message names the storage,
  says what was found there and what was expected; no SQLAlchemy, sqlite3, json or Optuna
  assertion error escapes. Names and messages never show a URL's password (`***`).
- `read_only=True` writes nothing, not even a schema into an empty file: SQLite files
  open in SQLite's read-only mode, journal files are only read, a PostgreSQL session is
  read-only, no table is created, and a write raises `StorageError`.
- Every trial created through a storage opened here (not one passed in as an object)
  carries its worker's host and pid from its first write, whoever creates it (Optuna's
  `study.ask` included), so a restart can tell a dead worker's trial from a live one.
"""

import copy
import importlib.util
import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from ._environment import PID_ATTR, worker
from ._masking import mask_secrets


class RecordsError(Exception):
    """A record cannot be read or written; the message says which and why."""


class StorageError(RecordsError):
    """The storage cannot be opened or read."""


class StudyNotFoundError(RecordsError, KeyError):
    """No study of that name in the storage."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class IncompatibleRecordError(RecordsError):
    """The record was written by a version this one cannot read."""


DEFAULT_STORAGE = "hypergrad.db"
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
_EXPECTED = "an Optuna SQLite file, or a journal file named *.log, *.journal or *.jsonl"
_SQLITE_HEADER = b"SQLite format 3\x00"

# SQLite lets one writer at a time; other workers wait up to this many seconds for the
# lock instead of failing at once with "database is locked".
SQLITE_LOCK_TIMEOUT_S = 60


def describe_storage(storage) -> str:
    """How messages name `storage`: its path or URL, quoted, password masked."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return type(storage).__name__
    return mask_secrets(repr(os.fspath(storage) if storage is not None else DEFAULT_STORAGE))


def _is_url(s: str) -> bool:
    return "://" in s


def _sqlalchemy_errors() -> tuple[type[BaseException], ...]:
    try:
        import sqlalchemy.exc
    except ImportError:  # only the journal storage is usable then
        return ()
    return (sqlalchemy.exc.SQLAlchemyError,)


def translate(exc: BaseException, where: str) -> RecordsError:
    """A `RecordsError` for an exception raised by Optuna or its database layer."""
    # Optuna wraps the database's error ("An exception is raised during the commit"):
    # the driver's own message, at the bottom of the chain, says what happened.
    root = exc
    while getattr(root, "orig", None) is None and root.__cause__ is not None:
        root = root.__cause__
    msg = mask_secrets(str(getattr(root, "orig", None) or root).splitlines()[0])
    if isinstance(exc, RuntimeError) and "compatible with the table schema" in msg:
        return IncompatibleRecordError(
            f"{where}: the storage was written by an Optuna version whose schema this one "
            f"(optuna {optuna.__version__}) cannot read: {msg}"
        )
    if "file is not a database" in msg:
        return StorageError(
            f"cannot read storage {where}: it is not a SQLite database; expected {_EXPECTED}"
        )
    if "no such table" in msg or ("relation" in msg and "does not exist" in msg):
        return StorageError(
            f"cannot read storage {where}: the database has no Optuna tables ({msg}); "
            "it is not an Optuna storage"
        )
    return StorageError(f"cannot read storage {where}: {msg}")


# -- the trial's worker from its first write --------------------------------------------


def _with_worker(template):
    if template is None:
        return optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=worker())
    if template.state == TrialState.RUNNING and PID_ATTR not in template.user_attrs:
        template = copy.deepcopy(template)
        template.user_attrs = {**worker(), **template.user_attrs}
    return template


class _RDBStorage(optuna.storages.RDBStorage):
    # Optuna's cache in front of an RDB storage calls `_create_new_trial` directly, and
    # `create_new_trial` goes through it too; tests/test_records.py checks both paths.
    def _create_new_trial(self, study_id, template_trial=None):
        return super()._create_new_trial(study_id, _with_worker(template_trial))

    def write_trial(self, trial_id: int, intermediate, user_attrs) -> None:
        """A running trial's intermediate values (`{step: value}`) and user attributes
        in one transaction and a few statements, where Optuna's API commits each and
        looks the trial up again for each (a tuner's member writes its curve: that was
        most of a round's bookkeeping). Written through Optuna's table models;
        tests/test_records.py reads the result back through Optuna."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        values = models.TrialIntermediateValueModel
        attrs = models.TrialUserAttributeModel
        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            have = {v.step: v for v in session.query(values).filter(values.trial_id == trial_id)}
            for step, value in intermediate.items():
                stored, kind = values.intermediate_value_to_stored_repr(value)
                row = have.get(step)
                if row is None:
                    row = values(trial_id=trial_id, step=step)
                    session.add(row)
                row.intermediate_value, row.intermediate_value_type = stored, kind
            have = {a.key: a for a in session.query(attrs).filter(attrs.trial_id == trial_id)}
            for key, value in user_attrs.items():
                row = have.get(key)
                if row is None:
                    row = attrs(trial_id=trial_id, key=key)
                    session.add(row)
                row.value_json = json.dumps(value)


class _JournalStorage(JournalStorage):
    def create_new_trial(self, study_id, template_trial=None):
        return super().create_new_trial(study_id, _with_worker(template_trial))


class _CheckedJournal(BaseJournalBackend):
    """Optuna's journal file, read line by line with checks, appended to by Optuna's backend.

    Optuna's own reader skips a last line that is not JSON and its replay asserts on an
    operation it does not know, so a text file reads as a journal of no studies and a
    newer journal fails with a bare `AssertionError`; here both are errors that say so.
    Read-only, it never opens the file for writing (Optuna's backend creates it).
    """

    def __init__(self, path: str, where: str, read_only: bool):
        from optuna.storages.journal._storage import JournalOperation

        self._path, self._where = path, where
        self._known = {int(op) for op in JournalOperation}
        self._writer = None if read_only else JournalFileBackend(path)
        self._next = (0, 0)  # (log number, byte offset) of the first line not yet read

    def _parse(self, line: bytes, number: int) -> dict:
        try:
            log = json.loads(line)
        except ValueError:  # json's errors and bad UTF-8
            log = None
        if not isinstance(log, dict) or not isinstance(log.get("op_code"), int):
            raise StorageError(
                f"cannot read storage {self._where}: it is not an Optuna journal file (line "
                f"{number} is {line[:60]!r}, not a JSON object with an op_code); expected "
                "a journal written by Optuna's JournalStorage"
            )
        if log["op_code"] not in self._known:
            raise StorageError(
                f"cannot read storage {self._where}: line {number} of the journal has "
                f"op_code {log['op_code']}, which optuna {optuna.__version__} does not "
                "know (a journal written by a newer Optuna? upgrade optuna to read it)"
            )
        return log

    def read_logs(self, log_number_from: int):
        number, offset = self._next if log_number_from >= self._next[0] else (0, 0)
        with open(self._path, "rb") as f:
            f.seek(offset)
            data = f.read()
        *lines, tail = data.split(b"\n")
        for line in lines:
            number, offset = number + 1, offset + len(line) + 1
            self._next = (number, offset)
            if number > log_number_from:
                yield self._parse(line, number)
        # A last line without its newline is a write in progress, unless it cannot be one.
        if tail.strip() and not tail.lstrip().startswith(b"{"):
            self._parse(tail, number + 1)

    def append_logs(self, logs) -> None:
        if self._writer is None:
            raise StorageError(f"storage {self._where} was opened read-only")
        self._writer.append_logs(logs)


# -- opening ---------------------------------------------------------------------------


def _check_sqlite_file(path: Path, where: str, read_only: bool) -> None:
    if not path.is_file():
        return
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_HEADER))
    if not head:
        if read_only:
            raise StorageError(
                f"cannot read storage {where}: it is an empty file, not an Optuna storage "
                f"(expected {_EXPECTED}); it was left as it is"
            )
        return  # an empty file is an empty SQLite database: the first run fills it
    if head != _SQLITE_HEADER:
        raise StorageError(
            f"cannot read storage {where}: it is not a SQLite database (it begins "
            f"{head!r}); expected {_EXPECTED}"
        )
    if read_only:
        try:
            with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as con:
                tables = {r[0] for r in con.execute("select name from sqlite_master")}
            con.close()
        except sqlite3.Error as e:
            raise StorageError(f"cannot read storage {where}: {e}") from None
        if "studies" not in tables:
            raise StorageError(
                f"cannot read storage {where}: it is a SQLite database without Optuna's "
                f"tables (it has {sorted(tables) or 'none'}); expected an Optuna storage"
            )


def _postgres_driver(url: str, where: str) -> str:
    """`url` with a PostgreSQL driver that is installed (SQLAlchemy defaults to psycopg2)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername not in ("postgresql", "postgres"):
        return url
    for module in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(module) is not None:
            return u.set(drivername=f"postgresql+{module}").render_as_string(hide_password=False)
    raise StorageError(
        f"cannot open storage {where}: it is a PostgreSQL URL and no PostgreSQL driver is "
        "installed: pip install 'hypergrad-jax[postgres]' (psycopg)"
    )


def _open_rdb(url: str, where: str, read_only: bool) -> optuna.storages.RDBStorage:
    url = _postgres_driver(url, where)
    kwargs: dict = {}
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).resolve()
            if read_only and not path.exists():
                raise StorageError(f"no storage at {where}: the file does not exist")
            _check_sqlite_file(path, where, read_only)
            if read_only:
                url = f"sqlite:///file:{quote(str(path))}?mode=ro&uri=true"
    elif url.startswith("postgresql") and read_only:
        from sqlalchemy.engine import make_url

        # connect_args replace the URL's own `options` (a search_path, say): keep them.
        given = make_url(url).query.get("options", "")
        given = " ".join(given) if isinstance(given, tuple) else given
        options = f"{given} -c default_transaction_read_only=on".strip()
        kwargs = {"connect_args": {"options": options}}
    return _RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=read_only)


def open_storage(
    storage=None, must_exist: bool = False, read_only: bool = False
) -> optuna.storages.BaseStorage:
    """Open (or create, unless `must_exist` or `read_only`) a storage; see the module docstring."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str) or not storage:
        raise TypeError(f"storage must be a path, a URL or an Optuna storage, got {storage!r}")
    where = describe_storage(storage)
    must_exist = must_exist or read_only
    if not _is_url(storage):
        path = Path(storage)
        if path.is_dir():
            raise StorageError(f"cannot use storage {where}: it is a directory, not a file")
        if must_exist and not path.exists():
            raise StorageError(f"no storage at {where}: the file does not exist")
    try:
        if not _is_url(storage) and storage.endswith(JOURNAL_SUFFIXES):
            return _JournalStorage(_CheckedJournal(storage, where, read_only))
        url = storage if _is_url(storage) else f"sqlite:///{Path(storage).resolve()}"
        return _open_rdb(url, where, read_only)
    except RecordsError:
        raise
    except (
        *_sqlalchemy_errors(),
        optuna.exceptions.StorageInternalError,
        RuntimeError,
        OSError,
        ValueError,
    ) as e:
        raise translate(e, where) from None
    except Exception as e:  # a journal Optuna cannot replay fails with its assertions
        raise StorageError(
            f"cannot read storage {where}: Optuna could not read it "
            f"({type(e).__name__}: {mask_secrets(str(e))})"
        ) from None
