"""Django's SQLite backend, keeping the database file readable by its owner alone (see base.py)."""
