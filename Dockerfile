# syntax=docker/dockerfile:1
FROM python:3.11-slim

# settings.py finds templates/ and static/ beside the portal package, so the source tree in /app is what runs
# (PYTHONPATH), not the copy pip puts in site-packages.
# REMAP_SIGTERM: `docker stop` sends SIGTERM; as SIGQUIT it starts Celery's cold shutdown, which gives running tasks
# CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT to finish and hands the rest back to the broker, instead of a warm shutdown
# that waits for them without bound. Billiard reads it when imported, so it must be in the environment at start.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REMAP_SIGTERM=SIGQUIT \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=portal.settings \
    PYTHONPATH=/app \
    PORTAL_VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles

RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --shell /usr/sbin/nologin portal

WORKDIR /app

# Dependencies first, in their own layer, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p portal accessreq acr_emulator \
    && touch portal/__init__.py accessreq/__init__.py acr_emulator/__init__.py \
    && pip install . \
    && pip uninstall -y acr-access-portal \
    && rm -rf portal accessreq acr_emulator build *.egg-info

COPY . .
RUN pip install --no-deps . \
    && rm -rf build *.egg-info

# The manifest storage used when DEBUG is off needs collectstatic run with DEBUG off, so the build makes
# throwaway keys that exist only for this one command.
RUN DEBUG=0 \
    SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    PASSWORD_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    AUDIT_KEYS="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')" \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/var /data \
    && chown -R portal:portal /app/var /data

USER portal
EXPOSE 8000

CMD ["gunicorn", "portal.wsgi"]
