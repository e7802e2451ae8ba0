"""The embedded broker never lets a worker read a message or a binding half-written. kombu's own filesystem
transport creates each file empty and writes it afterwards; a worker listing the folder in between read nothing,
failed to decode it and stopped (seen under load)."""

from __future__ import annotations

import time
from pathlib import Path

from kombu import Connection

from portal.settings import filesystem_broker

TRANSPORT = "portal.broker:AtomicFilesystemTransport"


def _connection(root: Path) -> Connection:
    return Connection("filesystem://localhost/", transport=TRANSPORT, transport_options=filesystem_broker(root))


def test_it_skips_a_message_still_being_written_and_delivers_whole_ones(tmp_path: Path) -> None:
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"n": 1})
        # What a writer mid-way leaves behind: a partial file, under a name no queue reads.
        partial = tmp_path / "queue" / f".{round(time.monotonic() * 1000)}_x.jobs.msg.partial"
        partial.write_bytes(b'{"bo')
        queue.put({"n": 2})
        got = [queue.get(timeout=5) for _ in range(2)]
        for message in got:
            message.ack()
        assert sorted(m.payload["n"] for m in got) == [1, 2]  # files sort by millisecond, then at random
        assert partial.exists()  # left alone, not taken for a message
        queue.close()
    assert not [p for p in (tmp_path / "queue").iterdir() if p.name.endswith(".msg")]


def test_it_reads_an_empty_binding_file_as_no_binding_yet_rather_than_failing(tmp_path: Path) -> None:
    with _connection(tmp_path) as conn:
        channel = conn.default_channel
        (tmp_path / "control").mkdir(exist_ok=True)
        (tmp_path / "control" / "jobs.exchange").write_bytes(b"")  # created, not yet written, by another process
        started = time.monotonic()
        assert channel.get_table("jobs") == []
        assert time.monotonic() - started < 5
        # Binding then writes into the same file under its lock, and reading it gives the binding.
        channel._queue_bind("jobs", "jobs", None, "jobs")
        assert [q.queue for q in channel.get_table("jobs")] == ["jobs"]
