"""The embedded broker writes each message whole before a worker can see it: a reader racing a writer never takes
an empty or half-written message (kombu's own filesystem transport can, and the worker then stops)."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

from portal.settings import filesystem_broker

COUNT = 400


def test_it_delivers_every_message_whole_while_a_reader_races_the_writer(tmp_path: Path) -> None:
    options = {**filesystem_broker(tmp_path), "polling_interval": 0.0}
    received: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        with Connection("filesystem://localhost/", transport="portal.broker:AtomicFilesystemTransport",
                        transport_options=options) as conn:  # fmt: skip
            queue = conn.SimpleQueue("race")
            try:
                while len(received) < COUNT:
                    message = queue.get(timeout=10)
                    received.append(message.payload["n"])
                    message.ack()
            except BaseException as exc:  # noqa: BLE001 - the test reports whatever stopped the reader
                errors.append(exc)
            finally:
                queue.close()

    reader = threading.Thread(target=read)
    reader.start()
    with Connection("filesystem://localhost/", transport="portal.broker:AtomicFilesystemTransport",
                    transport_options=options) as conn:  # fmt: skip
        queue = conn.SimpleQueue("race")
        for n in range(COUNT):
            queue.put({"n": n, "padding": "x" * 4096})
        queue.close()
    reader.join(timeout=60)
    assert errors == []
    assert sorted(received) == list(range(COUNT))
    assert not [p for p in (tmp_path / "queue").iterdir() if p.name.endswith(".partial")]
