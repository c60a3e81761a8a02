"""Raise events into the outbox (DESIGN rule 9) and read them back.

`raise_event` is the one way for domain code (households, transfers, rewards, tiers, the
worker) to announce that something happened. It writes a row in the caller's transaction,
so the event exists exactly when the change that caused it was committed, and a rolled
back change never announces anything.

Delivery (signed webhooks with retries and back-off, e-mail) is a later issue: until it
exists, nothing marks events delivered and integrators poll `GET /v1/events`. The columns
`available_at`, `attempts`, `delivered_at` and `last_error` are there for that deliverer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from trofast.kit import pagination
from trofast.notify import repository
from trofast.notify.schemas import EventOut, EventPage

#: Topics raised today (a topic is free text of up to 60 characters; these are documented
#: in docs/households-and-transfers.md and stay stable once published).
TOPICS = (
    "household.joined",
    "household.left",
    "points.transferred",
    "points.expiring",
    "reward.redeemed",
    "voucher.used",
    "voucher.cancelled",
    "voucher.restored",
    "gift_codes.low",
    "membership.started",
    "membership.renewed",
    "membership.payment_failed",
    "membership.cancelled",
    "membership.lapsed",
    "tier.changed",
    "member.erased",
)


def raise_event(
    conn: Connection,
    program_id: int,
    topic: str,
    key: str,
    payload: dict[str, Any],
    now: datetime,
) -> bool:
    """Record event `topic` with a JSON `payload` in the caller's transaction.

    `key` (up to 200 characters, unique per program) names the occurrence: raising the
    same key again is a no-op, so jobs and retried requests may raise freely. Choose keys
    that say what happened to what, e.g. `transferred:{ledger transaction id}` or
    `expiring:{member}:{date}:{days}`. Returns True if the event is new.

    The payload must be JSON-serialisable (ids, integers, ISO strings); keep it small and
    self-contained, as a webhook body will carry it unchanged.
    """
    if not topic or len(topic) > 60:
        raise ValueError(f"an outbox topic must be 1-60 characters: {topic!r}")
    if not key or len(key) > 200:
        raise ValueError(f"an outbox key must be 1-200 characters: {key!r}")
    return repository.insert_event(conn, program_id, topic, key, payload, now)


def raise_events(
    conn: Connection,
    program_id: int,
    topic: str,
    events: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> None:
    """`raise_event` for many (key, payload) pairs of one topic at once, for jobs that
    raise thousands per transaction (the tier review); existing keys are skipped."""
    if not topic or len(topic) > 60:
        raise ValueError(f"an outbox topic must be 1-60 characters: {topic!r}")
    for key, _ in events:
        if not key or len(key) > 200:
            raise ValueError(f"an outbox key must be 1-200 characters: {key!r}")
    repository.insert_events(conn, program_id, topic, events, now)


def list_page(
    conn: Connection, program_id: int, topic: str | None, cursor: str | None, limit: int
) -> EventPage:
    """A page of the program's events, newest first (optionally of one topic)."""
    before = pagination.decode(cursor)
    rows = repository.page(conn, program_id, topic, before, limit + 1)
    items = [
        EventOut(
            id=r.id,
            topic=r.topic,
            key=r.key,
            payload=r.payload,
            created_at=r.created_at,
            delivered_at=r.delivered_at,
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return EventPage(items=items, next_cursor=pagination.encode(items[-1].id) if more else None)
