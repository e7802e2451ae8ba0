"""SQLite whose database file is made, and kept, mode 0600.

The file holds sessions, API key hashes and sealed passwords waiting to be revealed. sqlite3 would create it with the
process's umask (usually 0644: readable by every local user) and gives its -wal and -shm files the database's own
mode, so the file is made private before SQLite first opens it; one made earlier is tightened on the next connection.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from django.db.backends.sqlite3 import base

PRIVATE = 0o600


def make_private(name: str) -> None:
    if name == ":memory:" or name.startswith("file:"):
        return  # in memory, or a URI whose options this should not second-guess
    os.close(os.open(name, os.O_CREAT | os.O_RDONLY, PRIVATE))
    for path in (name, f"{name}-wal", f"{name}-shm"):
        try:
            if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
                os.chmod(path, PRIVATE)
        except FileNotFoundError:
            continue


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        make_private(str(conn_params["database"]))
        return super().get_new_connection(conn_params)
