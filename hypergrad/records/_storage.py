"""Opening Optuna storages, with errors that say what is wrong instead of SQLAlchemy tracebacks.

Interface: `open_storage(storage, must_exist=False) -> optuna.storages.BaseStorage`.

`storage` is one of:

- `None`: the SQLite file `hypergrad.db` in the working directory;
- a path ending in `.log`, `.journal` or `.jsonl`: Optuna's journal file storage
  (`JournalStorage(JournalFileBackend(path))`), which several processes may share on one
  file system without a database server;
- any other path: a SQLite file;
- a URL (`sqlite:///...`, `postgresql://...`, `mysql://...`): Optuna's RDB storage;
- an `optuna.storages.BaseStorage`: used as it is.

Invariant: every failure to open raises a `RecordsError` subclass whose message names the
storage; no SQLAlchemy or sqlite3 exception escapes.
"""

import os
from pathlib import Path

import optuna


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

# SQLite lets one writer at a time; other workers wait up to this many seconds for the
# lock instead of failing at once with "database is locked".
SQLITE_LOCK_TIMEOUT_S = 60


def describe_storage(storage) -> str:
    if isinstance(storage, optuna.storages.BaseStorage):
        return type(storage).__name__
    return repr(os.fspath(storage) if storage is not None else DEFAULT_STORAGE)


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
    msg = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    if isinstance(exc, RuntimeError) and "compatible with the table schema" in msg:
        return IncompatibleRecordError(
            f"{where}: the storage was written by an Optuna version whose schema this one "
            f"(optuna {optuna.__version__}) cannot read: {msg}"
        )
    return StorageError(f"cannot read storage {where}: {msg}")


def open_storage(storage=None, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """Open (or create, unless `must_exist`) an Optuna storage; see the module docstring."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, os.PathLike):
        storage = os.fspath(storage)
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str) or not storage:
        raise TypeError(f"storage must be a path, a URL or an Optuna storage, got {storage!r}")
    where = describe_storage(storage)
    if not _is_url(storage):
        path = Path(storage)
        if path.is_dir():
            raise StorageError(f"cannot use storage {where}: it is a directory, not a file")
        if must_exist and not path.exists():
            raise StorageError(f"no storage at {where}: the file does not exist")
    try:
        if not _is_url(storage) and storage.endswith(JOURNAL_SUFFIXES):
            from optuna.storages.journal import JournalFileBackend

            try:
                return optuna.storages.JournalStorage(JournalFileBackend(storage))
            except ValueError as e:  # json's errors, or Optuna's "Invalid log format."
                raise StorageError(
                    f"cannot read storage {where}: not an Optuna journal file ({e})"
                ) from None
        url = storage if _is_url(storage) else f"sqlite:///{Path(storage).resolve()}"
        kwargs = {}
        if url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except RecordsError:
        raise
    except (*_sqlalchemy_errors(), RuntimeError, OSError, ValueError) as e:
        raise translate(e, where) from None
    except Exception as e:  # a corrupt journal file fails while Optuna replays it
        raise StorageError(f"cannot read storage {where}: {type(e).__name__}: {e}") from None
