"""Provisioning against ARM's write budget: how close approvals come to the fastest the budget allows, and how much
an approval adds to the raw ARM calls it needs.

    .venv/bin/python bench/provision.py [--quick] [--approvals N] [--budget RATE/BURST] [--redis-db N]

Starts the ACR emulator as a child process with a write budget (default 10/200, ARM's own: 10 writes a second per
principal, bursts of 200), then, for each broker, a throwaway portal (SQLite and the filesystem broker under a
temporary folder; then Redis at 127.0.0.1:6379, database `--redis-db` (default 14, emptied first), when it answers)
run in a child process of its own, with real `celery worker` processes (prefork, three children each). The portal's
write limit matches the emulated budget (ARM_WRITES_PER_SECOND and ARM_WRITE_BURST), as it would for an identity
the portal alone writes with; its bucket lives in the database with the filesystem broker, in Redis with Redis.

Measures, for each broker:
- approval to ready, p50/p95 over 30 single approvals with idle workers, beside the same three ARM calls made raw
  with the SDK (scope map PUT, token PUT and its polls, generateCredentials) against the same emulator, on a client
  configured as the portal's; each approval is followed by one raw run, so both see the machine alike;
- worker pickup: from the approval's commit to the request claimed by a worker;
  both read afterwards from the worker's own records (the times of its "request.provisioning" and "request.ready"
  audit events, each written in the transaction that claims or readies the request), so the bench does not poll
  the database while the worker runs: on a 2-core machine a tight polling loop takes CPU from the worker and the
  emulator and slows what it watches;
- N approvals (1,000; `--quick`: 200) made at once, with 1 and with 2 workers: each request is submitted and given
  its first approval beforehand (untimed; two owner groups must approve it), then every last approval is given by
  `flow.approve` inside one transaction, so the outbox sends all N at its commit. From that commit: seconds until
  all are ready, and the budget's least, max(0, 3N - burst) / rate seconds (three writes a request), as a fraction
  of them (100% when 3N fits in the burst).

"Ready" is the request's READY state: token and first password made and sealed. No data plane is configured for
the bench registry, so the password's check at the registry (ACR_VERIFY_PASSWORDS) is off and not included.
Long-running operations answer with a 0.1 s Retry-After and one in-progress poll.

The last line is `provision: budget used P%, ready/raw = R3, failed = N`: P for 2 workers on the last broker run,
R3 = the p50 over single approvals of approval-to-ready / (its pickup + the raw calls made after it), the higher
of the brokers', failed = requests failed or not ready within the wait (300 s, or four times the budget's least),
over every run. Workers and the bench run with DEBUG off and throwaway keys, as a deployment's workers would.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SINGLES = 30
# Children per worker: most of an approval's time is waiting on ARM (its polls), so one child per worker would leave
# the budget unused on any machine; three keep a 2-core machine busy without crowding it.
CONCURRENCY = 3
RESULT = "RESULT "


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _redis_up(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - no Redis is an answer here
        return False


def _admin(emulator: str, path: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(f"{emulator}{path}", data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Worker:
    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env, self.log, self.name = env, log, name
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "prefork", "--concurrency",
             str(CONCURRENCY),
             "-n", f"{self.name}@bench", "-l", "warning", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while not _children(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def run_portal(broker: str, emulator: str, budget: str, approvals: int, redis_url: str) -> dict:
    """One broker's measurements, in this (child) process: Django is set up once per process."""
    rate_text, _, burst_text = budget.partition("/")
    rate, burst = float(rate_text), int(burst_text or rate_text)
    work = Path(tempfile.mkdtemp(prefix=f"acr-portal-provision-{broker}-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_VAR_DIR": str(work),
        # As a deployment runs its workers: with DEBUG on, Django keeps every query's SQL, which costs CPU.
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "PASSWORD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AUDIT_KEYS": secrets.token_urlsafe(40),
        "LOG_LEVEL": "WARNING",
        "ACR_CREDENTIAL": "emulator",
        "ACR_ARM_ENDPOINT": emulator,
        "ACR_VERIFY_PASSWORDS": "0",
        "ARM_WRITES_PER_SECOND": rate_text,
        "ARM_WRITE_BURST": str(burst),
        "PROVISIONING_RETRY_SECONDS": "1",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    if broker == "redis":
        env["REDIS_URL"] = redis_url
    os.environ.clear()
    os.environ.update(env)
    import logging

    import django

    django.setup()
    logging.getLogger("acr_emulator").setLevel(logging.WARNING)
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from accessreq import acr, armbudget, flow
    from accessreq.models import AccessRequest, ApprovalRule, ArmWriteBudget, AuditEvent, Registry, RequestStatus
    from accessreq.scopes import Rule
    from acr_emulator.testing import make_client

    call_command("migrate", verbosity=0)
    if broker == "redis":
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    owners, admins = Group.objects.create(name="owners"), Group.objects.create(name="admins")
    web_owners = Group.objects.create(name="web-owners")
    alice = User.objects.create_user("alice", "alice@example.com", "x")
    bob = User.objects.create_user("bob", "bob@example.com", "x")
    carol = User.objects.create_user("carol", "carol@example.com", "x")
    bob.groups.add(owners)
    carol.groups.add(web_owners)
    name = f"bench{broker}"
    registry = Registry(
        subscription_id="0" * 8, resource_group="rg", name=name, admin_group=admins, sku="Premium"
    )
    registry.login_server = acr.ensure_registry(registry, "westeurope", "Premium")
    registry.save()
    # Two owners: each request needs carol's approval (given beforehand, untimed) and then bob's, the last one.
    ApprovalRule.objects.create(registry=registry, pattern="*", group=owners)
    ApprovalRule.objects.create(registry=registry, pattern="myapp/web", group=web_owners)

    def refill() -> None:
        """Both buckets full again: the emulator's (a budget set anew starts full) and the portal's."""
        _admin(emulator, "/_emulator/config", {"write_budget": budget})
        ArmWriteBudget.objects.all().delete()
        if broker == "redis":
            import redis

            redis.Redis.from_url(redis_url).delete(armbudget.KEY_PREFIX + registry.subscription_id)

    def submitted(n: int) -> list[AccessRequest]:
        """N requests, each with every approval but the last one given: only bob's is left."""
        made = []
        for _ in range(n):
            req = flow.submit(
                alice, registry=registry,
                rules=[Rule("myapp/api", ("content/read",)), Rule("myapp/web", ("content/read",))],
                purpose="Provisioning benchmark request.", client_kind="ci", owner="alice", team="Bench",
                password_days=30, retire_on=timezone.localdate() + timedelta(days=30),
            )
            if flow.approve(req, carol, "", None):
                raise RuntimeError("carol's approval was the last one needed: the bench needs two")
            made.append(req)
        return made

    def last_approval(req: AccessRequest) -> None:
        if not flow.approve(req, bob, "", None):
            raise RuntimeError(f"request {req.pk} still waits for an approval")

    workers = [Worker(env, work / f"worker{i}.log", f"w{i}") for i in range(2)]
    out: dict = {"broker": broker}
    try:
        workers[0].start()
        workers[0].ready()
        time.sleep(2)  # connected and consuming

        # The same three ARM calls, raw, with one reused client configured as the portal's worker's is.
        client = make_client(
            emulator, subscription_id=registry.subscription_id, polling_interval=settings.ACR_POLLING_INTERVAL,
            retry_total=0, **acr._connection_settings(),
        )
        registry_id = (
            f"/subscriptions/{registry.subscription_id}/resourceGroups/rg/providers/"
            f"Microsoft.ContainerRegistry/registries/{name}"
        )

        def raw_calls(i: int) -> float:
            started = time.monotonic()
            client.scope_maps.begin_create(
                "rg", name, f"raw-{i}", {"properties": {"actions": ["repositories/a/content/read"]}}
            ).result()
            client.tokens.begin_create(
                "rg", name, f"raw-{i}", {"properties": {"scopeMapId": f"{registry_id}/scopeMaps/raw-{i}"}}
            ).result()
            client.registries.begin_generate_credentials(
                "rg", name, {"tokenId": f"{registry_id}/tokens/raw-{i}", "name": "password1"}
            ).result()
            return time.monotonic() - started

        # Single approvals, one at a time, each followed by the raw calls, so that both are measured over the same
        # stretch of the machine's time: pickup and approval-to-ready, read afterwards from the times the worker
        # recorded (its audit events), so that watching a request does not take the cores it runs on.
        refill()
        pickups, readies, raws = [], [], []
        for i, req in enumerate(submitted(SINGLES + 2)):
            last_approval(req)
            approved_at = time.time()
            while not AccessRequest.objects.filter(
                pk=req.pk, status__in=(RequestStatus.READY, RequestStatus.FAILED)
            ).exists():
                if time.time() - approved_at > 60:
                    raise RuntimeError(f"request {req.pk} not ready after 60 s")
                time.sleep(0.05)
            stamps = dict(
                AuditEvent.objects.filter(
                    target_type="accessreq.accessrequest", target_id=str(req.pk),
                    action__in=("request.provisioning", "request.ready"),
                ).values_list("action", "created_at")
            )
            if "request.ready" not in stamps:
                raise RuntimeError(f"request {req.pk} failed: {AccessRequest.objects.get(pk=req.pk).failure_reason}")
            pickups.append(stamps["request.provisioning"].timestamp() - approved_at)
            readies.append(stamps["request.ready"].timestamp() - approved_at)
            raws.append(raw_calls(i))
        # The first two warm up the worker (imports, first connections) and the raw client.
        pickups, readies, raws = pickups[2:], readies[2:], raws[2:]
        # Each approval against its own pickup and the raw run that followed it: the filesystem broker's pickup
        # comes in two humps (a message found at once, or at the next look at the folder), so the p50s of pickup
        # and of approval-to-ready are often different approvals' and their quotient is not any approval's.
        ratios = [ready / (raw + pickup) for ready, raw, pickup in zip(readies, raws, pickups, strict=True)]
        extra = [ready - pickup - raw for ready, raw, pickup in zip(readies, raws, pickups, strict=True)]
        out.update(
            pickup_p50=_pct(pickups, 0.5), pickup_p95=_pct(pickups, 0.95),
            ready_p50=_pct(readies, 0.5), ready_p95=_pct(readies, 0.95),
            raw_p50=_pct(raws, 0.5), raw_p95=_pct(raws, 0.95),
            ratio_p50=_pct(ratios, 0.5), ratio_p95=_pct(ratios, 0.95), extra_p50=_pct(extra, 0.5),
        )

        # N approvals at once, with 1 and then 2 workers.
        minimum = max(0.0, (3 * approvals - burst) / rate)
        batches = []
        for count in (1, 2):
            if count == 2:
                workers[1].start()
                workers[1].ready()
                time.sleep(2)
            requests = submitted(approvals)
            refill()
            before = _admin(emulator, "/_emulator/stats")
            # Every last approval in one transaction, each given by the domain's own function: each queues its
            # request through the outbox, and all of them leave at the commit, where the clock starts.
            committed: list[float] = []
            approving = time.monotonic()
            with transaction.atomic():
                # Registered first, so it runs before the outbox sends a single message.
                transaction.on_commit(lambda stamps=committed: stamps.append(time.monotonic()))
                for req in requests:
                    last_approval(req)
            started = committed[0]
            approved_in, sent_in = started - approving, time.monotonic() - started
            pks = [r.pk for r in requests]
            pending = AccessRequest.objects.filter(pk__in=pks).exclude(
                status__in=(RequestStatus.READY, RequestStatus.FAILED)
            )
            deadline = started + max(300.0, 4 * minimum)
            while pending.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            seconds = time.monotonic() - started
            after = _admin(emulator, "/_emulator/stats")
            ready = AccessRequest.objects.filter(pk__in=pks, status=RequestStatus.READY).count()
            failed = AccessRequest.objects.filter(pk__in=pks, status=RequestStatus.FAILED).count()
            budget_after, budget_before = after["write_budget"], before["write_budget"]
            batches.append(
                {
                    "workers": count,
                    "seconds": seconds,
                    "approved_in": approved_in,
                    "sent_in": sent_in,
                    "minimum": minimum,
                    "used": minimum / seconds if minimum else 1.0,
                    "ready": ready,
                    "failed": failed,
                    "late": len(pks) - ready - failed,
                    "writes": budget_after["allowed"],
                    "throttled": budget_after["throttled"],
                    "writes_before": budget_before["allowed"],
                }
            )
        out["batches"] = batches
    finally:
        for worker in workers:
            worker.stop()
    return out


def _print(result: dict, approvals: int) -> None:
    b = result["broker"]
    print(
        f"{b:<10} pickup p50 {result['pickup_p50'] * 1000:6.0f} ms  p95 {result['pickup_p95'] * 1000:6.0f} ms   "
        f"approval->ready p50 {result['ready_p50'] * 1000:5.0f} ms  p95 {result['ready_p95'] * 1000:5.0f} ms   "
        f"raw calls p50 {result['raw_p50'] * 1000:5.0f} ms  p95 {result['raw_p95'] * 1000:5.0f} ms   "
        f"ready/(raw+pickup) p50 {result['ratio_p50']:.2f} p95 {result['ratio_p95']:.2f} "
        f"(ratio of the p50s {result['ready_p50'] / (result['raw_p50'] + result['pickup_p50']):.2f}; "
        f"the portal's own p50 {result['extra_p50'] * 1000:.0f} ms)"
    )
    for batch in result["batches"]:
        print(
            f"{'':<10} {approvals} approvals, {batch['workers']} worker(s): {batch['seconds']:6.1f} s "
            f"from the commit (approvals {batch['approved_in']:.1f} s before it, all sent {batch['sent_in']:.1f} s "
            f"after; budget's least {batch['minimum']:.1f} s) = "
            f"{batch['used'] * 100:5.1f}% of the budget; {batch['ready']} ready, {batch['failed']} failed, "
            f"{batch['late']} still under way; "
            f"ARM writes {batch['writes']}, 429s {batch['throttled']}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Approvals against an emulated ARM write budget.")
    parser.add_argument("--quick", action="store_true", help="200 approvals instead of 1,000")
    parser.add_argument("--approvals", type=int, help="approvals per batch (default 1000, --quick 200)")
    parser.add_argument("--budget", default="10/200", help="the emulated write budget, RATE/BURST (default 10/200)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database number to use (default 14)")
    parser.add_argument("--run", choices=["filesystem", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    approvals = args.approvals or (200 if args.quick else 1000)
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    if args.run:
        result = run_portal(args.run, args.emulator, args.budget, approvals, redis_url)
        print(RESULT + json.dumps(result), flush=True)
        return

    emulator = subprocess.Popen(
        [sys.executable, "-m", "acr_emulator", "--port", "0", "--write-budget", args.budget, "--lro-polls", "1",
         "--lro-retry-after", "0.1", "--page-size", "100", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().strip().rsplit(" ", 1)[-1]
        print(f"emulator {url}, write budget {args.budget}; {approvals} approvals per batch; "
              f"{os.cpu_count()} cores (shared)", flush=True)
        brokers = ["filesystem"] + (["redis"] if _redis_up(redis_url) else [])
        if "redis" not in brokers:
            print("(no Redis at 127.0.0.1:6379: the filesystem broker only)")
        results = []
        for broker in brokers:
            child = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--run", broker, "--emulator", url,
                 "--budget", args.budget, "--approvals", str(approvals), "--redis-db", str(args.redis_db)],
                cwd=ROOT, capture_output=True, text=True,
            )
            line = next((ln for ln in child.stdout.splitlines() if ln.startswith(RESULT)), None)
            if line is None:
                print(child.stdout[-3000:], child.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the {broker} run failed")
            results.append(json.loads(line[len(RESULT):]))
            _print(results[-1], approvals)
        last = results[-1]
        used = last["batches"][-1]["used"]
        ratio = max(r["ratio_p50"] for r in results)
        failed = sum(b["failed"] + b["late"] for r in results for b in r["batches"])
        print(f"provision: budget used {used * 100:.0f}%, ready/raw = {ratio:.2f}, failed = {failed}")
    finally:
        emulator.terminate()
        emulator.wait(10)


if __name__ == "__main__":
    main()
