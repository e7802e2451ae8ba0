"""Production mode refuses the development secrets; secrets may come from files.

settings.py is read once per process, so each case starts a fresh interpreter with its own environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
# Prints what the settings decided, or the error that stopped them.
PROBE = "import django; django.setup(); from django.conf import settings; print(settings.{name})"


def _clean_environment(**overrides: str) -> dict[str, str]:
    # Nothing from the calling shell (a developer's own SECRET_KEY, CI's DATABASE_URL) may decide the outcome.
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "PASSWORD_ENCRYPTION_KEYS", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
        and key != "AUDIT_KEYS"
        and not key.endswith("_FILE")
    }
    environment["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    environment.update(overrides)
    return environment


def _settings(name: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)],
        cwd=ROOT,
        env=_clean_environment(**environment),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _production(**extra: str) -> dict[str, str]:
    environment = {
        "DEBUG": "0",
        "SECRET_KEY": "a-production-secret-key-" + "x" * 40,
        "PASSWORD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_KEYS": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "portal.example.com",
    }
    environment.update(extra)
    return environment


def test_it_starts_in_development_with_no_environment() -> None:
    result = _settings("DEBUG")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_it_refuses_the_development_secret_key_in_production() -> None:
    environment = _production()
    del environment["SECRET_KEY"]
    result = _settings("DEBUG", **environment)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_it_refuses_the_development_encryption_key_in_production() -> None:
    environment = _production()
    del environment["PASSWORD_ENCRYPTION_KEYS"]
    result = _settings("DEBUG", **environment)
    assert result.returncode != 0
    assert "ImproperlyConfigured: PASSWORD_ENCRYPTION_KEYS must be set when DEBUG is off." in result.stderr


def test_it_refuses_the_development_encryption_key_beside_a_real_one() -> None:
    from portal.settings import DEV_ENCRYPTION_KEY

    keys = f"{Fernet.generate_key().decode()},{DEV_ENCRYPTION_KEY}"
    result = _settings("DEBUG", **_production(PASSWORD_ENCRYPTION_KEYS=keys))
    assert result.returncode != 0
    assert "PASSWORD_ENCRYPTION_KEYS must be set when DEBUG is off." in result.stderr


def test_it_refuses_production_without_audit_keys() -> None:
    environment = _production()
    del environment["AUDIT_KEYS"]
    result = _settings("DEBUG", **environment)
    assert result.returncode != 0
    assert "ImproperlyConfigured: AUDIT_KEYS must be set when DEBUG is off" in result.stderr


@pytest.mark.parametrize(
    "keys", ["too-short-to-be-a-key", "{good},too-short-to-be-a-key", "{good},{dev}", " , "], ids=str.strip
)
def test_it_refuses_weak_or_development_audit_keys_in_production(keys: str) -> None:
    from portal.settings import DEV_AUDIT_KEY

    keys = keys.format(good=secrets.token_urlsafe(32), dev=DEV_AUDIT_KEY)
    result = _settings("DEBUG", **_production(AUDIT_KEYS=keys))
    assert result.returncode != 0
    assert "AUDIT_KEYS must be set when DEBUG is off" in result.stderr


def test_it_reads_audit_keys_newest_first_from_a_file(tmp_path: Path) -> None:
    newest, older = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    keys_file = tmp_path / "audit_keys"
    keys_file.write_text(f"{newest},{older}\n")
    environment = _production(AUDIT_KEYS_FILE=str(keys_file))
    del environment["AUDIT_KEYS"]
    result = _settings("AUDIT_KEYS", **environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([newest, older])


def test_it_starts_in_production_with_proper_secrets() -> None:
    result = _settings("DEBUG", **_production())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_it_passes_the_system_checks_in_production() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_clean_environment(**_production()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_it_reads_secrets_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("a-secret-key-from-a-file-" + "y" * 40 + "\n")
    keys_file = tmp_path / "encryption_keys"
    key = Fernet.generate_key().decode()
    keys_file.write_text(key + "\n")
    environment = _production(SECRET_KEY_FILE=str(secret_file), PASSWORD_ENCRYPTION_KEYS_FILE=str(keys_file))
    # The files must win over the variables themselves, which here hold values that would be refused.
    environment["SECRET_KEY"] = "ignored"
    del environment["PASSWORD_ENCRYPTION_KEYS"]

    result = _settings("SECRET_KEY, settings.PASSWORD_ENCRYPTION_KEYS", **environment)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{'a-secret-key-from-a-file-' + 'y' * 40} {[key]}"


def test_it_reads_the_database_url_from_a_file(tmp_path: Path) -> None:
    url_file = tmp_path / "database_url"
    url_file.write_text("postgres://portal:from-a-file@db.example.com:5432/portal\n")
    result = _settings("DATABASES['default']['HOST']", DATABASE_URL_FILE=str(url_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "db.example.com"


def test_it_refuses_a_weak_secret_key_in_production() -> None:
    for weak in ["short-but-random-Xk3f9", "ab" * 40]:  # under 50 characters; under 5 distinct ones
        result = _settings("DEBUG", **_production(SECRET_KEY=weak))
        assert result.returncode != 0
        assert "ImproperlyConfigured: SECRET_KEY is too weak" in result.stderr


def test_it_refuses_an_encryption_key_that_is_not_a_fernet_key_in_production() -> None:
    keys = f"{Fernet.generate_key().decode()},not-a-fernet-key"
    result = _settings("DEBUG", **_production(PASSWORD_ENCRYPTION_KEYS=keys))
    assert result.returncode != 0
    assert "ImproperlyConfigured: PASSWORD_ENCRYPTION_KEYS: key 2 is not a Fernet key" in result.stderr


def test_it_makes_the_sqlite_database_readable_by_its_owner_alone(tmp_path: Path) -> None:
    environment = _clean_environment(PORTAL_VAR_DIR=str(tmp_path))

    def write(statement: str) -> None:
        code = "import django; django.setup(); from django.db import connection; "
        code += f"connection.cursor().execute({statement!r})"
        # A permissive umask, as a service manager may leave it: the file must be private all the same.
        result = subprocess.run(
            ["sh", "-c", 'umask 022 && exec "$0" -c "$1"', sys.executable, code],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr

    write("CREATE TABLE t (x)")
    database = tmp_path / "portal.sqlite3"
    for path in [database, *tmp_path.glob("portal.sqlite3-*")]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path.name

    # One made earlier, world-readable, is tightened on the next connection.
    database.chmod(0o644)
    write("INSERT INTO t VALUES (1)")
    assert oct(database.stat().st_mode & 0o777) == oct(0o600)


def test_it_bounds_a_worker_shutdown() -> None:
    result = _settings("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT")
    assert result.returncode == 0, result.stderr
    assert 0 < float(result.stdout) <= 60


def test_it_prices_random_reads_for_ssds_on_postgresql_unless_told_otherwise() -> None:
    url = "postgres://portal@db.example.com:5432/portal"
    result = _settings("DATABASES['default']['OPTIONS']", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert "-c random_page_cost=1.1" in result.stdout
    kept = _settings("DATABASES['default'].get('OPTIONS')", DATABASE_URL=url, DB_RANDOM_PAGE_COST="")
    assert kept.stdout.strip() in ("None", "{}"), kept.stdout
    refused = _settings("DATABASES", DATABASE_URL=url, DB_RANDOM_PAGE_COST="fast")
    assert refused.returncode != 0 and "DB_RANDOM_PAGE_COST must be a number" in refused.stderr
