"""Command line:

python -m acr_emulator --host 127.0.0.1 --port 8765 [--state FILE] [--lro-polls N] [--page-size N]
    [--fault SPEC ...]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import types

from acr_emulator.faults import Fault
from acr_emulator.server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acr_emulator",
        description="Local emulator of the Azure Resource Manager API for Microsoft.ContainerRegistry "
        "registries, scope maps and tokens.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind, 0 for a free one (default 8765)")
    parser.add_argument("--state", metavar="FILE", help="load state from FILE and save it there after each change")
    parser.add_argument(
        "--lro-polls",
        type=int,
        default=1,
        metavar="N",
        help="polls a long-running operation reports in progress before finishing (default 1)",
    )
    parser.add_argument("--page-size", type=int, default=50, metavar="N", help="items per list page (default 50)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help='inject a fault, e.g. "count=2,status=429,retry_after=1,operation=tokens.create" '
        "or the same as JSON; repeatable",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    if args.lro_polls < 0 or args.page_size < 1:
        parser.error("--lro-polls must be >= 0 and --page-size >= 1")
    try:
        faults = [Fault.parse_spec(spec) for spec in args.fault]
    except ValueError as exc:
        parser.error(f"--fault: {exc}")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = EmulatorServer(
        (args.host, args.port), lro_polls=args.lro_polls, page_size=args.page_size, state_file=args.state
    )
    for fault in faults:
        server.faults.add(fault)

    def stop(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # The bound port matters when --port 0 was asked for; print it where scripts can read it.
    print(f"acr-emulator listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
