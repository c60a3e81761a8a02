"""API keys: create (secret shown once), authenticate, revoke."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import Connection, select, update

from trofast.access.models import api_keys
from trofast.kit.auth import Principal, Scope, new_secret, secret_matches, split_token
from trofast.kit.errors import Problem

_CACHE_SECONDS = 5.0
_cache: dict[tuple[str, str], tuple[float, Principal]] = {}


def create_key(
    conn: Connection,
    program_id: int,
    scope: Scope,
    name: str,
    now: datetime,
    *,
    partner: str | None = None,
) -> tuple[str, int]:
    """Create a key; returns (token, key id). The token is never stored or shown again.
    A `partner` key is bound to one partner id; no other scope takes one."""
    if (scope is Scope.partner) != (partner is not None):
        raise Problem(
            422, "partner_scope", "A partner key needs --partner; other scopes take none."
        )
    token, prefix, digest = new_secret()
    key_id = conn.execute(
        api_keys.insert()
        .values(
            program_id=program_id,
            prefix=prefix,
            secret_hash=digest,
            scope=scope.value,
            name=name,
            partner=partner,
            created_at=now,
        )
        .returning(api_keys.c.id)
    ).scalar_one()
    return token, int(key_id)


def revoke_key(conn: Connection, program_id: int, key_id: int, now: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.program_id == program_id)
        .values(revoked_at=now)
    )
    _cache.clear()
    return result.rowcount == 1


def cached_principal(database_url: str, token: str) -> Principal | None:
    """A principal verified in the last 5 seconds, so most requests need no key lookup."""
    hit = _cache.get((database_url, token))
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


def authenticate(conn: Connection, token: str) -> Principal:
    """The principal behind a bearer token, or 401. Verified keys are cached for 5 s."""
    cache_key = (str(conn.engine.url), token)
    parts = split_token(token)
    if parts is None:
        raise _unauthorized()
    prefix, secret = parts
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
    if row is None or row.revoked_at is not None or not secret_matches(secret, row.secret_hash):
        raise _unauthorized()
    principal = Principal(int(row.id), int(row.program_id), Scope(row.scope), row.partner)
    _cache[cache_key] = (time.monotonic() + _CACHE_SECONDS, principal)
    return principal


def _unauthorized() -> Problem:
    return Problem(401, "unauthorized", "A valid API key is required (Authorization: Bearer ...).")
