"""Command line:

python -m acr_emulator --host 127.0.0.1 --port 8765 [--state FILE] [--lro-polls N] [--page-size N]
    [--fault SPEC ...] [--registry-port PORT [--registry-dir DIR]] [--data-plane HOST:PORT]
    [--data-plane-registry NAME] [--token-lifetime SECONDS] [--vault NAME[:PORT] ...]
    [--write-budget RATE[/BURST]] [--lro-retry-after SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import types
from pathlib import Path

from acr_emulator.distribution import Distribution, DistributionError
from acr_emulator.faults import Fault
from acr_emulator.server import EmulatorServer
from acr_emulator.tokenserver import DEFAULT_TOKEN_LIFETIME
from acr_emulator.writebudget import parse as parse_write_budget


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
    parser.add_argument(
        "--registry-port",
        type=int,
        metavar="PORT",
        help="start a Distribution registry (docker-registry) on HOST:PORT as the data plane",
    )
    parser.add_argument(
        "--registry-dir",
        metavar="DIR",
        help="the registry's config and image storage (default: beside --state, else a temporary directory)",
    )
    parser.add_argument(
        "--data-plane",
        metavar="HOST:PORT",
        help="a data plane already running there (implied by --registry-port): registries created from now on "
        "report it as their loginServer",
    )
    parser.add_argument(
        "--data-plane-registry",
        metavar="NAME",
        help="serve this registry (existing or yet to come) on the data plane, rather than the next one created",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME,
        metavar="SECONDS",
        help=f"lifetime of the token server's JWTs (default {DEFAULT_TOKEN_LIFETIME})",
    )
    parser.add_argument(
        "--vault",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="serve a Key Vault called NAME over HTTPS (on PORT, else a free one or the one it had); repeatable",
    )
    parser.add_argument(
        "--write-budget",
        metavar="RATE[/BURST]",
        help="throttle ARM writes (PUT/PATCH/POST/DELETE) with a token bucket as ARM does, e.g. 10/200: "
        "RATE writes a second, bursts of BURST; over it, 429 with Retry-After (default: no limit)",
    )
    parser.add_argument(
        "--lro-retry-after",
        type=float,
        default=0,
        metavar="SECONDS",
        help="Retry-After on long-running operations' answers; fractions allowed (default 0: poll at once)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    if args.lro_polls < 0 or args.page_size < 1:
        parser.error("--lro-polls must be >= 0 and --page-size >= 1")
    if args.lro_retry_after < 0:
        parser.error("--lro-retry-after must be >= 0")
    try:
        parse_write_budget(args.write_budget)
    except ValueError as exc:
        parser.error(f"--write-budget: {exc}")
    if args.registry_port is not None and args.data_plane is not None:
        parser.error("--registry-port starts the data plane itself; give --data-plane only for one running elsewhere")
    data_plane = f"{args.host}:{args.registry_port}" if args.registry_port is not None else args.data_plane
    try:
        faults = [Fault.parse_spec(spec) for spec in args.fault]
    except ValueError as exc:
        parser.error(f"--fault: {exc}")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = EmulatorServer(
        (args.host, args.port),
        lro_polls=args.lro_polls,
        page_size=args.page_size,
        state_file=args.state,
        data_plane=data_plane,
        data_plane_registry=args.data_plane_registry,
        token_lifetime=args.token_lifetime,
        write_budget=args.write_budget,
        lro_retry_after=args.lro_retry_after,
    )
    for fault in faults:
        server.faults.add(fault)
    for spec in args.vault:
        name, _, port = spec.partition(":")
        try:
            url = server.keyvault.create_vault(name, int(port or 0) or server.keyvault.port_of(name))
        except (ValueError, OSError) as exc:
            server.server_close()
            print(f"acr-emulator: vault {spec}: {exc}", file=sys.stderr)
            return 1
        print(f"acr-emulator Key Vault {name} at {url} (trust {server.keyvault.ca_bundle})", flush=True)
    registry = None
    if args.registry_port is not None:
        if args.registry_dir:
            registry_dir = Path(args.registry_dir)
        elif args.state:
            registry_dir = Path(args.state).parent / f"{Path(args.state).stem}-registry"
        else:
            registry_dir = Path(tempfile.mkdtemp(prefix="acr-emulator-registry-"))
        registry = Distribution(
            registry_dir,
            host=args.host,
            port=args.registry_port,
            emulator_url=server.url,
            certificate_pem=server.signing_key.certificate_pem,
        )
        try:
            registry.start()
        except DistributionError as exc:
            server.server_close()
            print(f"acr-emulator: the registry did not start: {exc}", file=sys.stderr)
            return 1
        print(f"acr-emulator data plane (Distribution) at {registry.url}, log {registry.log_path}", flush=True)

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
        if registry is not None:
            registry.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
