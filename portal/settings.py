"""Settings for the ACR Access Portal.

One file, driven by environment variables. Every default is safe for a laptop: SQLite under var/, a filesystem
Celery broker, console e-mail and the local ACR emulator only when asked for. Production sets DEBUG=0 and must then
provide its own SECRET_KEY and PASSWORD_ENCRYPTION_KEYS; it refuses to start with the development ones.
A setting may also be read from a file named by NAME_FILE (Docker and Kubernetes secrets).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))


def env(name: str, default: str = "") -> str:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = env(name, "1" if default else "0").strip().lower()
    return value in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = env(name, "")
    return int(value) if value else default


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# Development values, refused when DEBUG is off.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdef"
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZmVybmV0LWtleS0wMTI="

DEBUG = envbool("DEBUG", True)
SECRET_KEY = env("SECRET_KEY", DEV_SECRET_KEY)
# Fernet keys for passwords waiting to be revealed. Kept apart from SECRET_KEY so that a leaked session key does
# not also open the vault. Comma-separated: the first encrypts, all decrypt (rotation with MultiFernet).
PASSWORD_ENCRYPTION_KEYS = envlist("PASSWORD_ENCRYPTION_KEYS", DEV_ENCRYPTION_KEY)


def weak_secret_key(key: str) -> bool:
    """Django's own deploy check (security.W009): fewer than 50 characters or fewer than 5 distinct ones."""
    return len(key) < 50 or len(set(key)) < 5


def invalid_fernet_keys(keys: list[str]) -> list[int]:
    """Positions (from 1) of the keys Fernet would refuse: each must be 32 url-safe base64-encoded bytes."""
    from cryptography.fernet import Fernet

    invalid = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            invalid.append(position)
    return invalid


if not DEBUG:
    if SECRET_KEY == DEV_SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # A warning from `check --deploy` is easy to miss; a short key signs every session, so refuse to start instead.
    if weak_secret_key(SECRET_KEY):
        raise ImproperlyConfigured(
            "SECRET_KEY is too weak: use at least 50 random characters, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    if DEV_ENCRYPTION_KEY in PASSWORD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured("PASSWORD_ENCRYPTION_KEYS must be set when DEBUG is off.")
    # Otherwise the first password a worker seals would fail, long after the deploy that broke it.
    if bad := invalid_fernet_keys(PASSWORD_ENCRYPTION_KEYS):
        raise ImproperlyConfigured(
            f"PASSWORD_ENCRYPTION_KEYS: key {', '.join(map(str, bad))} is not a Fernet key (32 url-safe base64 "
            "bytes), e.g. from `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`."
        )

# Keys for the audit log's MAC chain and anchors (accessreq/audit.py), comma-separated, newest first: the first
# signs new rows, each still verifies the rows it signed, so a retired key stays listed. Never in the database they
# protect: whoever holds a key and the database can forge history. AUDIT_ANCHOR_FILE gets one line per anchor.
DEV_AUDIT_KEY = "dev-only-insecure-audit-key-change-me-0123456789abcdef"
AUDIT_KEYS = envlist("AUDIT_KEYS") or [DEV_AUDIT_KEY]
AUDIT_ANCHOR_FILE = Path(env("AUDIT_ANCHOR_FILE", str(VAR_DIR / "audit-anchors.jsonl")))
if not DEBUG and (DEV_AUDIT_KEY in AUDIT_KEYS or min(len(key) for key in AUDIT_KEYS) < 32):
    raise ImproperlyConfigured("AUDIT_KEYS must be set when DEBUG is off: random keys of 32 characters or more.")

SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
SITE_NAME = env("SITE_NAME", "ACR Access Portal")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "mozilla_django_oidc",
    # For the API reference page's Swagger assets, which django-ninja ships: served from here, not from a CDN.
    "ninja",
    "accessreq",
]

