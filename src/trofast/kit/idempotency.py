"""Idempotency-Key for every POST (DESIGN rule 4).

The first answer for a key is stored with the hash of its request; the same key with
the same request replays that answer, with a different request it is a 409. Enforced by
a unique constraint: two racing requests with one key cannot both be recorded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Connection, Integer, String, Table, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError

from trofast.kit.errors import conflict
from trofast.kit.orm import UtcDateTime, id_column, metadata, program_column

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    id_column(),
    program_column(),
    Column("key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "key"),
)


#: `request_hash`'s JSON, built once: `json.dumps` with options builds an encoder per call
#: (a third of the time of hashing a purchase, which a batch does 1,000 times).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def request_hash(*parts: Any) -> str:
    """A stable hash of a request: JSON with sorted keys, so field order never matters."""
    blob = _CANONICAL.encode(parts)
    return hashlib.sha256(blob.encode()).hexdigest()


def replay(conn: Connection, program_id: int, key: str, digest: str) -> tuple[int, Any] | None:
    """The stored (status, response) for `key`, None if new; 409 if the request differs."""
    row = conn.execute(
        select(
            idempotency_keys.c.request_hash, idempotency_keys.c.status, idempotency_keys.c.response
        ).where(idempotency_keys.c.program_id == program_id, idempotency_keys.c.key == key)
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise conflict(
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used for a different request.",
        )
    return int(row.status), row.response


def remember(
    conn: Connection,
    program_id: int,
    key: str,
    digest: str,
    status: int,
    response: Any,
    now: datetime,
) -> None:
    """Record the answer for `key` in the caller's transaction."""
    try:
        with conn.begin_nested():
            conn.execute(
                idempotency_keys.insert().values(
                    program_id=program_id,
                    key=key,
                    request_hash=digest,
                    status=status,
                    response=response,
                    created_at=now,
                )
            )
    except IntegrityError:
        raise conflict(
            "idempotency_key_in_flight", f"Idempotency-Key {key!r} is being used concurrently."
        ) from None
