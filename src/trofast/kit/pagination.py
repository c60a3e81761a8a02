"""Opaque cursors for keyset pagination."""

from __future__ import annotations

import base64
import json

from trofast.kit.errors import Problem
from trofast.kit.orm import MAX_ID


def encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int:
    """The id to continue after; 0 for the first page; 400 for a cursor we did not make."""
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise Problem(400, "invalid_cursor", "The cursor is not one this API returned.") from None
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_ID:
        raise Problem(400, "invalid_cursor", "The cursor is not one this API returned.")
    return after
