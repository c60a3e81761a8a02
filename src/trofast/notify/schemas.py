"""API models for the outbox and expiry warnings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class EventOut(BaseModel):
    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    created_at: datetime
    #: Set by webhook delivery once it exists; null until then.
    delivered_at: datetime | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class ExpiringMember(BaseModel):
    member_id: int
    loyalty_number: str
    points_expiring: int
    earliest_expires_at: datetime


class ExpiringPage(BaseModel):
    within_days: int
    items: list[ExpiringMember]
    next_cursor: str | None
