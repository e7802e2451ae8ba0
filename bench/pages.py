"""What the busiest pages cost at 1k and at 100k tokens, served as in production: PostgreSQL, gunicorn with two
workers, DEBUG off.

    .venv/bin/python bench/pages.py [--quick] [--sizes 1000,100000] [--duration 10] [--connections 4] [--runs 1]
                                    [--database postgres|sqlite] [--pages queue,baseline]

Seeds a throwaway database (PostgreSQL at BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/
acrportal_bench_pages, dropped and made anew; or a SQLite file for the embedded path) with realistic tokens and
requests: many owners, teams of about 500 tokens, a registry per 10,000 tokens, about five audit events per request.
Then drives each page with wrk (Debian's `wrk`; a threaded Python client when it is missing), after 2 s of unmeasured
load that warms both web workers, and prints p50/p95, requests per second and queries per page at each size, the
ratio of the largest size's p95 to the smallest's, the approval queue's requests per second divided by a primary-key
lookup page's in the same run, and the web workers' memory. A person's own lists (their tokens, their requests,
their queue) stay the same size as the table grows, as they do in a real organisation; security's lists grow with
it. `--pages queue,baseline` measures only the pages whose names contain one of those words; the queue/pk ratio
needs both of those pages and reads `n/a` otherwise.

The last line reads `pages: worst p95 100k/1k = R1, queue/pk rps = R2`.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/acrportal_bench_pages"
TEAM_SIZE = 500  # tokens per team
OWNER_SHARE = 20  # tokens per owner
REGISTRY_SHARE = 10_000  # tokens per registry
EVENTS = ("request.filed", "request.approved", "request.provisioned", "token.created", "password.revealed")
MINE = 30  # tokens (and requests) alice owns, whatever the size


def throwaway_env(database_url: str, work: Path) -> dict[str, str]:
    """Production-like settings with keys made for this run only."""
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url,
        "DB_CONN_MAX_AGE": "60",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "PASSWORD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AUDIT_KEYS": secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "SECURE_SSL_REDIRECT": "0",
        "PORTAL_VAR_DIR": str(work),
        "STATIC_ROOT": str(work / "static"),
        "ACR_CREDENTIAL": "emulator",
        "LOG_LEVEL": "WARNING",
        "PAGE_SIZE": "25",
    }


def recreate_postgres(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# --- seeding -------------------------------------------------------------------------------------------------------


class Seeder:
    """Adds rows up to a size, keeping a person's share the same whatever the size."""

    def __init__(self) -> None:
        from django.contrib.auth.models import Group, User

        from accessreq.models import ApprovalRule, Registry

        self.done = 0
        self.users: dict[int, User] = {}
        self.groups: dict[int, Group] = {}
        self.registries: dict[int, Registry] = {}
        self.security = Group.objects.create(name="security")
        self.admins = Group.objects.create(name="registry-admins")
        self.alice = User.objects.create_user("alice", "alice@example.com", "x")
        self.bob = User.objects.create_user("bob", "bob@example.com", "x")
        self.sam = User.objects.create_user("sam", "sam@example.com", "x")
        self.sam.groups.add(self.security)
        self.ApprovalRule = ApprovalRule
        self.Registry = Registry
        self.Group = Group
        self.User = User

    def _registry(self, index: int):  # noqa: ANN202
        if index not in self.registries:
            self.registries[index] = self.Registry.objects.create(
                subscription_id="0", resource_group="bench", name=f"benchreg{index:03d}",
                login_server=f"benchreg{index:03d}.azurecr.io", admin_group=self.admins,
            )
        return self.registries[index]

    def _group(self, index: int):  # noqa: ANN202
        if index not in self.groups:
            group = self.Group.objects.create(name=f"team-{index:03d}")
            self.groups[index] = group
            for registry in {self._registry(r) for r in range(len(self.registries) or 1)}:
                self.ApprovalRule.objects.create(registry=registry, pattern=f"team-{index:03d}/*", group=group)
            if index == 0:
                self.alice.groups.add(group)
                self.bob.groups.add(group)
        return self.groups[index]

    def _user(self, index: int):  # noqa: ANN202
        if index not in self.users:
            missing = [i for i in range(index, index + 100) if i not in self.users]
            made = self.User.objects.bulk_create(
                self.User(username=f"owner{i:05d}", email=f"owner{i:05d}@example.com", password="!") for i in missing
            )
            self.users.update(zip(missing, made, strict=True))
        return self.users[index]

    def grow(self, size: int) -> float:
        from django.db import connection, transaction
        from django.utils import timezone

        from accessreq import scopes
        from accessreq.models import (
            AccessRequest,
            Approval,
            ApprovalRequirement,
            AuditEvent,
            PasswordSlot,
            SlotStatus,
            Token,
            TokenStatus,
        )

        started = time.perf_counter()
        now = timezone.now()
        batch = 5000
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # throwaway data: no need to wait for each commit to reach disk
                cursor.execute("SET synchronous_commit TO off")
        for low in range(self.done, size, batch):
            high = min(size, low + batch)
            with transaction.atomic():
                for r in range(low // REGISTRY_SHARE, (high - 1) // REGISTRY_SHARE + 1):
                    self._registry(r)
                for t in range(low // TEAM_SIZE, (high - 1) // TEAM_SIZE + 1):
                    self._group(t)
                rows = []
                for i in range(low, high):
                    team = i // TEAM_SIZE
                    owner = self.alice if i < MINE else self._user(i // OWNER_SHARE)
                    status = {0: "pending", 1: "rejected", 2: "cancelled"}.get(i % 20, "ready")
                    write = i % 3 == 0
                    actions = ["content/read", "content/write"] if write else ["content/read"]
                    rules = [{"repository": f"team-{team:03d}/svc{i}", "actions": actions}]
                    kind = "partner" if i % 50 == 0 else "ci"
                    rows.append(
                        AccessRequest(
                            registry=self.registries[i // REGISTRY_SHARE],
                            requester=owner,
                            owner=owner,
                            team=f"team-{team:03d}",
                            purpose=f"The team-{team:03d} pipeline pulls service {i}.",
                            client_kind=kind,
                            rules=rules,
                            risky=scopes.is_risky(rules, kind),
                            password_days=30,
                            retire_on=(now + timedelta(days=30 + i % 300)).date(),
                            token_name=f"tok{i:07d}",
                            status=status,
                            created_at=now - timedelta(minutes=i % 100_000),
                            decided_at=None if status == "pending" else now - timedelta(minutes=i % 90_000),
                        )
                    )
                made = AccessRequest.objects.bulk_create(rows, batch_size=batch)
                requirements = ApprovalRequirement.objects.bulk_create(
                    ApprovalRequirement(
                        request=r, group=self.groups[int(r.team[5:])], count=2 if "content/write" in r.actions else 1,
                        repositories=[r.rules[0]["repository"]],
                    )
                    for r in made
                )
                approvals = Approval.objects.bulk_create(
                    Approval(request=r, approver=self.bob if r.owner_id != self.bob.pk else self.sam,
                             decision="approve" if r.status != "rejected" else "reject", created_at=r.created_at)
                    for r in made if r.status != "pending"
                )
                through = Approval.requirements.through
                by_request = {q.request_id: q for q in requirements}
                through.objects.bulk_create(
                    through(approval_id=a.pk, approvalrequirement_id=by_request[a.request_id].pk) for a in approvals
                )
                tokens = []
                for r in made:
                    if r.status != "ready":
                        continue
                    i = int(r.token_name[3:])
                    status = TokenStatus.RETIRED if i % 10 == 3 else TokenStatus.DISABLED if i % 25 == 4 else "active"
                    tokens.append(
                        Token(
                            registry=r.registry, name=r.token_name, scope_map_name=f"{r.token_name}-scope", request=r,
                            owner=r.owner, team=r.team, requester=r.requester, purpose=r.purpose,
                            client_kind=r.client_kind, rules=r.rules, risky=bool(scopes.risks(r.rules, r.client_kind)),
                            retire_on=r.retire_on, password_days=30, status=status, created_at=r.created_at,
                            orphaned_at=now if i % 97 == 5 else None,
                            drift_actions=["content/delete"] if i % 89 == 7 else None,
                            verified_ok=None if i % 7 else (i % 14 != 0),
                        )
                    )
                tokens = Token.objects.bulk_create(tokens, batch_size=batch)
                slots = []
                for token in tokens:
                    i = int(token.name[3:])
                    first = SlotStatus.EXPIRED if i % 31 == 2 else SlotStatus.REVEALED
                    expires = token.created_at + timedelta(days=30 + i % 200)
                    slots.append(PasswordSlot(token=token, name="password1", status=first, expires_at=expires,
                                              revealed_at=token.created_at, requested_by=token.requester))
                    if i % 4 == 0:
                        slots.append(PasswordSlot(token=token, name="password2", status=SlotStatus.AWAITING_REVEAL,
                                                  expires_at=expires + timedelta(days=5), requested_by=token.owner))
                PasswordSlot.objects.bulk_create(slots, batch_size=batch)
                events = []
                for r in made:
                    for n, action in enumerate(EVENTS):
                        events.append(
                            AuditEvent(
                                created_at=r.created_at + timedelta(seconds=n), actor=r.requester,
                                actor_name=f"user{r.requester_id}", action=action,
                                target_type="accessreq.accessrequest", target_id=str(r.pk), target_repr=str(r),
                                details={"n": n}, prev_hash="0" * 64, hash=secrets.token_hex(32), key_id="bench",
                            )
                        )
                AuditEvent.objects.bulk_create(events, batch_size=batch)
            self.done = high
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        return time.perf_counter() - started


# --- measuring -----------------------------------------------------------------------------------------------------

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("BENCH p50=%f p95=%f requests=%d errors=%d non2xx=%d\\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


# Seconds of load on each page, not measured, before its runs.
WARM_SECONDS = 2.0


def run_wrk(url: str, cookie: str, duration: float, connections: int, script: Path) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "30s", "-s", str(script),
         "-H", f"Cookie: sessionid={cookie}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    found = re.search(r"BENCH p50=([\d.]+) p95=([\d.]+) requests=(\d+) errors=(\d+) non2xx=(\d+)", out)
    assert found, out
    if int(found[4]) or int(found[5]):
        raise SystemExit(f"{url}: {found[4]} errors, {found[5]} non-2xx answers\n{out}")
    return float(found[1]), float(found[2]), int(found[3]) / duration


def run_threads(url: str, cookie: str, duration: float, connections: int) -> tuple[float, float, float]:
    timings: list[float] = []
    stop = time.monotonic() + duration

    def client() -> None:
        opener = urllib.request.build_opener()
        opener.addheaders = [("Cookie", f"sessionid={cookie}")]
        while time.monotonic() < stop:
            started = time.perf_counter()
            with opener.open(url, timeout=30) as answer:
                answer.read()
                assert answer.status == 200, url
            timings.append(1000 * (time.perf_counter() - started))

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timings.sort()
    return statistics.median(timings), timings[int(0.95 * (len(timings) - 1))], len(timings) / duration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", str(workers),
             "--bind", f"127.0.0.1:{self.port}", "--access-logfile", "/dev/null", "--pythonpath", "bench",
             "_pages_app:application"],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # answering, whatever it says of the services behind it
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start: {self.proc.stderr.read().decode()[-3000:]}")
            time.sleep(0.2)

    def worker_rss_mib(self) -> float:
        total = 0
        for child in Path("/proc").glob("[0-9]*"):
            try:
                status = (child / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{self.proc.pid}$", status, re.M):
                total = max(total, int(re.search(r"^VmRSS:\s+(\d+)", status, re.M)[1]))
        return total / 1024

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def pages(seeder: Seeder) -> dict[str, tuple[str, str]]:
    from accessreq.models import Token

    mine = Token.objects.filter(owner=seeder.alice).order_by("pk").first()
    return {
        "approval queue": ("/approvals/", "bob"),
        "my requests": ("/requests/", "alice"),
        "my tokens": ("/tokens/", "alice"),
        "security": ("/security/", "sam"),
        "all tokens (security)": ("/tokens/", "sam"),
        "audit log": ("/audit/", "sam"),
        "api tokens (requester)": ("/api/v1/tokens", "alice"),
        "api tokens (security)": ("/api/v1/tokens", "sam"),
        "token detail": (f"/tokens/{mine.pk}/", "alice"),
        "baseline pk lookup": (f"/bench/pk/{mine.pk}/", "alice"),
    }


def chosen_pages(every: dict[str, tuple[str, str]], wanted: list[str]) -> dict[str, tuple[str, str]]:
    """The pages whose names contain one of the wanted words; every page when none is given."""
    if not wanted:
        return every
    chosen = {name: page for name, page in every.items() if any(word in name.lower() for word in wanted)}
    if not chosen:
        raise SystemExit(f"--pages {','.join(wanted)} names none of: {', '.join(every)}")
    return chosen


def ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def count_queries(url: str, client) -> int:  # noqa: ANN001
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm: sessions, caches
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(url)
    assert answer.status_code == 200, (url, answer.status_code)
    return len(captured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: shorter runs")
    parser.add_argument("--sizes", default=None, help="default 1000,100000 (--quick: 1000,20000)")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="runs per page; the median is kept")
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--pages", default="", help="only the pages whose names contain one of these comma-separated "
                        "words, e.g. queue,baseline (default: every page)")
    args = parser.parse_args()
    wanted = [w.strip().lower() for w in args.pages.split(",") if w.strip()]
    duration = args.duration or (3 if args.quick else 10)
    sizes = [int(s) for s in (args.sizes or ("1000,20000" if args.quick else "1000,100000")).split(",")]

    work = Path(tempfile.mkdtemp(prefix="acr-portal-bench-pages-"))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG) if args.database == "postgres" else ""
    env = throwaway_env(url, work)
    if not url:
        env.pop("DATABASE_URL")
    os.environ.update(env)
    if url:
        recreate_postgres(url)

    import warnings

    import django

    warnings.filterwarnings("ignore", "No directory at")
    django.setup()
    from django.core.management import call_command
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from django.test import Client

    call_command("migrate", verbosity=0)
    sys.path.insert(0, str(ROOT / "bench"))
    import _pages_app  # noqa: F401  (the baseline page, for counting its queries in this process too)
    call_command("collectstatic", verbosity=0, interactive=False)
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    use_wrk = shutil.which("wrk") is not None
    script = work / "report.lua"
    script.write_text(WRK_SCRIPT)
    seeder = Seeder()
    results: dict[int, dict[str, tuple[float, float, float, int]]] = {}
    memory: dict[int, float] = {}
    queue_over_pk: dict[int, float | None] = {}
    for size in sizes:
        took = seeder.grow(size)
        print(f"seeded {size:,} requests in {took:.1f} s", flush=True)
        clients = {}
        cookies = {}
        for who in ("alice", "bob", "sam"):
            clients[who] = Client()
            clients[who].force_login(seeder.User.objects.get(username=who))
            cookies[who] = clients[who].cookies["sessionid"].value
        server = Server(env)
        try:
            found = {}
            chosen = chosen_pages(pages(seeder), wanted)
            for name, (path, who) in chosen.items():
                queries = count_queries(path, clients[who])
                target = f"http://127.0.0.1:{server.port}{path}"
                # Warm, as a server in use is: each web worker's first view of a page fills that worker's caches
                # (the security summary, compiled queries), which would otherwise land in the first run's tail.
                if use_wrk:
                    run_wrk(target, cookies[who], WARM_SECONDS, args.connections, script)
                else:
                    run_threads(target, cookies[who], WARM_SECONDS, args.connections)
                runs = []
                for _ in range(args.runs):
                    if use_wrk:
                        runs.append(run_wrk(target, cookies[who], duration, args.connections, script))
                    else:
                        runs.append(run_threads(target, cookies[who], duration, args.connections))
                p50 = statistics.median(r[0] for r in runs)
                p95 = statistics.median(r[1] for r in runs)
                rps = statistics.median(r[2] for r in runs)
                found[name] = (p50, p95, rps, queries)
                print(f"  {size:>7,} {name:<24} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  {rps:7.1f} req/s  "
                      f"{queries:3d} queries", flush=True)
            memory[size] = server.worker_rss_mib()
        finally:
            server.stop()
        results[size] = found
        both = "approval queue" in found and "baseline pk lookup" in found
        queue_over_pk[size] = found["approval queue"][2] / found["baseline pk lookup"][2] if both else None

    first, last = sizes[0], sizes[-1]
    print()
    print(f"{args.database}, gunicorn 2 workers, {'wrk' if use_wrk else 'python client'} "
          f"{duration:g} s x {args.connections} connections x {args.runs} run(s), median")
    print(f"{'page':<24}{'p50 ' + str(first):>10}{'p95 ' + str(first):>10}{'p50 ' + str(last):>12}"
          f"{'p95 ' + str(last):>12}{'x p95':>7}{'req/s':>14}{'queries':>10}")
    worst = 0.0
    for name in results[first]:
        a, b = results[first][name], results[last][name]
        ratio = b[1] / a[1]
        worst = max(worst, ratio)
        print(f"{name:<24}{a[0]:>10.1f}{a[1]:>10.1f}{b[0]:>12.1f}{b[1]:>12.1f}{ratio:>7.2f}"
              f"{f'{a[2]:.0f}/{b[2]:.0f}':>14}{f'{a[3]}/{b[3]}':>10}")
    for size in sizes:
        print(f"at {size:,}: queue/pk req/s {ratio_text(queue_over_pk[size])}, "
              f"largest web worker {memory[size]:.0f} MiB RSS")
    shutil.rmtree(work, ignore_errors=True)
    print(f"pages: worst p95 {last // 1000}k/{first // 1000}k = {worst:.2f}, "
          f"queue/pk rps = {ratio_text(queue_over_pk[last])}")


if __name__ == "__main__":
    main()