MIDDLEWARE = [
    "portal.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.ContentSecurityPolicyMiddleware",
    # Early, so no view or other middleware sees a body that is too large or text that cannot be stored; after the
    # two above, so its refusals still carry the request id and the security headers.
    "portal.middleware.RequestGuardMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.middleware.NoStoreWhenSignedInMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes requires: it turns a lockout flagged during the request into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# No form or API call of the portal comes near this; anything larger is refused with 413 before it is parsed.
# Django's own limit is the same, so a body that slips past the middleware (no Content-Length) is refused too.
MAX_REQUEST_BODY_BYTES = envint("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# A request form holds up to 200 rules, each a repository and up to 5 actions, beside its own dozen fields.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1300

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accessreq.context_processors.portal",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL names another (PostgreSQL in production and in CI).
DATABASE_URL = env("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60))}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # The planner's price of a random read against a sequential one. PostgreSQL's default, 4, is for spinning disks:
    # with it the planner hash-joins a person's few hundred visible tokens against every live token (10 ms at 100k
    # tokens) rather than look each up by its key (1 ms). 1.1 suits SSDs and a database held in memory, which is how
    # PostgreSQL runs in the cloud; empty keeps the server's own (behind a pooler that refuses startup options).
    RANDOM_PAGE_COST = env("DB_RANDOM_PAGE_COST", "1.1")
    if RANDOM_PAGE_COST and "postgresql" in DATABASES["default"]["ENGINE"]:
        try:
            planner = f"-c random_page_cost={float(RANDOM_PAGE_COST)}"
        except ValueError:
            raise ImproperlyConfigured(f"DB_RANDOM_PAGE_COST must be a number, not {RANDOM_PAGE_COST!r}") from None
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = planner
else:
    DATABASES = {
        "default": {
            # Django's SQLite, with the file readable by its owner alone: it holds sessions and sealed passwords.
            "ENGINE": "portal.sqlite",
            "NAME": str(VAR_DIR / "portal.sqlite3"),
            "OPTIONS": {
                # The web server, the worker and beat share one file: WAL lets readers run beside the writer,
                # IMMEDIATE takes the write lock at BEGIN so two writers queue instead of failing mid-transaction.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file rather than memory, so a Celery worker in another thread sees the same test database; one
            # per process, so two test runs on one machine do not share it.
            "TEST": {"NAME": str(VAR_DIR / f"test-portal-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The lockout check comes first and lets nothing past a locked username; ModelBackend before the SSO backend so
# that the test client's force_login, which takes the first backend able to load a user, keeps local sessions.
AUTHENTICATION_BACKENDS = [
    "accessreq.auth.LocalLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Security headers. The deploy-only ones are on whenever DEBUG is off.
# Scripts and styles come from this origin only; htmx is configured (base.html) to need neither eval nor inline style.
CONTENT_SECURITY_POLICY = env(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 8 * 3600)
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# E-mail: printed to the console unless an SMTP host is configured.
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "acr-portal@localhost")
EMAIL_HOST = env("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = envint("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

# Celery. The broker is Redis when REDIS_URL or CELERY_BROKER_URL is set, else kombu's filesystem transport, which
# needs no server and so lets a fresh machine run a real worker.
REDIS_URL = env("REDIS_URL", "")
# The filesystem transport ignores the host; naming one keeps kombu from warning about it on every connection.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL or "filesystem://localhost/")
BROKER_DIR = VAR_DIR / "broker"


def filesystem_broker(root: Path) -> dict[str, object]:
    """Transport options for a filesystem broker under `root`, with its folders made: a fresh clone has none."""
    for folder in ("queue", "control"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        # kombu looks for messages once a second by default, so a /healthz ping and its reply could take two
        # seconds; a folder listing ten times a second costs little.
        "polling_interval": 0.1,
    }


if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker(BROKER_DIR)
else:
    # A message not acknowledged within this time is delivered again. Every retry delay stays well below it
    # (CELERY_RETRY_MAX_DELAY), or a long countdown would be redelivered while it waits.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_RETRY_MAX_DELAY = 300
# Tasks are idempotent, so they are acknowledged after they run: a worker killed mid-task leaves the message for
# another worker instead of losing it.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Provisioning makes several ARM calls; one message at a time keeps a slow task from holding others hostage.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# After a broker reconnect a late-acked task would otherwise run twice in parallel.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Shutdown waits this long for running tasks, then cancels them: being late-acked, they go back to the queue for
# the next worker. Celery applies it on a cold shutdown; with REMAP_SIGTERM=SIGQUIT in the worker's environment a
# SIGTERM (docker stop, Kubernetes) is one, so stopping a worker never waits on a task stuck in a slow ARM call.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = float(env("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "20"))
# Nothing reads task results, and results are one more place a secret could leak.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Every job is idempotent, so running one more often than listed here, or twice at once, does no harm.
# Seconds between runs of each periodic job, by the job's one name (accessreq.jobs), which beat, the worker's log and
# `manage.py maintenance` share.
JOB_SCHEDULE = {
    "sweep-stuck": 60.0,
    "expire-unrevealed": 300.0,
    "finish-rotations": 600.0,
    "mark-expired": 900.0,
    "retire-due": 3600.0,
    "delete-retired": 3600.0,
    "flag-orphans": 3600.0,
    "send-reminders": 3600.0,
    "reconcile": 6 * 3600.0,
    "anchor-audit": 600.0,
    "rotate-delivered": 600.0,
    "collect-usage": 900.0,
    "remind-reviews": 3600.0,
    "close-reviews": 3600.0,
    # Recovery in seconds: tasks the broker did not take at commit, and claims whose worker stopped.
    "relay-outbox": 5.0,
    "sweep-claims": 10.0,
}
CELERY_BEAT_SCHEDULE = {
    name: {"task": "accessreq.tasks.run_job", "schedule": every, "args": (name,)}
    for name, every in JOB_SCHEDULE.items()
}

# Azure Container Registry. ACR_ARM_ENDPOINT is Azure's Resource Manager unless it points at the local emulator.
# ACR_CREDENTIAL: "default" uses azure-identity's DefaultAzureCredential (workload identity, managed identity or a
# service principal from AZURE_* variables); "emulator" sends a static bearer token, which the emulator accepts.
ACR_ARM_ENDPOINT = env("ACR_ARM_ENDPOINT", "https://management.azure.com").rstrip("/")
ACR_CREDENTIAL = env("ACR_CREDENTIAL", "default")
if ACR_CREDENTIAL not in {"default", "emulator"}:
    raise ImproperlyConfigured("ACR_CREDENTIAL must be 'default' or 'emulator'.")
ACR_EMULATOR_TOKEN = env("ACR_EMULATOR_TOKEN", "emulator")
# Seconds between polls of a long-running operation when ARM's answer carries no Retry-After (one that does sets
# the pace). Polls are reads, which ARM allows far more of than writes; a token is usually ready within a second.
ACR_POLLING_INTERVAL = float(env("ACR_POLLING_INTERVAL", "1"))
# The portal's share of ARM's write budget (about 10 writes a second per principal and subscription, bursts of 200),
# one bucket for all workers (in Redis, else the database). Every ARM write takes one first, waiting up to
# ACR_TIMEOUT. The burst is half ARM's, leaving room for anything else that writes with the same identity (a
# pipeline, an administrator): it costs 1,000 approvals about 10 s of their ~5 minutes. 0 writes a second: no limit.
ARM_WRITES_PER_SECOND = float(env("ARM_WRITES_PER_SECOND", "10"))
ARM_WRITE_BURST = envint("ARM_WRITE_BURST", 100)
if ARM_WRITES_PER_SECOND < 0 or ARM_WRITE_BURST < 1:
    raise ImproperlyConfigured("ARM_WRITES_PER_SECOND must be >= 0 and ARM_WRITE_BURST >= 1.")
ACR_TIMEOUT = envint("ACR_TIMEOUT", 30)
# How accessreq.dataplane reaches a registry's login server to check a token: https on Azure; http for the local
# emulator's Distribution registry (127.0.0.1:5000), whose token realm is the emulator's /oauth2/token.
ACR_DATA_PLANE_SCHEME = env("ACR_DATA_PLANE_SCHEME", "https")
# Prove each new password at the registry's token endpoint before handing it over (accessreq.dataplane). A new
# password takes up to about a minute to reach every replica, so the check retries until ACR_VERIFY_SECONDS; one that
# cannot complete leaves the password usable but marked unverified, for security to see.
ACR_VERIFY_PASSWORDS = envbool("ACR_VERIFY_PASSWORDS", True)
ACR_VERIFY_SECONDS = float(env("ACR_VERIFY_SECONDS", "90"))
if ACR_DATA_PLANE_SCHEME not in {"https", "http"}:
    raise ImproperlyConfigured("ACR_DATA_PLANE_SCHEME must be 'https' or 'http'.")

# The portal's own policy knobs.
REVEAL_TTL_HOURS = envint("REVEAL_TTL_HOURS", 24)
PROVISIONING_STUCK_MINUTES = envint("PROVISIONING_STUCK_MINUTES", 10)
PROVISIONING_MAX_ATTEMPTS = envint("PROVISIONING_MAX_ATTEMPTS", 8)
# First retry delay; each later one doubles, up to CELERY_RETRY_MAX_DELAY.
PROVISIONING_RETRY_SECONDS = float(env("PROVISIONING_RETRY_SECONDS", "5"))
# A worker provisioning a request or generating a password refreshes its claim every third of this; a claim not
# refreshed for this long belongs to a worker that died, and `sweep-claims` hands the work to another.
CLAIM_LEASE_SECONDS = float(env("CLAIM_LEASE_SECONDS", "20"))
PAGE_SIZE = envint("PAGE_SIZE", 25)

# Security's tools: access review reminders (days before the due date) and outgoing webhooks.
REVIEW_REMINDER_DAYS = tuple(int(d) for d in env("REVIEW_REMINDER_DAYS", "7,1").split(",") if d.strip())
WEBHOOK_TIMEOUT = float(env("WEBHOOK_TIMEOUT", "10"))
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", 6)
WEBHOOK_RETRY_SECONDS = float(env("WEBHOOK_RETRY_SECONDS", "10"))


# The cache holds rate-limit counters: Redis when configured, so every web process counts together. A Redis that is
# down or hung must fail a call in well under a second: the rate limiter then lets the request through
# (accessreq/ratelimit.py) rather than making every sign-in wait.
def redis_cache(url: str) -> dict[str, object]:
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.5},
    }


if REDIS_URL:
    CACHES = {"default": redis_cache(REDIS_URL)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
RATE_LIMITS = {
    "signin": env("RATE_LIMIT_SIGNIN", "20/m"),
    "reveal": env("RATE_LIMIT_REVEAL", "10/m"),
    "request": env("RATE_LIMIT_REQUEST", "30/h"),
}

# Plain lines for a terminal; JSON lines (LOG_FORMAT=json, the default in production) for a log pipeline. Every line
# carries the request id that the response also sends back as X-Request-ID.
LOG_FORMAT = env("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "portal.middleware.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "portal.middleware.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # azure-core logs every request's headers at INFO; the Authorization header is redacted but the noise is not.
        "azure": {"level": "WARNING"},
    },
}

# Token lifecycle.
ROTATION_GRACE_DAYS = envint("ROTATION_GRACE_DAYS", 7)
RETIREMENT_GRACE_DAYS = envint("RETIREMENT_GRACE_DAYS", 7)
REMINDER_DAYS = [int(d) for d in envlist("REMINDER_DAYS", "14,7,1")]


# Sign-in. Local accounts (the demo, break-glass admins) sign in with a password; django-axes locks a username
# from one address after AXES_FAILURE_LIMIT failures, for AXES_COOLOFF_MINUTES counted from the last failure.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Otherwise the rightful owner, trying again during the lockout, would keep extending it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "accessreq.auth.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# Failed single sign-ons are the provider's business: only password attempts count towards a lockout.
AXES_WHITELIST_CALLABLE = "accessreq.auth.is_not_a_password_attempt"
# Its start-up banner and every successful sign-in at INFO are noise; failures and lockouts are warnings.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}

# Single sign-on with Microsoft Entra ID (OpenID Connect, authorization code flow with PKCE), on when
# OIDC_RP_CLIENT_ID is set. The endpoints derive from the tenant; each may be overridden (a local provider in tests).
OIDC_RP_CLIENT_ID = env("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env("OIDC_RP_CLIENT_SECRET", "")
OIDC_TENANT_ID = env("OIDC_TENANT_ID", "")
_ENTRA = f"https://login.microsoftonline.com/{OIDC_TENANT_ID}" if OIDC_TENANT_ID else ""
OIDC_OP_AUTHORIZATION_ENDPOINT = env("OIDC_OP_AUTHORIZATION_ENDPOINT", _ENTRA and f"{_ENTRA}/oauth2/v2.0/authorize")
OIDC_OP_TOKEN_ENDPOINT = env("OIDC_OP_TOKEN_ENDPOINT", _ENTRA and f"{_ENTRA}/oauth2/v2.0/token")
OIDC_OP_JWKS_ENDPOINT = env("OIDC_OP_JWKS_ENDPOINT", _ENTRA and f"{_ENTRA}/discovery/v2.0/keys")
# The ID token carries every claim the portal reads (Entra's userinfo has no groups), so this is never called;
# the library insists on it being set.
OIDC_OP_USER_ENDPOINT = env("OIDC_OP_USER_ENDPOINT", _ENTRA and "https://graph.microsoft.com/oidc/userinfo")
OIDC_OP_ISSUER = env("OIDC_OP_ISSUER", _ENTRA and f"{_ENTRA}/v2.0")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_USE_PKCE = True
OIDC_TIMEOUT = envint("OIDC_TIMEOUT", 10)
# SessionRefresh sends the browser back to Entra (prompt=none) this often, so a disabled account drops out.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = envint("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 15 * 60)
OIDC_AUTHENTICATE_CLASS = "accessreq.auth.SignInView"
OIDC_CALLBACK_CLASS = "accessreq.auth.CallbackView"
# Entra group object id -> portal group name, e.g. {"0f1e...": "security"}. Mapped memberships follow the groups
# claim at every sign-in; groups not named here are managed in the portal.
try:
    OIDC_GROUP_MAP: dict[str, str] = json.loads(env("OIDC_GROUP_MAP", "{}"))
except json.JSONDecodeError as exc:
    raise ImproperlyConfigured(f"OIDC_GROUP_MAP is not valid JSON: {exc}") from exc
if not isinstance(OIDC_GROUP_MAP, dict) or not all(
    isinstance(k, str) and isinstance(v, str) and v for k, v in OIDC_GROUP_MAP.items()
):
    raise ImproperlyConfigured("OIDC_GROUP_MAP must be a JSON object of group ids to group names.")
# Members of these Entra groups are superusers (and staff); the flag follows the groups claim at every sign-in.
OIDC_ADMIN_GROUPS = envlist("OIDC_ADMIN_GROUPS", "")
if OIDC_RP_CLIENT_ID:
    if not all((OIDC_OP_AUTHORIZATION_ENDPOINT, OIDC_OP_TOKEN_ENDPOINT, OIDC_OP_JWKS_ENDPOINT, OIDC_OP_ISSUER)):
        raise ImproperlyConfigured("OIDC_TENANT_ID must be set with OIDC_RP_CLIENT_ID.")
    AUTHENTICATION_BACKENDS.append("accessreq.auth.EntraIDBackend")
    MIDDLEWARE.insert(MIDDLEWARE.index("axes.middleware.AxesMiddleware"), "accessreq.auth.SessionRefresh")

# Azure Key Vault: where a token's password can be delivered instead of being revealed to a person.
# KEY_VAULT_CREDENTIAL: "default" uses DefaultAzureCredential; "emulator" a static token the local emulator accepts
# (it also stops the SDK from insisting that a vault's address be under vault.azure.net).
KEY_VAULT_CREDENTIAL = env("KEY_VAULT_CREDENTIAL", "default")
if KEY_VAULT_CREDENTIAL not in {"default", "emulator"}:
    raise ImproperlyConfigured("KEY_VAULT_CREDENTIAL must be 'default' or 'emulator'.")
# A PEM file of the certificates to trust for vaults (the emulator's own); empty: the system's.
KEY_VAULT_CA_BUNDLE = env("KEY_VAULT_CA_BUNDLE", "")
KEY_VAULT_TIMEOUT = envint("KEY_VAULT_TIMEOUT", 30)
# After a delivered token's password is rotated, how long the old one keeps working, so that consumers of the
# secret (Secrets Store CSI driver, External Secrets) pick up the new version first.
KEY_VAULT_ROTATION_GRACE_HOURS = envint("KEY_VAULT_ROTATION_GRACE_HOURS", 24)

# Token usage from each registry's diagnostic logs in Log Analytics (accessreq/loganalytics.py, accessreq/usage.py).
# LOG_ANALYTICS_CREDENTIAL: "default" (DefaultAzureCredential) or "emulator" (a static bearer over http, for the
# local emulator); it follows ACR_CREDENTIAL unless set.
LOG_ANALYTICS_ENDPOINT = env("LOG_ANALYTICS_ENDPOINT", "https://api.loganalytics.io").rstrip("/")
LOG_ANALYTICS_CREDENTIAL = env("LOG_ANALYTICS_CREDENTIAL", ACR_CREDENTIAL)
if LOG_ANALYTICS_CREDENTIAL not in {"default", "emulator"}:
    raise ImproperlyConfigured("LOG_ANALYTICS_CREDENTIAL must be 'default' or 'emulator'.")
LOG_ANALYTICS_TIMEOUT = envint("LOG_ANALYTICS_TIMEOUT", 60)
# Events are read again this far behind the watermark (Log Analytics ingests late) and deduplicated by key.
USAGE_OVERLAP_MINUTES = envint("USAGE_OVERLAP_MINUTES", 15)
USAGE_PAGE_SIZE = envint("USAGE_PAGE_SIZE", 20_000)
USAGE_MAX_EVENTS_PER_RUN = envint("USAGE_MAX_EVENTS_PER_RUN", 200_000)
# Where a registry's first collection starts.
USAGE_BACKFILL_DAYS = envint("USAGE_BACKFILL_DAYS", 30)
# FAILED_LOGIN_BURST failed logins for one token within FAILED_LOGIN_BURST_MINUTES alert its owner and security.
FAILED_LOGIN_BURST = envint("FAILED_LOGIN_BURST", 5)
FAILED_LOGIN_BURST_MINUTES = envint("FAILED_LOGIN_BURST_MINUTES", 10)
# Actions unused this long are suggested for removal; tokens unused this long for retirement.
LEAST_PRIVILEGE_DAYS = envint("LEAST_PRIVILEGE_DAYS", 30)
STALE_DAYS = envint("STALE_DAYS", 30)
# --- The demo (python -m portal.demo) --------------------------------------------------------------------------------
# Demo mode offers one-click sign-in as each demo user and a short guide on the sign-in page. It only ever takes
# effect with DEBUG on: a deployment (DEBUG off) never signs anyone in without a password.
DEMO = DEBUG and envbool("PORTAL_DEMO", False)

# Performance. The security dashboard's totals (flag counts, tokens per registry and team) read every live token:
# computed once and shared through the cache for this many seconds (0: every time).
SECURITY_SUMMARY_SECONDS = envint("SECURITY_SUMMARY_SECONDS", 30)
