"""Passwords out of everything the library writes or prints.

Interface: `mask_secrets(text) -> str` replaces the password of every URL in `text`
(`scheme://user:PASSWORD@host...`) by `***`.

Invariant: a storage URL reaches a record, a log line, a report or an error message only
through this function, so a password typed into a URL (`postgresql://me:pw@db/runs`)
stays where the user typed it. A password need not be typed at all: PostgreSQL's client
library reads it from `PGPASSWORD` or from a `~/.pgpass` file (`PGPASSFILE` names
another) when the URL has none.
"""

import re

# user: anything up to ':' without '/', '@' or spaces; password: up to the last '@' before
# the host (a password with '@' in it must be percent-encoded in a URL anyway).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^@\s'\"]*@")


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`.

    Example:
      >>> mask_secrets("cannot open 'postgresql+psycopg://ana:s3cret@db:5432/runs'")
      "cannot open 'postgresql+psycopg://ana:***@db:5432/runs'"
      >>> mask_secrets("sqlite:///runs.db and postgresql://ana@db/runs have none")
      'sqlite:///runs.db and postgresql://ana@db/runs have none'
    """
    return _URL_PASSWORD.sub(r"\1***@", text)
