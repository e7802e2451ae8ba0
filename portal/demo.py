"""python -m portal.demo: the whole portal on one machine, with one command.

Migrates the database, starts the ACR emulator, seeds the demo data, then runs a Celery worker, Celery beat and
the web server until Ctrl-C. Nothing else is needed: SQLite and the filesystem broker are the defaults, and
DATABASE_URL or REDIS_URL are used when set. Running it again is safe; the emulator keeps its registries in
var/emulator.json.

With the docker-registry package installed, the emulator also starts a real registry on REGISTRY_PORT (default
5000) serving the demo registry, so the tokens the portal hands out work with docker and skopeo.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

BASE_DIR = Path(__file__).resolve().parent.parent
# A prefork Celery worker takes about eight seconds for its warm shutdown.
STOP_GRACE_SECONDS = 12.0
STARTUP_TIMEOUT_SECONDS = 60.0
USERS = (
    ("alice", "requester"),
    ("bob", "approver (myapp-owners, shared-owners, registry-admins)"),
    ("carol", "approver (myapp-owners, shared-owners, registry-admins)"),
    ("sam", "security"),
    ("admin", "superuser"),
)
PASSWORD = "demo-password"
# seed_demo's registry: the one the data plane serves.
DEMO_REGISTRY = "contosodemo"
DEMO_VAULT = "contosodemo"

_print_lock = threading.Lock()


def say(name: str, line: str) -> None:
    # One lock for every writer, so lines from different processes never interleave mid-line.
    with _print_lock:
        sys.stdout.write(f"{name:>8} | {line.rstrip()}\n")
        sys.stdout.flush()


class Stop(Exception):
    """Raised from the signal handler so any step, even a blocking one, ends at once."""


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A group of its own: Ctrl-C in the terminal reaches only this script, which then stops each child
            # in order, and a signal to the group also reaches the worker's pool processes.
            process_group=0,
        )
        self.reader = threading.Thread(target=_relay, args=(self.name, self.process.stdout), daemon=True)
        self.reader.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        # The leader alone: a Celery worker then stops its own pool in order, which a signal to every pool
        # process at once would turn into errors and a slower shutdown.
        if self.alive():
            assert self.process is not None
            self.process.terminate()

    def kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def _relay(name: str, stream: IO[bytes] | None) -> None:
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        say(name, raw.decode("utf-8", "replace"))
    stream.close()


def _environment(port: int, emulator_port: int, data_plane: bool, var_dir: Path) -> None:
    # Defaults only: anything the caller exported wins. Set before any child starts, since settings.py reads
    # the environment once, when Django starts in each of them.
    defaults = {
        "DEBUG": "1",
        "ACR_ARM_ENDPOINT": f"http://127.0.0.1:{emulator_port}",
        "ACR_CREDENTIAL": "emulator",
        "LOG_ANALYTICS_ENDPOINT": f"http://127.0.0.1:{emulator_port}",
        "ACR_POLLING_INTERVAL": "0.5",
        # The emulator's Key Vault speaks HTTPS with a certificate it made, kept beside its state.
        "KEY_VAULT_CREDENTIAL": "emulator",
        "KEY_VAULT_CA_BUNDLE": str(var_dir / "emulator-keyvault" / "ca.pem"),
        "SITE_URL": f"http://127.0.0.1:{port}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        # Children write through a pipe; unbuffered, their lines show up when they happen.
        "PYTHONUNBUFFERED": "1",
        # One-click sign-in as each demo user, and a short guide, on the sign-in page (only ever with DEBUG on).
        "PORTAL_DEMO": "1",
        # One line per e-mail on the console, the whole message in var/mail/: the banner stays readable.
        "EMAIL_BACKEND": "portal.mail.OneLineBackend",
    }
    if data_plane:
        # The local registry speaks plain http; on Azure, login servers are https.
        defaults["ACR_DATA_PLANE_SCHEME"] = "http"
    else:
        # Without a data plane there is nowhere to prove a password: say so rather than wait for a check to time out.
        defaults["ACR_VERIFY_PASSWORDS"] = "0"
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers themselves bind with SO_REUSEADDR, so a port left in TIME_WAIT is not "taken" for them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _run_step(name: str, argv: list[str]) -> None:
    say("demo", f"running {name}")
    step = Child(name, argv)
    step.start()
    assert step.process is not None
    try:
        code = step.process.wait()
    finally:
        if step.alive():
            step.kill_group()
            step.process.wait()
        if step.reader is not None:
            step.reader.join(timeout=2)
    if code != 0:
        raise SystemExit(f"demo: {name} failed with exit code {code}")


def _wait_until(child: Child, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not _answers(url):
        if not child.alive():
            raise SystemExit(f"demo: {child.name} exited before {url} answered")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {url} did not answer within {STARTUP_TIMEOUT_SECONDS:.0f} seconds")
        time.sleep(0.2)


def _stop_all(children: list[Child]) -> None:
    running = [c for c in reversed(children) if c.process is not None]
    for child in running:
        if child.alive():
            say("demo", f"stopping {child.name}")
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("demo", f"{child.name} did not stop within {STOP_GRACE_SECONDS:.0f} seconds; killing it")
        # Also the leader's own children (the worker's pool), which may outlive a leader that has exited.
        child.kill_group()
        child.process.wait()
    for child in running:
        if child.reader is not None:
            child.reader.join(timeout=2)


def _ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _data_plane_lines(registry_port: int | None, image_dir: Path) -> list[str]:
    if registry_port is None:
        return [
            "Data plane off: install the docker-registry package (and skopeo) to push and pull with the portal's",
            "tokens; the portal and the emulator's management API work without it.",
        ]
    server = f"127.0.0.1:{registry_port}"
    return [
        f"Data plane: a Distribution registry at {server} serves {DEMO_REGISTRY}; tokens the portal hands out",
        "work there. With a token's name and its revealed password:",
        "  skopeo --insecure-policy copy --dest-tls-verify=false --dest-creds TOKEN:PASSWORD \\",
        f"      oci:{image_dir}:v1 docker://{server}/myapp/hello:v1",
        f"  docker login {server} -u TOKEN    (docker takes 127.0.0.1 as an insecure registry: plain http)",
    ]


def _vault_lines(vault_port: int) -> list[str]:
    return [
        f"Key Vault: https://127.0.0.1:{vault_port} (choose it under Delivery on a new request); read a secret with",
        "  KEY_VAULT_CREDENTIAL=emulator KEY_VAULT_CA_BUNDLE=var/emulator-keyvault/ca.pem python manage.py shell -c "
        f"\"from accessreq import keyvault; print(keyvault.read_current('https://127.0.0.1:{vault_port}', 'NAME'))\"",
    ]


def _banner(port: int, data_plane: list[str]) -> None:
    url = f"http://127.0.0.1:{port}"
    lines = [
        "",
        f"ACR Access Portal is running at {url}/",
        f"Health: {url}/healthz",
        f"Sign in with one click on the sign-in page, or with password {PASSWORD!r}, as:",
        *(f"  {user:<6} {role}" for user, role in USERS),
        "Try this: alice asks to push to myapp/api, bob and carol approve, alice reveals the password.",
        *data_plane,
        "E-mails: one line each below, the whole message in var/mail/. Stop with Ctrl-C.",
        "",
    ]
    for line in lines:
        say("demo", line)


def _on_signal(signum: int, frame: object) -> NoReturn:
    # Stopping takes a few seconds; a second Ctrl-C in that time must not abandon children half-stopped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8765"))
    # The data plane runs when its package is there; without it the demo is the portal and the management API.
    registry_port = int(os.environ.get("REGISTRY_PORT", "5000")) if shutil.which("docker-registry") else None
    vault_port = int(os.environ.get("KEY_VAULT_PORT", "8766"))
    var_dir = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var"))
    _environment(port, emulator_port, registry_port is not None, var_dir)

    taken = [p for p in (port, emulator_port, registry_port, vault_port) if p is not None and _port_in_use(p)]
    if taken:
        print(
            f"demo: port {', '.join(map(str, taken))} on 127.0.0.1 is already in use (another demo "
            "running?). Stop whatever holds it, or choose others with PORT=... EMULATOR_PORT=... REGISTRY_PORT=... "
            "KEY_VAULT_PORT=...",
            file=sys.stderr,
        )
        return 2

    var_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    manage = str(BASE_DIR / "manage.py")
    emulator_argv = [python, "-m", "acr_emulator", "--host", "127.0.0.1", "--port", str(emulator_port),
                     "--state", str(var_dir / "emulator.json"), "--vault", f"{DEMO_VAULT}:{vault_port}"]  # fmt: skip
    if registry_port is not None:
        emulator_argv += ["--registry-port", str(registry_port), "--data-plane-registry", DEMO_REGISTRY]
    emulator = Child("emulator", emulator_argv)
    image_dir = var_dir / "demo-image"
    celery = [python, "-m", "celery", "-A", "portal"]
    services = [
        Child("worker", [*celery, "worker", "-l", "info", "--concurrency", "2"]),
        Child("beat", [*celery, "beat", "-l", "info", "-s", str(var_dir / "celerybeat-schedule")]),
        # The web server production runs (gunicorn.conf.py), bound to this machine only.
        Child("web", [python, "-m", "gunicorn", "portal.wsgi", "--config", str(BASE_DIR / "gunicorn.conf.py"),
                      "--bind", f"127.0.0.1:{port}", "--workers", "2"]),  # fmt: skip
    ]
    children = [emulator, *services]

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        _run_step("migrate", [python, manage, "migrate", "--noinput", "--verbosity", "0"])
        say("demo", "starting the ACR emulator")
        emulator.start()
        _wait_until(emulator, f"http://127.0.0.1:{emulator_port}/_emulator/health")
        _run_step("seed", [python, manage, "seed_demo", "--key-vault", f"https://127.0.0.1:{vault_port}"])
        if registry_port is not None:
            _run_step("image", [python, "-m", "acr_emulator.ociimage", str(image_dir), "v1"])
        for child in services:
            say("demo", f"starting {child.name}")
            child.start()
        web = services[-1]
        _wait_until(web, f"http://127.0.0.1:{port}/accounts/login/")
        _banner(port, _data_plane_lines(registry_port, image_dir) + _vault_lines(vault_port))
        # Without the web server there is nothing to look at, so its end is the demo's end. Any other piece may die
        # (a worker killed to see what happens, say): the rest keep running so /healthz can show what is down.
        reported: set[str] = set()
        while True:
            for child in children:
                if child.alive() or child.name in reported:
                    continue
                assert child.process is not None
                ended = _ended(child.process.returncode)
                if child is web:
                    say("demo", f"{child.name} {ended} unexpectedly; stopping the others")
                    return 1
                reported.add(child.name)
                say("demo", f"{child.name} {ended} unexpectedly; http://127.0.0.1:{port}/healthz shows what is down")
            time.sleep(0.5)
    except Stop as stop:
        say("demo", f"{stop} received; stopping")
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            say("demo", exc.code)
            return 1
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(children)
        say("demo", "stopped")


if __name__ == "__main__":
    sys.exit(main())
