"""gunicorn reads this file from its working directory; the Dockerfile and compose run it from the project root."""

from __future__ import annotations

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
# Requests wait on the database and, for a few lifecycle actions, on Azure with its own 30-second timeout.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Load Django once in the master and fork warm workers: a recycled worker then starts serving at once, instead of
# putting an import-everything cold start (hundreds of milliseconds) in front of the requests that queue behind it.
# Nothing opens a connection at import, so no socket is shared across the fork.
preload_app = True
# Recycle workers now and then, so a slow leak never becomes an outage: rarely, and spread out so the workers never
# restart together.
max_requests = 20000
max_requests_jitter = 5000
# Only the TLS proxy in front may say a request came over https.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
