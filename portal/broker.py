"""Housekeeping for kombu's filesystem broker, which unlike Redis or RabbitMQ never expires anything on its own.

Celery's remote control (the pings behind /healthz) writes one message file per worker mailbox bound to the
broadcast exchange, and a reply file per answer. A worker that dies keeps its binding, so every later ping leaves a
file that nobody will read; a reply that comes after its pinger gave up is never read either. Celery gives control
messages a time to live (control_queue_ttl, 300 s) that AMQP enforces; this enforces it here, and unbinds mailboxes
whose messages went unread that long: a live worker, prefork or threads, reads its mailbox within a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils import json as kombu_json

CONTROL_SUFFIX = ".pidbox.msg"
BROADCAST_EXCHANGE = "celery.pidbox.exchange"


def prune_stale_control_messages(queue_folder: Path, control_folder: Path, older_than: float) -> int:
    """Delete control messages older than `older_than` seconds and unbind the mailboxes they were left for.
    Returns how many files were deleted. Task messages are never touched."""
    cutoff = time.time() - older_than
    removed = 0
    dead_mailboxes: set[str] = set()
    try:
        entries = list(os.scandir(queue_folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.endswith(CONTROL_SUFFIX):
            continue
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            os.remove(entry.path)
        except FileNotFoundError:
            continue  # read by its worker meanwhile
        removed += 1
        # "<ms>_<uuid>.<queue>.msg": the queue is a worker's mailbox ("<node>.celery.pidbox") or a reply queue.
        queue = entry.name.partition(".")[2].removesuffix(".msg")
        if not queue.endswith(".reply.celery.pidbox"):
            dead_mailboxes.add(queue)
    if dead_mailboxes:
        _unbind(control_folder / BROADCAST_EXCHANGE, dead_mailboxes)
    return removed


def _unbind(exchange_file: Path, queues: set[str]) -> None:
    # kombu's own format ([routing_key, pattern, queue] rows) and lock (flock), so a worker binding at the same
    # moment waits for this and does not lose its row.
    try:
        handle = exchange_file.open("rb+", buffering=0)
    except FileNotFoundError:
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            rows = json.loads(handle.read() or b"[]")
            kept = [row for row in rows if row[2] not in queues]
            if len(kept) != len(rows):
                handle.seek(0)
                handle.write(json.dumps(kept).encode())
                handle.truncate()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class AtomicChannel(filesystem.Channel):
    # kombu's filesystem Channel narrows its base's signature; this one keeps the filesystem Channel's.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        """Write the message under a name the reader skips, then rename it into place. kombu's own `_put` creates the
        file before it writes it, so a worker that lists the folder in between takes an empty message, fails to
        decode it and stops."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")  # ".x" parts as no queue's message
        try:
            with open(partial, "wb") as f:
                f.write(kombu_json.dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


    def get_table(self, exchange: str) -> list[Any]:
        """The queues bound to an exchange. A binding file another process is creating can be empty for a moment:
        read it again rather than fail to decode it."""
        path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # kombu's, missing from its stubs
        for _ in range(100):
            try:
                with open(path, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_SH)
                    try:
                        data = f.read()
                    finally:
                        fcntl.flock(f, fcntl.LOCK_UN)
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise ChannelError(f"Cannot open {path}") from exc
            if data:
                return [filesystem.exchange_queue_t(*q) for q in kombu_json.loads(data.decode())]
            time.sleep(0.01)
        return []

    def _queue_bind(self, exchange: str, routing_key: str | None, pattern: str | None, queue: str | None) -> None:
        """Add a binding under one exclusive lock taken on a file opened without truncating it: kombu's own creates
        the file empty and only then locks it, so a second process binding or publishing meanwhile reads nothing."""
        path = self._exchange_file(exchange)  # type: ignore[attr-defined]  # kombu's, missing from its stubs
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            with os.fdopen(fd, "rb+", buffering=0) as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    data = f.read()
                    queues = [filesystem.exchange_queue_t(*q) for q in kombu_json.loads(data.decode())] if data else []
                    if binding not in queues:
                        queues.insert(0, binding)
                        f.seek(0)
                        f.truncate()
                        f.write(kombu_json.dumps(queues).encode())
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except OSError as exc:
            raise ChannelError(f"Cannot open {path}") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport, with messages and bindings that appear whole or not at all."""

    Channel = AtomicChannel
