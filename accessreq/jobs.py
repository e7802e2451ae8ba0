"""The periodic jobs, by the one name each has in beat, in `manage.py maintenance` and in the worker's log.

Every job is idempotent: running one more often than scheduled, or twice at once, does no harm. Its return value is a
count of what it did, printed by the command.
"""

from __future__ import annotations

from collections.abc import Callable

from accessreq import audit, delivery, enqueue, provisioning, reconcile, reminders, reviews, slots, tokens, usage


def sweep_stuck() -> int:
    """Work whose message was lost: requests still provisioning and passwords still being generated."""
    return provisioning.sweep_stuck() + slots.sweep_stuck()


def sweep_claims() -> int:
    """Work whose worker died (its claim's heartbeat stopped) or whose message is overdue: sent again in seconds."""
    return provisioning.sweep_claims() + slots.sweep_claims()


def anchor_audit() -> int:
    """Record the audit log's head outside the table, so truncating or rewriting its newest rows shows."""
    return audit.anchor().event_count


JOBS: dict[str, Callable[[], int]] = {
    "sweep-stuck": sweep_stuck,
    "expire-unrevealed": slots.expire_unrevealed,
    "finish-rotations": tokens.finish_rotations,
    "mark-expired": slots.mark_expired,
    "retire-due": tokens.retire_due,
    "delete-retired": tokens.delete_retired,
    "flag-orphans": tokens.flag_orphans,
    "send-reminders": reminders.send_reminders,
    "reconcile": reconcile.reconcile_all,
    "anchor-audit": anchor_audit,
    "rotate-delivered": delivery.rotate_due,
    "collect-usage": usage.collect_all,
    "remind-reviews": reviews.remind_reviews,
    "close-reviews": reviews.close_reviews,
    "relay-outbox": enqueue.relay,
    "sweep-claims": sweep_claims,
}


def run(name: str) -> int:
    return JOBS[name]()
